// The twin-server dashboard: plain JavaScript, no build step, no CDN.
// Sessions and HIL health are polled over the REST API (/api/...); the chosen
// session's values come over its WebSocket (/api/sessions/<s>/live) at the
// session's publish rate; edits go through the same REST calls a script makes.

const TREND_SECONDS = 120;
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

const ui = {
  token: sessionStorage.getItem("twin-server-token"),
  selected: null,      // the chosen session's name
  socket: null,
  layout: [],          // its variables, in frame order
  values: [],
  cells: [],           // per variable: {row, value}
  trends: new Map(),   // variable index -> [[t, value], ...]
  faults: [],          // the chosen session's active faults
  faultCounter: null,  // its frames' fault counter when they were fetched
  simTime: 0,
  drawPending: false,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// -- the REST API -------------------------------------------------------------------

class Refusal extends Error {
  constructor(http, status, message) { super(message); this.http = http; this.status = status; }
}

async function api(method, path, body, headers = {}) {
  const sent = { ...headers };
  if (ui.token && !sent.Authorization) sent.Authorization = `Bearer ${ui.token}`;
  const init = { method, headers: sent };
  if (body !== undefined) {
    sent["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new Refusal(response.status, data?.status ?? `HTTP ${response.status}`,
                      data?.message ?? response.statusText);
  }
  return data;
}

function say(text, error = false) {
  const box = $("#message");
  box.textContent = text;
  box.className = error ? "error" : "";
}

async function attempt(what, action) {
  try {
    const result = await action();
    say(`${what}: done`);
    return result;
  } catch (err) {
    say(`${what}: ${err.status ?? "error"}: ${err.message}`, true);
    return undefined;
  }
}

function fmt(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const abs = Math.abs(value);
    return abs !== 0 && (abs < 1e-3 || abs >= 1e6) ? value.toExponential(4) : value.toFixed(4);
  }
  return String(value);
}

// -- who ----------------------------------------------------------------------------

async function whoAmI() {
  try {
    const me = await api("GET", "/api/me");
    $("#who").textContent = me.anonymous ? `anonymous (${me.role})` : `${me.name} (${me.role})`;
    $("#logout").hidden = me.anonymous;
    $("#login").hidden = !me.anonymous;
  } catch (err) {
    $("#who").textContent = "not logged in";
    $("#login").hidden = false;
    if (ui.token) { ui.token = null; sessionStorage.removeItem("twin-server-token"); }
  }
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const basic = btoa(unescape(encodeURIComponent(`${form.user.value}:${form.password.value}`)));
  const found = await attempt("log in", () =>
    api("POST", "/api/login", undefined, { Authorization: `Basic ${basic}` }));
  form.password.value = "";
  if (found) {
    ui.token = found.token;
    sessionStorage.setItem("twin-server-token", found.token);
    await whoAmI();
    if (ui.selected) select(ui.selected);
  }
});

$("#logout").addEventListener("click", async () => {
  await attempt("log out", () => api("POST", "/api/logout"));
  ui.token = null;
  sessionStorage.removeItem("twin-server-token");
  await whoAmI();
});

// -- sessions -----------------------------------------------------------------------

const CONTROLS = [
  ["Start", "start"], ["Suspend", "suspend"], ["Resume", "resume"],
  ["Halt", "halt"], ["Reset", "reset"], ["Step", "step"],
];

function sessionRow(session) {
  const row = el("tr", { "data-session": session.name, onclick: () => select(session.name) });
  const buttons = CONTROLS.map(([label, command]) => el("button", {
    "data-command": command,
    onclick: async (event) => {
      event.stopPropagation();
      const body = command === "step" ? { count: 1 } : undefined;
      await attempt(`${label} ${session.name}`,
        () => api("POST", `/api/sessions/${encodeURIComponent(session.name)}/${command}`, body));
      refreshSessions();
    },
  }, label));
  row.append(el("td", {}, session.name), el("td", {}, session.twin),
             el("td", { class: "state" }), el("td", { class: "num sim" }),
             el("td", { class: "num ticks" }), el("td", { class: "num factor" }),
             el("td", {}, ...buttons));
  return row;
}

function showSession(row, session) {
  const state = row.querySelector(".state");
  state.textContent = session.state + (session.fault ? " (fault)" : "");
  state.className = `state state-${session.state}`;
  state.title = session.fault ?? "";
  row.querySelector(".sim").textContent = fmt(session.sim_time);
  row.querySelector(".ticks").textContent = fmt(session.step_count);
  row.querySelector(".factor").textContent = fmt(session.realtime_factor);
  row.classList.toggle("selected", session.name === ui.selected);
}

async function refreshSessions() {
  let sessions;
  try {
    sessions = await api("GET", "/api/sessions");
  } catch (err) {
    say(`sessions: ${err.status}: ${err.message}`, true);
    return;
  }
  const body = $("#sessions tbody");
  const rows = new Map([...body.rows].map((r) => [r.dataset.session, r]));
  for (const session of sessions) {
    let row = rows.get(session.name);
    if (!row) { row = sessionRow(session); body.append(row); }
    rows.delete(session.name);
    showSession(row, session);
  }
  for (const row of rows.values()) row.remove();
}

async function refreshHil() {
  let peers;
  try { peers = await api("GET", "/api/hil"); } catch { return; }
  const body = $("#hil tbody");
  body.replaceChildren(...peers.map((p) => el("tr", {},
    el("td", {}, p.name), el("td", {}, p.session),
    el("td", { class: p.state === "connected" ? "" : "bad" }, p.state),
    el("td", { class: "num" }, `${fmt(p.round_trip_latency)} ms`),
    el("td", { class: "num" }, String(p.bindings.length)),
    el("td", {}, p.last_error || ""))));
  if (!peers.length) body.append(el("tr", {}, el("td", { colspan: 6 }, "no HIL peers")));
}

// -- alarms -------------------------------------------------------------------------

function alarmState(a) {
  if (!a.enabled) return "disabled";
  const active = a.active ? `active${a.limit ? ` (${a.limit})` : ""}` : "inactive";
  const shelved = a.shelving === "Unshelved" ? "" : (a.shelving === "OneShotShelved"
    ? ", shelved until inactive" : `, shelved (${Math.ceil(a.unshelve_time / 60)} min left)`);
  return `${active}, ${a.acked ? "acknowledged" : "unacknowledged"}` +
    (a.acked && !a.confirmed ? ", unconfirmed" : "") + shelved;
}

async function alarmCall(alarm, action, body = { event_id: alarm.event_id }) {
  const path = `/api/sessions/${encodeURIComponent(alarm.session)}/alarms/` +
    `${encodeURIComponent(alarm.name)}/${action}`;
  await attempt(`${action} ${alarm.session}.${alarm.name}`, () => api("POST", path, body));
  refreshAlarms();
}

async function refreshAlarms() {
  let alarms;
  try { alarms = await api("GET", "/api/alarms"); } catch { return; }
  const body = $("#alarms tbody");
  body.replaceChildren(...alarms.map((a) => {
    const buttons = [];
    if (a.enabled && !a.acked) {
      buttons.push(el("button", { "data-action": "acknowledge",
                                  onclick: () => alarmCall(a, "acknowledge") }, "Acknowledge"));
    }
    if (a.enabled && a.acked && !a.confirmed) {
      buttons.push(el("button", { "data-action": "confirm",
                                  onclick: () => alarmCall(a, "confirm") }, "Confirm"));
    }
    if (a.enabled && a.shelving === "Unshelved") {  // silence it for an hour (at most)
      const seconds = Math.min(3600, a.max_time_shelved);
      buttons.push(el("button", { "data-action": "timed-shelve", onclick: () => alarmCall(
        a, "timed-shelve", { shelving_time: seconds }) }, `Shelve ${Math.round(seconds / 60)} min`));
    } else if (a.enabled) {
      buttons.push(el("button", { "data-action": "unshelve",
                                  onclick: () => alarmCall(a, "unshelve", {}) }, "Unshelve"));
    }
    return el("tr", { "data-alarm": `${a.session}/${a.name}`,
                      class: a.active ? "alarm-active" : (a.retain ? "alarm-retained" : "") },
      el("td", {}, a.session), el("td", {}, a.name),
      el("td", { class: "alarm-state" }, alarmState(a)),
      el("td", { class: "num" }, String(a.severity)), el("td", {}, a.message),
      el("td", {}, a.comment ? `${a.comment} (${a.user})` : ""), el("td", {}, ...buttons));
  }));
  if (!alarms.length) body.append(el("tr", {}, el("td", { colspan: 7 }, "no alarms")));
}

// -- scenario runs ------------------------------------------------------------------

async function showReport(run, kind) {
  const box = $("#scenario-report");
  try {
    const response = await fetch(`/api/scenarios/${run.id}/${kind}`, {
      headers: ui.token ? { Authorization: `Bearer ${ui.token}` } : {} });
    box.textContent = await response.text();
    box.hidden = false;
    $("#scenario-html").hidden = true;
  } catch (err) { say(`report: ${err.message}`, true); }
}

// the report with its plots: fetched with the token, shown in a sandboxed frame
async function showPlots(run) {
  try {
    const response = await fetch(`/api/scenarios/${encodeURIComponent(run.id)}/report.html`, {
      headers: ui.token ? { Authorization: `Bearer ${ui.token}` } : {} });
    const frame = $("#scenario-html");
    frame.srcdoc = await response.text();
    frame.hidden = false;
    $("#scenario-report").hidden = true;
  } catch (err) { say(`report: ${err.message}`, true); }
}

async function refreshScenarios() {
  let runs;
  try { runs = await api("GET", "/api/scenarios"); } catch { return; }
  const body = $("#scenarios tbody");
  body.replaceChildren(...runs.map((run) => el("tr", { "data-run": run.id },
    el("td", { title: `${run.id} on ${run.runs_on}` }, `${run.name} (${run.file})`),
    el("td", { class: `verdict verdict-${run.state}` }, run.state),
    el("td", {}, run.summary ?? `${fmt(run.progress)} %: ${run.current_step}`),
    el("td", {}, ...(run.state === "running" ? [
      el("button", { "data-halt": run.id, onclick: async () => {
        await attempt(`halt ${run.id}`,
                      () => api("POST", `/api/scenarios/${encodeURIComponent(run.id)}/halt`));
        refreshScenarios();
      } }, "Halt")] : [
      el("button", { "data-report": "html", onclick: () => showPlots(run) }, "Report"),
      el("button", { "data-report": "report", onclick: () => showReport(run, "report") },
         "Markdown"),
      el("button", { onclick: () => showReport(run, "junit") }, "JUnit XML")])))));
  if (!runs.length) body.append(el("tr", {}, el("td", { colspan: 4 }, "no runs yet")));
}

$("#scenario-form").file.addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) $("#scenario-form").scenario.value = await file.text();
});

$("#scenario-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const file = form.file.files[0]?.name ?? "dashboard.toml";
  await attempt("run the scenario",
                () => api("POST", "/api/scenarios", { scenario: form.scenario.value, file, wait: 0 }));
  refreshScenarios();
});

// -- campaign runs ------------------------------------------------------------------

// the report with its plots: fetched with the token, shown in a sandboxed frame
async function showCampaignReport(run) {
  try {
    const response = await fetch(`/api/campaigns/${encodeURIComponent(run.id)}/report.html`, {
      headers: ui.token ? { Authorization: `Bearer ${ui.token}` } : {} });
    const frame = $("#campaign-html");
    frame.srcdoc = await response.text();
    frame.hidden = false;
  } catch (err) { say(`report: ${err.message}`, true); }
}

async function refreshCampaigns() {
  let runs;
  try { runs = await api("GET", "/api/campaigns"); } catch { return; }
  const body = $("#campaigns tbody");
  body.replaceChildren(...runs.map((run) => el("tr", { "data-campaign": run.id },
    el("td", { title: `${run.id} on ${run.runs_on}; results in ${run.results}` },
       `${run.name} (${run.file})`),
    el("td", { class: `verdict verdict-${run.state}`, title: run.error }, run.state),
    el("td", {}, el("progress", { max: 100, value: run.progress }), ` ${fmt(run.progress)} %`),
    el("td", { class: "runs" },
       `${run.ok} ok, ${run.failed} failed, ${run.cancelled} cancelled of ${run.total}`),
    el("td", {}, ...(run.state === "running" ? [
      el("button", { "data-halt": run.id, onclick: async () => {
        await attempt(`halt ${run.id}`,
                      () => api("POST", `/api/campaigns/${encodeURIComponent(run.id)}/halt`));
        refreshCampaigns();
      } }, "Halt")] : run.state === "error" ? [] : [
      el("button", { "data-report": run.id, onclick: () => showCampaignReport(run) },
         "Report")])))));
  if (!runs.length) body.append(el("tr", {}, el("td", { colspan: 5 }, "no campaigns yet")));
}

$("#campaign-form").file.addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) $("#campaign-form").campaign.value = await file.text();
});

$("#campaign-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  await attempt("run the campaign",
                () => api("POST", "/api/campaigns", { campaign: event.target.campaign.value }));
  refreshCampaigns();
});

// -- one session: its variables, live ------------------------------------------------

// what the page's rendering costs (the browser tests read it)
window.dashboardStats = { frames: 0, frameMsMax: 0, layoutMs: 0 };

function select(name) {
  ui.selected = name;
  window.dashboardStats = { frames: 0, frameMsMax: 0, layoutMs: 0 };
  if (ui.socket) ui.socket.close();
  ui.trends.clear();
  ui.faults = [];
  ui.faultCounter = null;
  $("#faults tbody").replaceChildren();
  $("#session-panel").hidden = false;
  $("#session-title").textContent = name;
  for (const row of $("#sessions tbody").rows) {
    row.classList.toggle("selected", row.dataset.session === name);
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = ui.token ? `?token=${encodeURIComponent(ui.token)}` : "";
  const socket = new WebSocket(
    `${scheme}://${location.host}/api/sessions/${encodeURIComponent(name)}/live${query}`);
  ui.socket = socket;
  socket.onmessage = (event) => {
    if (ui.socket !== socket) return;
    const started = performance.now();
    const message = JSON.parse(event.data);
    if (message.type === "layout") buildVariables(message);
    else if (message.type === "frame") applyFrame(message);
    else if (message.type === "deleted") say(`session ${name} was deleted`, true);
    const took = performance.now() - started;
    const stats = window.dashboardStats;
    if (message.type === "layout") stats.layoutMs = took;
    else if (message.type === "frame") {
      stats.frames += 1;
      stats.frameMsMax = Math.max(stats.frameMsMax, took);
    }
  };
  socket.onclose = () => { if (ui.socket === socket) ui.socket = null; };
}

function rangeText(v) {
  if (v.low === null && v.high === null) return "";
  return `${v.low === null ? "−∞" : fmt(v.low)} … ${v.high === null ? "∞" : fmt(v.high)}`;
}

function parseInput(variable, text) {
  switch (variable.datatype) {
    case "Boolean": return text.trim().toLowerCase() === "true";
    case "String": return text;
    default: {
      const number = Number(text);
      return text.trim() === "" || Number.isNaN(number) ? text : number;
    }
  }
}

function editCell(variable, index) {
  if (!variable.writable) return el("td");
  const base = `/api/sessions/${encodeURIComponent(ui.selected)}/components/` +
    `${encodeURIComponent(variable.component)}/${variable.kind}/${encodeURIComponent(variable.name)}`;
  const input = el("input", { class: "edit", "aria-label": `new value of ${variable.path}` });
  const write = async () => {
    const value = parseInput(variable, input.value);
    const done = await attempt(`write ${variable.component}.${variable.name}`,
                               () => api("PUT", base, { value }));
    if (done) { input.value = ""; ui.cells[index].row.classList.toggle("forced", done.forced); }
  };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") write(); });
  const cell = el("td", {}, input, el("button", { onclick: write }, "Set"));
  if (variable.kind === "inputs") {
    cell.append(el("button", {
      onclick: async () => {
        const done = await attempt(`release ${variable.component}.${variable.name}`,
                                   () => api("DELETE", base));
        if (done) ui.cells[index].row.classList.toggle("forced", done.forced);
      },
    }, "Release"));
  }
  return cell;
}

function buildVariables(layout) {
  ui.layout = layout.variables;
  ui.values = new Array(ui.layout.length).fill(null);
  const rows = [];
  ui.cells = ui.layout.map((v, index) => {
    const numeric = v.datatype === "Double" || v.datatype === "Int32";
    const check = el("input", { type: "checkbox", "aria-label": `trend ${v.path}` });
    check.disabled = !numeric;
    check.addEventListener("change", () => toggleTrend(index, check.checked));
    const value = el("td", { class: "num value", "data-path": v.path });
    const row = el("tr", { "data-path": v.path, title: v.description },
      el("td", {}, check), el("td", {}, v.component), el("td", {}, v.kind),
      el("td", {}, v.name), value, el("td", {}, v.unit), el("td", {}, rangeText(v)),
      editCell(v, index));
    rows.push(row);
    return { row, value };
  });
  $("#variables tbody").replaceChildren(...rows);
  applyFilter();
  const targets = ui.layout.filter((v) => v.kind === "inputs" || v.kind === "outputs")
    .map((v) => `${v.component}.${v.kind === "inputs" ? "Inputs" : "Outputs"}.${v.name}`);
  $("#fault-form").target.replaceChildren(...targets.map((t) => el("option", {}, t)));
}

// -- faults of the chosen session: fetched when its frames' fault counter moves -------

function faultsPath() { return `/api/sessions/${encodeURIComponent(ui.selected)}/faults`; }

async function refreshFaults() {
  const name = ui.selected;
  try {
    const faults = await api("GET", faultsPath());
    if (name === ui.selected) { ui.faults = faults; showFaults(); }
  } catch { /* the session went: its frames say so */ }
}

function remainingText(f) {
  if (f.duration === null) return "until cleared";
  return `${fmt(Math.max(0, f.started + f.duration - ui.simTime))} s`;
}

function showFaults() {
  const body = $("#faults tbody");
  body.replaceChildren(...ui.faults.map((f) => el("tr", { "data-fault": f.id },
    el("td", {}, f.id), el("td", {}, f.kind), el("td", {}, f.target),
    el("td", {}, JSON.stringify(f.parameters)), el("td", { class: "num" }, fmt(f.started)),
    el("td", { class: "num remaining" }, remainingText(f)),
    el("td", {}, el("button", { "data-clear": f.id, onclick: async () => {
      await attempt(`clear fault ${f.id}`,
                    () => api("DELETE", `${faultsPath()}/${encodeURIComponent(f.id)}`));
      refreshFaults();
    } }, "Clear")))));
  if (!ui.faults.length) body.append(el("tr", {}, el("td", { colspan: 7 }, "no faults")));
}

function showRemaining() {
  const rows = $("#faults tbody").rows;
  ui.faults.forEach((f, i) => {
    const cell = rows[i]?.querySelector(".remaining");
    if (cell && f.duration !== null) cell.textContent = remainingText(f);
  });
}

$("#fault-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const body = { target: form.target.value, kind: form.kind.value };
  const text = form.parameters.value.trim();
  if (text) {
    try { body.parameters = JSON.parse(text); } catch { body.parameters = text; }
  }
  if (form.duration.value !== "") body.duration = Number(form.duration.value);
  if (form.id.value.trim()) body.id = form.id.value.trim();
  const done = await attempt(`inject a ${body.kind} fault on ${body.target}`,
                             () => api("POST", faultsPath(), body));
  if (done) { form.parameters.value = ""; form.id.value = ""; }
  refreshFaults();
});

$("#clear-faults").addEventListener("click", async () => {
  await attempt("clear every fault", () => api("DELETE", faultsPath()));
  refreshFaults();
});

// the forced inputs' marks: every frame that follows a force or a release (here, over
// OPC UA, another page or a reset) carries the indices of the forced inputs
function forcedMarks(forced) {
  const set = new Set(forced);
  ui.cells.forEach((cell, i) => {
    const on = set.has(i);
    if (cell.row.classList.contains("forced") !== on) cell.row.classList.toggle("forced", on);
  });
}

function applyFrame(frame) {
  const stateText = `${frame.state}, t = ${fmt(frame.sim_time)} s, tick ${frame.step_count}`;
  const state = $("#session-state");
  state.textContent = stateText;
  state.className = `state-${frame.state}`;
  state.dataset.state = frame.state;
  if (frame.forced) forcedMarks(frame.forced);
  ui.simTime = frame.sim_time;
  if (frame.faults !== ui.faultCounter) { ui.faultCounter = frame.faults; refreshFaults(); }
  else if (ui.faults.length) showRemaining();
  for (const [index, value] of frame.values) {
    ui.values[index] = value;
    const cell = ui.cells[index];
    if (cell) cell.value.textContent = fmt(value);
    const trend = ui.trends.get(index);
    if (trend && typeof value === "number") trend.push([frame.t, value]);
  }
  for (const [index, status] of Object.entries(frame.status)) {
    const cell = ui.cells[Number(index)];
    if (!cell) continue;
    cell.value.classList.toggle("bad", status !== "Good");
    cell.value.title = status === "Good" ? "" : status;
  }
  scheduleDraw();
}

function applyFilter() {
  const words = $("#filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const cell of ui.cells) {
    const text = cell.row.dataset.path.toLowerCase();
    cell.row.hidden = !words.every((w) => text.includes(w));
  }
}
$("#filter").addEventListener("input", applyFilter);

// -- trends -------------------------------------------------------------------------

async function toggleTrend(index, on) {
  if (!on) { ui.trends.delete(index); scheduleDraw(); return; }
  const points = [];
  ui.trends.set(index, points);
  const v = ui.layout[index];
  const now = Date.now() / 1000;
  const path = `/api/sessions/${encodeURIComponent(ui.selected)}/components/` +
    `${encodeURIComponent(v.component)}/${v.kind}/${encodeURIComponent(v.name)}/history` +
    `?start=${now - TREND_SECONDS}&end=${now + 1}&max=10000`;
  try {
    const page = await api("GET", path);
    const past = page.items.filter((s) => typeof s.value === "number").map((s) => [s.t, s.value]);
    points.unshift(...past.filter((p) => !points.length || p[0] < points[0][0]));
  } catch (err) {
    say(`history of ${v.path}: ${err.status}: ${err.message} (the trend starts now)`, true);
  }
  if (!points.length && typeof ui.values[index] === "number") points.push([now, ui.values[index]]);
  scheduleDraw();
}

function scheduleDraw() {
  if (ui.drawPending || !ui.trends.size) { if (!ui.trends.size) draw(); return; }
  ui.drawPending = true;
  requestAnimationFrame(() => { ui.drawPending = false; draw(); });
}

function draw() {
  const canvas = $("#trend");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const legend = $("#trend-legend");
  legend.replaceChildren();
  if (!ui.trends.size) {
    ctx.fillStyle = "#777";
    ctx.fillText("tick a variable's Trend box to plot it (the last two minutes, then live)", 12, 20);
    return;
  }
  const now = Date.now() / 1000;
  const t0 = now - TREND_SECONDS;
  let low = Infinity;
  let high = -Infinity;
  for (const points of ui.trends.values()) {
    while (points.length > 2 && points[1][0] < t0) points.shift();
    for (const [, v] of points) { low = Math.min(low, v); high = Math.max(high, v); }
  }
  if (!Number.isFinite(low)) return;
  if (high - low < 1e-12) { high += 0.5; low -= 0.5; }
  const pad = { left: 60, right: 10, top: 10, bottom: 20 };
  const x = (t) => pad.left + ((t - t0) / TREND_SECONDS) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - ((v - low) / (high - low)) * (height - pad.top - pad.bottom);
  ctx.strokeStyle = "#ccc";
  ctx.fillStyle = "#555";
  ctx.beginPath();
  for (let i = 0; i <= 4; i++) {
    const v = low + ((high - low) * i) / 4;
    ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v));
    ctx.fillText(fmt(v), 4, y(v) + 4);
  }
  for (let s = 0; s <= TREND_SECONDS; s += 30) {
    ctx.fillText(`-${TREND_SECONDS - s}s`, x(t0 + s) - 12, height - 4);
  }
  ctx.stroke();
  let colour = 0;
  for (const [index, points] of ui.trends) {
    const c = COLOURS[colour++ % COLOURS.length];
    ctx.strokeStyle = c;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    points.forEach(([t, v], i) => {
      const px = x(Math.max(t, t0));
      if (i === 0) ctx.moveTo(px, y(v));
      else ctx.lineTo(px, y(points[i - 1][1])), ctx.lineTo(px, y(v));  // steps: held values
    });
    if (points.length) ctx.lineTo(x(now), y(points[points.length - 1][1]));
    ctx.stroke();
    const v = ui.layout[index];
    legend.append(el("span", { style: `color:${c}` }, `${v.component}.${v.name} [${v.unit}]`));
  }
}

// -- start ----------------------------------------------------------------------------

whoAmI();
refreshSessions();
refreshHil();
refreshAlarms();
refreshScenarios();
refreshCampaigns();
draw();
setInterval(refreshSessions, 1000);
setInterval(refreshHil, 2000);
setInterval(refreshAlarms, 1000);
setInterval(refreshScenarios, 2000);
setInterval(refreshCampaigns, 1000);
setInterval(() => { if (ui.trends.size) scheduleDraw(); }, 500);
