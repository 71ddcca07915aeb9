"""The REST API against the real daemon over 127.0.0.1: the session workflow, each
refusal's HTTP status and body (the OPC UA status name and message, the same as
OPC UA's for the same call), roles, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sys
import time
from typing import Any

import pytest
from asyncua import Client, ua

from tests.opcua.conftest import MODULE_LOOP, message, s
from tests.web.conftest import CAMPAIGN, PASSWORD, USERS, Web, basic
from twin_server.security.roles import Role

pytestmark = MODULE_LOOP

SESSION = "/api/sessions/main"
LEVEL = SESSION + "/components/tank/outputs/level"
INFLOW = SESSION + "/components/tank/inputs/inflow"
AREA = SESSION + "/components/tank/parameters/area"


async def _until(web: Web, path: str, check: Any, timeout: float = 10.0) -> Any:
    """GET ``path`` until ``check(answer)`` holds; the answer."""
    async with asyncio.timeout(timeout):
        while True:
            status, found = await web.call("GET", path)
            if status == 200 and check(found):
                return found
            await asyncio.sleep(0.05)


class TestWorkflow:
    async def test_create_step_reset_set_snapshot_restore_fork_delete(self, web: Web) -> None:
        """The seed's workflow: create a session with parameters, step it, read its
        state, reset it with parameters, set parameters, snapshot, restore, fork, delete."""
        status, created = await web.call("POST", "/api/sessions", {
            "twin": "plant", "name": "flow", "parameters": {"tank": {"area": 1.5}}})
        assert status == 201, created
        assert created["state"] == "Ready" and created["origin"] == "client"
        status, area = await web.call("GET", "/api/sessions/flow/components/tank/parameters/area")
        assert (status, area["value"]) == (200, 1.5)
        status, stepped = await web.call("POST", "/api/sessions/flow/step", {"count": 10})
        assert status == 200 and stepped["step_count"] == 10
        status, snap = await web.call("POST", "/api/sessions/flow/snapshots")
        assert status == 201 and snap["id"]
        await web.call("POST", "/api/sessions/flow/step", {"count": 5})
        status, restored = await web.call("POST", "/api/sessions/flow/restore",
                                          {"snapshot": snap["id"]})
        assert status == 200 and restored["step_count"] == 10
        status, forked = await web.call("POST", "/api/sessions/flow/fork",
                                        {"name": "flow2", "realtime_factor": 2.0})
        assert status == 201 and forked["step_count"] == 10 and forked["realtime_factor"] == 2
        status, _ = await web.call("POST", "/api/sessions/flow/parameters",
                                   {"parameters": {"tank.outflow_coefficient": 0.03}})
        assert status == 200
        status, reset = await web.call("POST", "/api/sessions/flow/reset",
                                       {"parameters": {"tank": {"initial_level": 0.9}}})
        assert status == 200 and reset["step_count"] == 0 and reset["state"] == "Ready"
        status, level = await web.call("GET", "/api/sessions/flow/components/tank/outputs/level")
        assert level["value"] == pytest.approx(0.9)
        status, listed = await web.call("GET", "/api/sessions")
        assert {"main", "flow", "flow2"} <= {x["name"] for x in listed}
        for name in ("flow2", "flow"):
            assert (await web.call("DELETE", f"/api/sessions/{name}"))[0] == 204
        assert (await web.call("GET", "/api/sessions/flow"))[0] == 404

    async def test_run_control_follows_the_program_state_machine(self, web: Web) -> None:
        """Suspend, step, resume, halt and start change the run state as the OPC UA
        methods do, and the answer shows the new state."""
        assert (await web.call("POST", SESSION + "/suspend"))[1]["state"] == "Suspended"
        step = (await web.call("GET", SESSION))[1]["step_count"]
        assert (await web.call("POST", SESSION + "/step", {"count": 3}))[1]["step_count"] \
            == step + 3
        assert (await web.call("POST", SESSION + "/resume"))[1]["state"] == "Running"
        assert (await web.call("POST", SESSION + "/halt"))[1]["state"] == "Halted"
        assert (await web.call("POST", SESSION + "/reset"))[1]["state"] == "Ready"
        assert (await web.call("POST", SESSION + "/start"))[1]["state"] == "Running"
        assert (await web.call("PUT", SESSION + "/realtime-factor",
                               {"value": 1}))[1]["realtime_factor"] == 1.0

    async def test_an_input_written_is_forced_until_released(self, web: Web) -> None:
        """PUT on an input forces it (the OPC UA write); DELETE releases it
        (ReleaseInput); release-inputs releases them all."""
        status, written = await web.call("PUT", INFLOW, {"value": 0.01})
        assert status == 200 and written["forced"] and written["value"] == 0.01
        _, variables = await web.call("GET", SESSION + "/variables")
        inflow = next(v for v in variables if v["path"] == "Components.tank.Inputs.inflow")
        assert inflow["forced"] and inflow["unit"] == "m^3/s" and inflow["low"] == 0.0
        status, released = await web.call("DELETE", INFLOW)
        assert status == 200 and released["released"] and not released["forced"]
        await web.call("PUT", INFLOW, {"value": 0.01})
        status, every = await web.call("POST", SESSION + "/release-inputs")
        assert (status, every) == (200, {"released": ["tank.inflow"]})

    async def test_twins_are_defined_listed_and_removed(self, web: Web) -> None:
        """POST /api/twins defines a twin from TOML (DefineTwin), GET lists it,
        DELETE removes it (RemoveTwin)."""
        toml = '[twins.lag.components.lag]\nmodel = "first_order_lag"\n'
        status, twin = await web.call("POST", "/api/twins", {"definition": toml})
        assert status == 201 and twin["name"] == "lag" and twin["origin"] == "client"
        assert (await web.call("GET", "/api/twins/lag"))[1]["components"][0]["model"] \
            == "first_order_lag"
        assert "lag" in {t["name"] for t in (await web.call("GET", "/api/twins"))[1]}
        assert (await web.call("DELETE", "/api/twins/lag"))[0] == 204
        assert (await web.call("GET", "/api/twins/lag"))[0] == 404

    async def test_history_pages_never_repeat_nor_drop(self, web: Web) -> None:
        """A variable's history over a time range comes a page at a time; following
        the continuations gives every sample once, in time order."""
        await web.daemon.store.flush()  # type: ignore[union-attr]
        path = SESSION + "/components/tank/outputs/level/history"
        _, whole = await web.call("GET", f"{path}?end={time.time() + 60}&start=0&max=10000")
        assert len(whole["items"]) > 3, whole
        pages: list[Any] = []
        token = ""
        while True:
            query = f"?start=0&end={time.time() + 60}&max=2" + (
                f"&continuation={token}" if token else "")
            status, page = await web.call("GET", path + query)
            assert status == 200, page
            pages += page["items"]
            token = page["continuation"]
            if token is None or len(pages) >= len(whole["items"]):
                break
        assert pages == whole["items"][:len(pages)]
        assert [p["t"] for p in pages] == sorted(p["t"] for p in pages)

    async def test_a_sessions_events_are_read_back(self, web: Web) -> None:
        """GET events returns the session's log events (its creation, state changes)."""
        await web.daemon.store.flush()  # type: ignore[union-attr]
        status, page = await web.call("GET", SESSION + "/events?max=1000")
        assert status == 200
        assert {"created", "suspended"} <= {e["kind"] for e in page["items"]}, page

    async def test_hil_health_is_listed(self, web: Web) -> None:
        """GET /api/hil lists the HIL peers (none in this config)."""
        assert await web.call("GET", "/api/hil") == (200, [])


# -- refusals --------------------------------------------------------------------------

REFUSALS = [
    pytest.param("GET", "/api/sessions/nope", None, 404, "BadNotFound", id="unknown-session"),
    pytest.param("GET", SESSION + "/components/tank/outputs/nope", None, 404, "BadNotFound",
                 id="unknown-variable"),
    pytest.param("GET", SESSION + "/components/tank/widgets/level", None, 404, "BadNotFound",
                 id="unknown-kind"),
    pytest.param("POST", "/api/sessions", {"twin": "nope", "name": "x"}, 404, "BadNotFound",
                 id="unknown-twin"),
    pytest.param("POST", "/api/sessions", {"twin": "plant", "name": "main"}, 409,
                 "BadBrowseNameDuplicated", id="taken-name"),
    pytest.param("POST", "/api/sessions", {"twin": "plant", "name": "bad name!"}, 400,
                 "BadInvalidArgument", id="bad-name"),
    pytest.param("POST", "/api/sessions", {"twin": "plant"}, 400, "BadInvalidArgument",
                 id="missing-field"),
    pytest.param("POST", "/api/sessions", {"twin": "plant", "name": 3}, 400,
                 "BadTypeMismatch", id="wrong-field-type"),
    pytest.param("POST", "/api/sessions", {"twin": "plant", "name": "y",
                                           "parameters": {"tank": {"area": -1}}},
                 422, "BadOutOfRange", id="parameter-out-of-range"),
    pytest.param("POST", "/api/sessions", {"twin": "plant", "name": "y",
                                           "parameters": {"tank": {"nope": 1}}},
                 404, "BadNotFound", id="unknown-parameter"),
    pytest.param("POST", "/api/sessions", {"twin": "plant", "name": "y",
                                           "parameters": [1]},
                 400, "BadInvalidArgument", id="parameters-not-an-object"),
    pytest.param("POST", SESSION + "/step", {"count": 0}, 422, "BadOutOfRange", id="step-0"),
    pytest.param("POST", SESSION + "/step", {"count": 1.5}, 400, "BadTypeMismatch",
                 id="step-float"),
    pytest.param("POST", SESSION + "/resume", None, 409, "BadInvalidState",
                 id="resume-running"),
    pytest.param("POST", SESSION + "/restore", {"snapshot": "nope"}, 404, "BadNotFound",
                 id="unknown-snapshot"),
    pytest.param("POST", SESSION + "/fork", {"name": "f", "realtime_factor": 5000}, 422,
                 "BadOutOfRange", id="fork-factor"),
    pytest.param("PUT", SESSION + "/realtime-factor", {"value": -1}, 422, "BadOutOfRange",
                 id="realtime-factor"),
    pytest.param("PUT", INFLOW, {"value": -1.0}, 422, "BadOutOfRange", id="write-range"),
    pytest.param("PUT", INFLOW, {"value": "x"}, 400, "BadTypeMismatch", id="write-type"),
    pytest.param("PUT", INFLOW, {}, 400, "BadInvalidArgument", id="write-no-value"),
    pytest.param("PUT", LEVEL, {"value": 1.0}, 409, "BadNotWritable", id="write-output"),
    pytest.param("PUT", AREA.replace("area", "initial_level"), {"value": 1.0}, 409,
                 "BadNotWritable", id="fixed-parameter-running"),
    pytest.param("DELETE", LEVEL, None, 400, "BadInvalidArgument", id="release-output"),
    pytest.param("POST", "/api/twins", {"definition": "[twins.t.components.c]\nmodel = 1\n"},
                 422, "BadConfigurationError", id="invalid-twin"),
    pytest.param("POST", "/api/twins", {"definition": "  "}, 400, "BadInvalidArgument",
                 id="empty-twin"),
    pytest.param("DELETE", "/api/twins/plant", None, 409, "BadInvalidState", id="twin-in-use"),
    pytest.param("GET", SESSION + "/events?start=yesterday", None, 400, "BadInvalidArgument",
                 id="bad-time"),
    pytest.param("GET", SESSION + "/events?max=0", None, 400, "BadInvalidArgument",
                 id="bad-max"),
    pytest.param("GET", "/api/nothing", None, 404, "BadNotFound", id="unknown-route"),
    pytest.param("PATCH", SESSION, None, 405, "BadMethodInvalid", id="wrong-method"),
]


class TestRefusals:
    @pytest.mark.parametrize(("method", "path", "body", "http", "status"), REFUSALS)
    async def test_refused_with_status_and_message(self, web: Web, method: str, path: str,
                                                   body: Any, http: int, status: str) -> None:
        """A refused request answers its HTTP status and {status, message}; nothing changes."""
        before = sorted(web.daemon.sessions)
        got, answer = await web.call(method, path, body)
        assert (got, answer["status"]) == (http, status), answer
        assert answer["message"]
        assert sorted(web.daemon.sessions) == before

    @pytest.mark.parametrize(("body", "why"), [
        pytest.param("{not json", "not valid JSON", id="not-json"),
        pytest.param("[" * 200 + "]" * 200, "nests more than", id="too-deep"),
        pytest.param('{"count": 1, "count": 2}', "twice", id="duplicate-key"),
        pytest.param('{"count": NaN}', "NaN", id="nan"),
    ])
    async def test_a_malformed_body_is_refused(self, web: Web, body: str, why: str) -> None:
        """A body that is not one JSON object within the limits is BadInvalidArgument."""
        got, answer = await web.call("POST", SESSION + "/step", data=body,
                                     headers={"Content-Type": "application/json"})
        assert (got, answer["status"]) == (400, "BadInvalidArgument")
        assert why in answer["message"]

    async def test_refusals_match_opc_uas_for_the_same_call(self, web: Web) -> None:
        """Step(0), a taken CreateSession name and an out-of-range write: the REST
        refusal carries the status name and message OPC UA's call or write gets."""
        daemon = web.daemon
        client = Client(daemon.endpoint_url, timeout=10)
        client.set_user(USERS[Role.ADMIN])
        client.set_password(PASSWORD)
        async with client:
            ns = await client.get_namespace_index("urn:twin-server")

            async def call(obj: str, method: str, *args: ua.Variant) -> ua.CallMethodResult:
                (result,) = await client.uaclient.call([ua.CallMethodRequest(
                    ObjectId=ua.NodeId(obj, ns), MethodId=ua.NodeId(method, ns),
                    InputArguments=list(args))])
                return result

            step = await call("Sessions.main", "Sessions.main.Step",
                              ua.Variant(0, ua.VariantType.UInt32))
            _, rest = await web.call("POST", SESSION + "/step", {"count": 0})
            assert (rest["status"], rest["message"]) == (step.StatusCode.name, message(step))
            create = await call("TwinServer", "CreateSession", s("plant"), s("main"), s(""))
            _, rest = await web.call("POST", "/api/sessions", {"twin": "plant", "name": "main"})
            assert (rest["status"], rest["message"]) == (create.StatusCode.name,
                                                         message(create))
            inflow = client.get_node(ua.NodeId("Sessions.main.Components.tank.Inputs.inflow", ns))
            with pytest.raises(ua.UaStatusCodeError) as written:
                await inflow.write_value(ua.DataValue(ua.Variant(-1.0, ua.VariantType.Double)))
            _, rest = await web.call("PUT", INFLOW, {"value": -1.0})
            assert rest["status"] == ua.StatusCode(written.value.code).name

    async def test_a_cross_site_request_is_refused(self, web: Web) -> None:
        """A state-changing request from another site's page (its Origin) is refused
        with 403 before it is done; one from the server's own pages is not."""
        got, answer = await web.call("POST", SESSION + "/suspend",
                                     headers={"Origin": "http://evil.example"})
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        assert (await web.call("GET", SESSION))[1]["state"] == "Running"
        got, _ = await web.call("POST", SESSION + "/suspend", headers={"Origin": web.url})
        assert got == 200
        assert (await web.call("POST", SESSION + "/resume"))[0] == 200


# -- roles -----------------------------------------------------------------------------

class TestRoles:
    async def test_anonymous_may_read_where_opc_ua_allows_it(self, web: Web) -> None:
        """Without credentials the anonymous role (viewer here) applies: reads pass,
        run control is refused 403."""
        assert (await web.call("GET", "/api/sessions", role=None))[0] == 200
        got, answer = await web.call("POST", SESSION + "/suspend", role=None)
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        assert (await web.call("GET", "/api/me", role=None))[1] == {
            "name": None, "role": "viewer", "anonymous": True}

    @pytest.mark.parametrize(("role", "method", "path", "body", "allowed"), [
        pytest.param(Role.VIEWER, "PUT", INFLOW, {"value": 0.01}, False, id="viewer-write"),
        pytest.param(Role.OPERATOR, "PUT", AREA, {"value": 0.5}, True, id="operator-write"),
        pytest.param(Role.OPERATOR, "POST", SESSION + "/snapshots", None, True,
                     id="operator-snapshot"),
        pytest.param(Role.OPERATOR, "POST", "/api/sessions", {"twin": "plant", "name": "o"},
                     False, id="operator-create"),
        pytest.param(Role.OPERATOR, "POST", "/api/twins", {"definition": "x"}, False,
                     id="operator-define"),
        pytest.param(Role.OPERATOR, "POST", SESSION + "/fork", {"name": "o"}, False,
                     id="operator-fork"),
    ])
    async def test_each_operation_needs_its_opc_ua_role(self, web: Web, role: Role,
                                                        method: str, path: str, body: Any,
                                                        allowed: bool) -> None:
        """An operation needs the role of its OPC UA method or write (security/roles.py)."""
        got, answer = await web.call(method, path, body, role=role)
        if allowed:
            assert got < 300, answer
        else:
            assert (got, answer["status"]) == (403, "BadUserAccessDenied"), answer
            assert str(role) in answer["message"]

    async def test_a_wrong_password_is_refused_with_a_challenge(self, web: Web) -> None:
        """A wrong password answers 401 BadIdentityTokenRejected and a Basic challenge."""
        async with web.http.get(web.url + "/api/sessions",
                                headers=basic(USERS[Role.ADMIN], "wrong")) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert (await response.json())["status"] == "BadIdentityTokenRejected"

    async def test_a_scripts_basic_requests_check_the_password_once(self, web: Web) -> None:
        """A loop of requests with the same Basic credentials is checked against the
        users store once (not scrypt and a log line each); another password is
        checked, and refused, at once."""
        users = web.daemon.server.security.users  # type: ignore[union-attr]
        name = USERS[Role.VIEWER]
        before = users.statistics()
        for _ in range(5):
            assert (await web.call("GET", "/api/me", role=None,
                                   headers=basic(name)))[1]["name"] == name
        after = users.statistics()
        assert after.accepted - before.accepted <= 1
        got, _ = await web.call("GET", "/api/me", role=None, headers=basic(name, "wrong"))
        assert got == 401 and users.statistics().failed == after.failed + 1

    async def test_a_token_from_login_stands_for_the_user(self, web: Web) -> None:
        """POST /api/login with Basic credentials hands out a token that authenticates
        as that user until logout revokes it; an unknown token is refused."""
        got, login = await web.call("POST", "/api/login", role=Role.OPERATOR)
        assert got == 200 and login["role"] == "operator"
        bearer = {"Authorization": f"Bearer {login['token']}"}
        assert (await web.call("GET", "/api/me", role=None, headers=bearer))[1]["name"] == \
            USERS[Role.OPERATOR]
        assert (await web.call("POST", "/api/logout", role=None, headers=bearer)) == \
            (200, {"revoked": True})
        got, answer = await web.call("GET", "/api/me", role=None, headers=bearer)
        assert (got, answer["status"]) == (401, "BadIdentityTokenRejected")

    async def test_login_without_credentials_is_refused(self, web: Web) -> None:
        """POST /api/login needs Basic credentials (anonymous gets no token)."""
        got, answer = await web.call("POST", "/api/login", role=None)
        assert (got, answer["status"]) == (401, "BadIdentityTokenRejected")
        assert PASSWORD not in json.dumps(answer)


# -- the document ----------------------------------------------------------------------

class TestOpenApi:
    async def test_the_document_is_valid_openapi_3(self, web: Web) -> None:
        """/api/openapi.json passes openapi-spec-validator (an independent check of the
        OpenAPI 3 schema)."""
        validator = pytest.importorskip(
            "openapi_spec_validator",
            reason="openapi-spec-validator is not installed (pip install -e '.[test]')")
        got, document = await web.call("GET", "/api/openapi.json", role=None)
        assert got == 200
        validator.validate(document)

    async def test_the_document_lists_every_served_route(self, web: Web) -> None:
        """Every route the API serves is documented, with its refusals."""
        assert web.daemon.web is not None
        _, document = await web.call("GET", "/api/openapi.json")
        documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
        served = {(r.method, r.path) for r in web.daemon.web.routes}
        assert documented == served
        step = document["paths"]["/api/sessions/{session}/step"]["post"]
        assert {"409", "422", "401", "403"} <= set(step["responses"])


# -- live values -----------------------------------------------------------------------

class TestLive:
    async def test_the_websocket_pushes_a_layout_then_what_changes(self, web: Web) -> None:
        """/live sends the variables' layout, a frame with every value, then frames
        with the values that changed at the publish rate; a write shows in them."""
        async with web.http.ws_connect(web.url + SESSION + "/live") as ws:
            layout = await ws.receive_json(timeout=10)
            assert layout["type"] == "layout"
            paths = [v["path"] for v in layout["variables"]]
            level = paths.index("Components.tank.Outputs.level")
            inflow = paths.index("Components.tank.Inputs.inflow")
            first = await ws.receive_json(timeout=10)
            assert first["type"] == "frame" and len(first["values"]) == len(paths)
            ticks = first["step_count"]
            changed: set[int] = set()
            async with asyncio.timeout(10):
                while level not in changed:
                    frame = await ws.receive_json()
                    assert frame["step_count"] >= ticks
                    changed |= {i for i, _ in frame["values"]}
            assert len(changed) < len(paths)  # only what changed
            await web.call("PUT", INFLOW, {"value": 0.004})
            async with asyncio.timeout(10):
                while True:
                    frame = await ws.receive_json()
                    if [inflow, 0.004] in frame["values"]:
                        break
            await web.call("POST", SESSION + "/release-inputs")

    async def test_forced_marks_follow_a_force_and_a_release_made_over_opc_ua(
            self, web: Web) -> None:
        """The first frame names the forced inputs; an input forced and then released
        over OPC UA (not through this socket's page) shows in the next frames."""
        client = Client(web.daemon.endpoint_url, timeout=10)
        client.set_user(USERS[Role.ADMIN])
        client.set_password(PASSWORD)
        async with client, web.http.ws_connect(web.url + SESSION + "/live") as ws:
            ns = await client.get_namespace_index("urn:twin-server")
            paths = [v["path"] for v in (await ws.receive_json(timeout=10))["variables"]]
            inflow = paths.index("Components.tank.Inputs.inflow")
            assert (await ws.receive_json(timeout=10))["forced"] == []

            async def forced_now() -> list[int]:
                async with asyncio.timeout(10):
                    while "forced" not in (frame := await ws.receive_json()):
                        pass
                    found: list[int] = frame["forced"]
                    return found

            node = client.get_node(ua.NodeId("Sessions.main.Components.tank.Inputs.inflow", ns))
            await node.write_value(ua.DataValue(ua.Variant(0.002, ua.VariantType.Double)))
            assert await forced_now() == [inflow]
            session = client.get_node(ua.NodeId("Sessions.main", ns))
            await session.call_method(ua.NodeId("Sessions.main.ReleaseInputs", ns))
            assert await forced_now() == []

    async def test_a_big_listing_is_the_views_of_each_variable(self, web: Web) -> None:
        """GET .../variables (encoded from the layout once) answers what variable_view
        gives for each variable: values of every type, non-finite as null, status
        and forced marks."""
        from twin_server.web import views
        record = web.daemon.manager.get("main")
        await web.call("PUT", INFLOW, {"value": 0.003})
        try:
            _, listing = await web.call("GET", SESSION + "/variables")
            layout = record.session.layout.variables
            view = await views.LayoutView(record.session.layout).build("plant")
            frame = record.session.frame()
            values = (*frame.values[:-4], float("nan"), float("-inf"), True, 'a "quoted"\n')
            frame = dataclasses.replace(frame, values=values, quality={0: 0x80000000})
            text = await view.listing(frame, await record.session.forced())
            assert json.loads(text) == [
                views.variable_view(key, var, frame.values[i], frame.quality.get(i, 0),
                                    key.path == "Components.tank.Inputs.inflow")
                for i, (key, var) in enumerate(layout)]
            assert [v["path"] for v in listing] == [k.path for k, _ in layout]
            assert [v["path"] for v in listing if v["forced"]] == \
                ["Components.tank.Inputs.inflow"]
        finally:
            await web.call("POST", SESSION + "/release-inputs")

    async def test_an_unknown_session_is_refused_before_the_upgrade(self, web: Web) -> None:
        """/live of an unknown session answers 404 BadNotFound, not a socket."""
        status, answer = await web.call("GET", "/api/sessions/nope/live")
        assert (status, answer["status"]) == (404, "BadNotFound")


# -- alarms ------------------------------------------------------------------------------

ALARMS = SESSION + "/alarms"
HIGH = ALARMS + "/HighLevel"


class TestAlarms:
    async def test_the_alarm_list_shows_each_condition(self, web: Web) -> None:
        """GET /api/alarms lists the session's alarm with its definition and condition
        (active once the level passed its limit); ?retained=true keeps retained ones."""
        alarms = await _until(web, "/api/alarms", lambda a: any(
            x["name"] == "HighLevel" and x["active"] for x in a))
        high = next(a for a in alarms if a["name"] == "HighLevel")
        assert high["session"] == "main" and high["variable"] == "tank.level"
        assert high["limits"] == ["High"] and high["severity"] == 700 and high["retain"]
        assert high["limits_defined"] == [{"name": "High", "value": 0.52, "severity": 700}]
        assert len(high["event_id"]) == 32
        _, retained = await web.call("GET", "/api/alarms?retained=true")
        assert "HighLevel" in [a["name"] for a in retained]
        assert (await web.call("GET", ALARMS))[1][0]["name"] == "HighLevel"

    async def test_acknowledge_confirm_comment_as_over_opc_ua(self, web: Web) -> None:
        """Acknowledge, Confirm and AddComment need the listed EventId and an operator;
        a repeated Acknowledge is refused as the condition's OPC UA method refuses it
        (the same status and message); Disable and Enable follow."""
        await _until(web, ALARMS, lambda a: a[0]["active"])
        _, (high,) = await web.call("GET", ALARMS)
        event = {"event_id": high["event_id"], "comment": "seen"}
        got, answer = await web.call("POST", HIGH + "/acknowledge", event, role=Role.VIEWER)
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        got, answer = await web.call("POST", HIGH + "/acknowledge", {"event_id": "00" * 16},
                                     role=Role.OPERATOR)
        assert (got, answer["status"]) == (409, "BadEventIdUnknown")
        got, acked = await web.call("POST", HIGH + "/acknowledge", event, role=Role.OPERATOR)
        assert got == 200 and acked["acked"] and acked["comment"] == "seen"
        assert acked["user"] == USERS[Role.OPERATOR]
        got, again = await web.call("POST", HIGH + "/acknowledge",
                                    {"event_id": acked["event_id"]}, role=Role.OPERATOR)
        assert (got, again["status"]) == (409, "BadConditionBranchAlreadyAcked")
        client = Client(web.daemon.endpoint_url, timeout=10)
        client.set_user(USERS[Role.OPERATOR])
        client.set_password(PASSWORD)
        async with client:
            ns = await client.get_namespace_index("urn:twin-server")
            (result,) = await client.uaclient.call([ua.CallMethodRequest(
                ObjectId=ua.NodeId("Sessions.main.Alarms.HighLevel", ns),
                MethodId=ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge),
                InputArguments=[ua.Variant(bytes.fromhex(acked["event_id"])),
                                ua.Variant(ua.LocalizedText("again"))])])
        assert result.StatusCode.name == again["status"]
        got, confirmed = await web.call("POST", HIGH + "/confirm",
                                        {"event_id": acked["event_id"]}, role=Role.OPERATOR)
        assert got == 200 and confirmed["confirmed"]
        got, commented = await web.call("POST", HIGH + "/comment", {
            "event_id": confirmed["event_id"], "comment": "valve checked"}, role=Role.OPERATOR)
        assert got == 200 and commented["comment"] == "valve checked"
        got, disabled = await web.call("POST", HIGH + "/disable", role=Role.OPERATOR)
        assert got == 200 and not disabled["enabled"]
        got, twice = await web.call("POST", HIGH + "/disable", role=Role.OPERATOR)
        assert (got, twice["status"]) == (409, "BadConditionAlreadyDisabled")
        got, enabled = await web.call("POST", HIGH + "/enable", role=Role.OPERATOR)
        assert got == 200 and enabled["enabled"]

    async def test_shelving_as_over_opc_ua(self, web: Web) -> None:
        """timed-shelve, one-shot-shelve and unshelve as ShelvingState's methods: an
        operator's, refused with the same status as over OPC UA (a shelving time over
        max_time_shelved, Unshelve of an unshelved alarm, shelving twice); the list
        shows the shelving and the seconds left."""
        got, answer = await web.call("POST", HIGH + "/timed-shelve", {"shelving_time": 60},
                                     role=Role.VIEWER)
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        got, answer = await web.call("POST", HIGH + "/timed-shelve",
                                     {"shelving_time": 8 * 3600 + 1}, role=Role.OPERATOR)
        assert (got, answer["status"]) == (409, "BadShelvingTimeOutOfRange")
        assert "28800000 ms" in answer["message"]
        got, answer = await web.call("POST", HIGH + "/unshelve", role=Role.OPERATOR)
        assert (got, answer["status"]) == (409, "BadConditionNotShelved")
        got, shelved = await web.call("POST", HIGH + "/timed-shelve",
                                      {"shelving_time": 600, "comment": "commissioning"},
                                      role=Role.OPERATOR)
        assert got == 200, shelved
        assert (shelved["shelving"], shelved["suppressed_or_shelved"],
                shelved["max_time_shelved"]) == ("TimedShelved", True, 8 * 3600)
        assert 590 < shelved["unshelve_time"] <= 600
        assert f"shelved by {USERS[Role.OPERATOR]} for 10 min (commissioning)" in (
            shelved["message"])
        got, answer = await web.call("POST", HIGH + "/timed-shelve", {"shelving_time": 60},
                                     role=Role.OPERATOR)
        assert (got, answer["status"]) == (409, "BadConditionAlreadyShelved")
        got, one_shot = await web.call("POST", HIGH + "/one-shot-shelve", role=Role.OPERATOR)
        assert got == 200 and one_shot["shelving"] == "OneShotShelved"
        _, (listed,) = await web.call("GET", ALARMS)
        assert listed["shelving"] == "OneShotShelved"
        got, unshelved = await web.call("POST", HIGH + "/unshelve", role=Role.OPERATOR)
        assert got == 200 and (unshelved["shelving"], unshelved["unshelve_time"]) == (
            "Unshelved", 0.0)

    async def test_an_unknown_alarm_is_not_found(self, web: Web) -> None:
        """An alarm the session does not have answers 404 naming its alarms."""
        got, answer = await web.call("POST", ALARMS + "/Nope/enable")
        assert (got, answer["status"]) == (404, "BadNotFound")
        assert "HighLevel" in answer["message"]


# -- scenario runs -------------------------------------------------------------------------

SCENARIO = """
[scenario]
description = "The level follows the setpoint up"
session = "main"

[[steps]]
name = "the tank never overflows"
check = "tank.level < 1.9"
always = true

[[steps]]
wait_until = "setpoint.output > 0.9"
timeout = 5.0

[[steps]]
name = "the level rises"
check = "tank.level > {level}"
within = 60.0
"""


async def _opcua_client(web: Web) -> Client:
    client = Client(web.daemon.endpoint_url, timeout=10)
    client.set_user(USERS[Role.ADMIN])
    client.set_password(PASSWORD)
    return client


async def _run_scenario(client: Client, scenario: str, options: str = ""
                        ) -> ua.CallMethodResult:
    ns = await client.get_namespace_index("urn:twin-server")
    (result,) = await client.uaclient.call([ua.CallMethodRequest(
        ObjectId=ua.NodeId("TwinServer", ns), MethodId=ua.NodeId("RunScenario", ns),
        InputArguments=[s(scenario), s(options)])])
    return result


async def _run_value(client: Client, run: str, name: str) -> Any:
    ns = await client.get_namespace_index("urn:twin-server")
    return await client.get_node(ua.NodeId(f"Scenarios.{run}.{name}", ns)).read_value()


class TestScenarios:
    async def test_a_scenario_runs_with_its_reports_and_shows_in_opc_ua(self, web: Web
                                                                          ) -> None:
        """POST /api/scenarios starts a RunScenario run on a fresh session like 'main'
        and answers its verdicts; it is listed, its JUnit XML and Markdown report are
        served, and it is the run under Scenarios/<id> in OPC UA."""
        got, run = await web.call("POST", "/api/scenarios", {
            "scenario": SCENARIO.format(level=0.6), "file": "rise.toml", "wait": 20,
            "seed": 3}, role=Role.OPERATOR)
        assert got == 201 and run["state"] == "passed", run
        assert [c["verdict"] for c in run["checks"]] == ["passed", "passed"]
        assert (run["user"], run["file"], run["seed"]) == (USERS[Role.OPERATOR],
                                                          "rise.toml", 3)
        assert run["id"] not in web.daemon.sessions
        _, runs = await web.call("GET", "/api/scenarios")
        assert runs[0]["id"] == run["id"]
        assert (await web.call("GET", f"/api/scenarios/{run['id']}"))[1]["state"] == "passed"
        async with web.http.get(f"{web.url}/api/scenarios/{run['id']}/junit") as response:
            assert response.content_type == "application/xml"
            junit = await response.text()
            assert "<testsuite" in junit
        async with web.http.get(f"{web.url}/api/scenarios/{run['id']}/report") as response:
            assert response.content_type == "text/markdown"
            assert (await response.text()).startswith("# ")
        async with await _opcua_client(web) as client:
            assert await _run_value(client, run["id"], "Verdict") == "passed"
            assert await _run_value(client, run["id"], "File") == "rise.toml"
            assert await _run_value(client, run["id"], "JUnit") == junit

    async def test_the_report_shows_its_plots(self, web: Web) -> None:
        """A finished run's HTML report holds each check's SVG plot inline, and
        plots/step<N>.svg serves one, both unable to load or run anything; a step
        without a check has no plot."""
        _, run = await web.call("POST", "/api/scenarios", {
            "scenario": SCENARIO.format(level=0.6), "wait": 20})
        assert run["state"] == "passed", run
        base = f"{web.url}/api/scenarios/{run['id']}"
        async with web.http.get(base + "/report.html") as response:
            assert response.content_type == "text/html"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            page = await response.text()
        assert page.count("<svg") == 2 and "<script" not in page
        assert '<section data-step="2">' in page and "the level rises" in page
        async with web.http.get(base + "/plots/step2.svg") as response:
            assert response.content_type == "image/svg+xml"
            svg = await response.text()
        assert svg.startswith("<svg") and "tank.level" in svg
        got, answer = await web.call("GET", f"/api/scenarios/{run['id']}/plots/step1.svg")
        assert (got, answer["status"]) == (404, "BadNotFound")
        assert "step0.svg, step2.svg" in answer["message"]

    async def test_a_run_started_over_opc_ua_is_listed(self, web: Web) -> None:
        """A run RunScenario started is listed over REST with its verdict, its OPC UA
        user and reports."""
        async with await _opcua_client(web) as client:
            result = await _run_scenario(client, SCENARIO.format(level=0.6))
            assert result.StatusCode.is_good(), message(result)
            node = result.OutputArguments[0].Value.Identifier
        run_id = node.removeprefix("Scenarios.")
        run = await _until(web, f"/api/scenarios/{run_id}", lambda r: r["state"] != "running",
                           timeout=20)
        assert (run["state"], run["user"]) == ("passed", "alice")
        assert run_id in [r["id"] for r in (await web.call("GET", "/api/scenarios"))[1]]
        async with web.http.get(f"{web.url}/api/scenarios/{run_id}/report") as response:
            assert response.status == 200

    async def test_a_failing_check_fails_the_run(self, web: Web) -> None:
        """A check that does not hold gives the run the verdict failed, with why."""
        _, run = await web.call("POST", "/api/scenarios", {
            "scenario": SCENARIO.format(level=5.0), "wait": 30})
        assert run["state"] == "failed", run
        assert run["checks"][-1]["verdict"] == "failed"

    async def test_a_long_run_answers_running_and_halts(self, web: Web) -> None:
        """With wait 0 the POST answers a running run at once, with no report yet;
        /halt is its Halt: it ends with the verdict error, in OPC UA too, and a
        second halt is refused."""
        long = SCENARIO.format(level=0.6).replace("timeout = 5.0", "timeout = 1e6") \
            .replace("setpoint.output > 0.9", "tank.level > 10")
        got, run = await web.call("POST", "/api/scenarios", {"scenario": long, "wait": 0})
        assert (got, run["state"]) == (201, "running")
        got, answer = await web.call("GET", f"/api/scenarios/{run['id']}/junit")
        assert (got, answer["status"]) == (409, "BadInvalidState")
        got, answer = await web.call("POST", f"/api/scenarios/{run['id']}/halt",
                                     role=Role.VIEWER)
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        started = time.monotonic()
        got, halted = await web.call("POST", f"/api/scenarios/{run['id']}/halt")
        assert (got, halted["state"]) == (200, "error"), halted
        assert "halted by alice" in halted["error"]
        assert time.monotonic() - started < 5
        async with await _opcua_client(web) as client:
            assert await _run_value(client, run["id"], "Verdict") == "error"
        got, answer = await web.call("POST", f"/api/scenarios/{run['id']}/halt")
        assert (got, answer["status"]) == (409, "BadInvalidState")

    @pytest.mark.parametrize(("scenario", "options", "http"), [
        pytest.param('[scenario]\nsession = "nope"\n[[steps]]\ncheck = "x >"\n', {}, 400,
                     id="errors-in-the-file"),
        pytest.param("../secret.toml", {}, 400, id="out-of-the-folders"),
        pytest.param("scenarios/none.toml", {}, 404, id="no-such-file"),
        pytest.param("", {}, 400, id="empty"),
        pytest.param(SCENARIO.format(level=0.6), {"seed": "x"}, 400, id="bad-seed"),
        pytest.param(SCENARIO.format(level=0.6), {"fork": "nope"}, 404, id="unknown-fork"),
    ])
    async def test_refusals_match_run_scenarios(self, web: Web, scenario: str,
                                                options: dict[str, Any], http: int) -> None:
        """A scenario with errors, a file name outside the scenario folders or not in
        them, bad options: the REST refusal carries RunScenario's status and message,
        and nothing runs."""
        before = len((await web.call("GET", "/api/scenarios"))[1])
        async with await _opcua_client(web) as client:
            result = await _run_scenario(client, scenario, json.dumps(options))
        got, answer = await web.call("POST", "/api/scenarios",
                                     {"scenario": scenario, **options})
        assert got == http and (answer["status"], answer["message"]) == (
            result.StatusCode.name, message(result)), answer
        assert len((await web.call("GET", "/api/scenarios"))[1]) == before

    async def test_a_viewer_may_not_run_one(self, web: Web) -> None:
        """Running a scenario needs RunScenario's role (an operator's)."""
        got, answer = await web.call("POST", "/api/scenarios",
                                     {"scenario": SCENARIO.format(level=0.6)},
                                     role=Role.VIEWER)
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        got, answer = await web.call("GET", "/api/scenarios/nope/report")
        assert (got, answer["status"]) == (404, "BadNotFound")


class TestFaults:
    async def test_inject_list_clear_and_clear_all(self, web: Web) -> None:
        """A fault injected over REST is listed (and in the session, as InjectFault's),
        acts on its target, and ends with DELETE of it or of them all."""
        assert (await web.call("POST", "/api/sessions",
                               {"twin": "plant", "name": "faulty"}))[0] == 201
        path = "/api/sessions/faulty/faults"
        try:
            got, fault = await web.call("POST", path, {
                "target": "setpoint.Outputs.output", "kind": "stuck",
                "parameters": {"value": 7.0}, "id": "stuck7"}, role=Role.OPERATOR)
            assert got == 201, fault
            assert (fault["id"], fault["kind"], fault["parameters"], fault["duration"]) == (
                "stuck7", "stuck", {"value": 7.0}, None)
            await _until(web, "/api/sessions/faulty/components/setpoint/outputs/output",
                         lambda v: v["value"] == 7.0)
            got, second = await web.call("POST", path, {
                "target": "tank.Inputs.inflow", "kind": "offset",
                "parameters": '{"offset": 0.01}'})
            assert got == 201 and second["id"] == "f1", second
            states = await web.daemon.manager.get("faulty").session.faults()
            assert [f.id for f in states] == ["stuck7", "f1"]
            assert [f["id"] for f in (await web.call("GET", path))[1]] == ["stuck7", "f1"]
            assert (await web.call("DELETE", path + "/stuck7", role=Role.OPERATOR))[0] == 204
            assert [f["id"] for f in (await web.call("GET", path))[1]] == ["f1"]
            got, answer = await web.call("DELETE", path + "/stuck7")
            assert (got, answer["status"]) == (404, "BadNotFound")
            assert (await web.call("DELETE", path))[1] == {"cleared": ["f1"]}
            assert (await web.call("GET", path))[1] == []
        finally:
            await web.call("DELETE", "/api/sessions/faulty")

    async def test_a_timed_fault_shows_what_remains_and_ends_by_itself(self, web: Web) -> None:
        """A fault with a duration lists its remaining simulated time and is gone
        once it ran out, with its start and end among the session's events."""
        path = SESSION + "/faults"
        got, fault = await web.call("POST", path, {
            "target": "setpoint.Outputs.output", "kind": "offset",
            "parameters": {"offset": 0.0}, "duration": 0.3})
        assert got == 201, fault
        assert fault["duration"] == pytest.approx(0.3)
        assert 0 < fault["remaining"] <= 0.3
        await _until(web, path, lambda faults: fault["id"] not in [f["id"] for f in faults])

    async def test_refusals_match_inject_faults(self, web: Web) -> None:
        """A malformed target, an unknown kind, bad parameters, an unknown variable,
        a negative duration and a taken id: the REST refusal carries the status name
        and message of the OPC UA InjectFault call; a viewer may not inject."""
        path = SESSION + "/faults"
        assert (await web.call("POST", path, {"target": "tank.Outputs.level",
                                              "kind": "stuck", "id": "taken"}))[0] == 201
        cases = [
            ("tank.level", "stuck", "", 0.0, ""),
            ("tank.Outputs.level", "melted", "", 0.0, ""),
            ("tank.Outputs.level", "noise", '{"sigma": -1}', 0.0, ""),
            ("tank.Outputs.level", "offset", '{"offset": 1, "nope": 2}', 0.0, ""),
            ("tank.Outputs.nothing", "stuck", "", 0.0, ""),
            ("tank.Outputs.level", "stuck", "", -1.0, ""),
            ("tank.Outputs.level", "stuck", "", 0.0, "taken"),
        ]
        client = Client(web.daemon.endpoint_url, timeout=10)
        client.set_user(USERS[Role.ADMIN])
        client.set_password(PASSWORD)
        try:
            async with client:
                ns = await client.get_namespace_index("urn:twin-server")
                for target, kind, parameters, duration, fault_id in cases:
                    (result,) = await client.uaclient.call([ua.CallMethodRequest(
                        ObjectId=ua.NodeId("Sessions.main", ns),
                        MethodId=ua.NodeId("Sessions.main.InjectFault", ns),
                        InputArguments=[s(target), s(kind), s(parameters),
                                        ua.Variant(duration, ua.VariantType.Double),
                                        s(fault_id)])])
                    got, rest = await web.call("POST", path, {
                        "target": target, "kind": kind, "parameters": parameters,
                        "duration": duration, "id": fault_id})
                    assert not result.StatusCode.is_good()
                    assert got >= 400 and (rest["status"], rest["message"]) == (
                        result.StatusCode.name, message(result)), (target, kind, rest)
        finally:
            await web.call("DELETE", path + "/taken")
        got, answer = await web.call("POST", path, {"target": "tank.Outputs.level",
                                                    "kind": "stuck"}, role=Role.VIEWER)
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        got, answer = await web.call("POST", path, {"target": "tank.Outputs.level",
                                                    "kind": "stuck", "parameters": [1]})
        assert (got, answer["status"]) == (400, "BadTypeMismatch")

    async def test_the_live_feed_carries_the_fault_counter(self, web: Web) -> None:
        """The WebSocket's frames carry the session's fault counter, which moves when
        a fault is injected."""
        async with web.http.ws_connect(web.url + SESSION + "/live",
                                       headers=web.headers[Role.ADMIN]) as socket:
            await socket.receive_json()  # the layout
            first = await socket.receive_json()
            got, fault = await web.call("POST", SESSION + "/faults", {
                "target": "setpoint.Outputs.output", "kind": "offset",
                "parameters": {"offset": 0.0}})
            assert got == 201
            try:
                async with asyncio.timeout(10):
                    while (await socket.receive_json()).get("faults") == first["faults"]:
                        pass
            finally:
                await web.call("DELETE", f"{SESSION}/faults/{fault['id']}")


# -- campaign runs -------------------------------------------------------------------------

#: 400 runs of 30 s at 0.01 s: minutes on one worker (halted long before)
LONG_CAMPAIGN = """
[campaign]
name = "long"
config = "plant.toml"
session = "main"
duration = 30.0
[parameters]
"tank.area" = { range = [0.3, 0.9], steps = 400 }
[summary."tank.level"]
"""


async def _run_campaign(client: Client, campaign: str) -> ua.CallMethodResult:
    ns = await client.get_namespace_index("urn:twin-server")
    (result,) = await client.uaclient.call([ua.CallMethodRequest(
        ObjectId=ua.NodeId("TwinServer", ns), MethodId=ua.NodeId("RunCampaign", ns),
        InputArguments=[s(campaign)])])
    return result


async def _campaign_value(client: Client, run: str, name: str) -> Any:
    ns = await client.get_namespace_index("urn:twin-server")
    return await client.get_node(ua.NodeId(f"Campaigns.{run}.{name}", ns)).read_value()


class TestCampaigns:
    async def test_a_campaign_runs_with_its_results_and_shows_in_opc_ua(self, web: Web
                                                                         ) -> None:
        """POST /api/campaigns runs a campaign file as RunCampaign: it shows under
        Campaigns/ in OPC UA, ends finished, its summary table pages through its runs
        with their parameters and figures, its report comes as Markdown and as HTML
        with its SVG plots inline, each plot alone, all under a strict CSP."""
        got, run = await web.call("POST", "/api/campaigns", {"campaign": "tiny.toml"},
                                  role=Role.OPERATOR)
        assert got == 201 and (run["name"], run["total"]) == ("tiny", 3), run
        async with await _opcua_client(web) as client:
            assert await _campaign_value(client, run["id"], "Total") == 3
            run = await _until(web, f"/api/campaigns/{run['id']}",
                               lambda r: r["state"] != "running", timeout=60)
            assert (await _campaign_value(client, run["id"], "CurrentState")).Text == "Halted"
        assert (run["state"], run["ok"], run["progress"]) == ("finished", 3, 100.0), run
        base = f"/api/campaigns/{run['id']}"
        got, page = await web.call("GET", base + "/runs?limit=2", role=Role.VIEWER)
        assert got == 200 and (page["total"], page["next_offset"]) == (3, 2), page
        assert page["parameters"] == ["tank.area"] and page["figures"], page
        assert [(r["tank.area"], r["status"]) for r in page["rows"]] == [
            (0.4, "ok"), (0.5, "ok")]
        assert all(isinstance(r[page["figures"][0]], float) for r in page["rows"])
        _, rest = await web.call("GET", base + "/runs?offset=2&limit=2")
        assert [r["tank.area"] for r in rest["rows"]] == [0.6] and rest["next_offset"] is None
        got, answer = await web.call("GET", base + "/runs?limit=0")
        assert (got, answer["status"]) == (400, "BadInvalidArgument")
        async with web.http.get(web.url + base + "/report") as response:
            markdown = await response.text()
            assert response.content_type == "text/markdown"
        assert markdown.startswith("# Campaign tiny") and "3 ok" in markdown
        plots = re.findall(r"\]\(([^)]+\.svg)\)", markdown)
        assert plots, markdown
        async with web.http.get(web.url + base + "/report.html") as response:
            page_html = await response.text()
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert page_html.count("<svg") == len(plots) and "<script" not in page_html
        async with web.http.get(f"{web.url}{base}/plots/{plots[0]}") as response:
            assert response.content_type == "image/svg+xml"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            assert (await response.text()).startswith("<svg")
        got, answer = await web.call("GET", base + "/plots/..%2Fresults.sqlite")
        assert (got, answer["status"]) == (404, "BadNotFound")
        _, runs = await web.call("GET", "/api/campaigns", role=None)
        assert run["id"] in [r["id"] for r in runs]

    async def test_one_started_over_opc_ua_is_listed_and_halted_over_rest(self, web: Web
                                                                          ) -> None:
        """A campaign RunCampaign started is listed here; while it runs another is
        BadResourceUnavailable and its report BadInvalidState; a viewer may not halt
        it, an operator does (Halted in OPC UA); halting again is BadInvalidState."""
        async with await _opcua_client(web) as client:
            result = await _run_campaign(client, LONG_CAMPAIGN)
            assert result.StatusCode.is_good(), message(result)
            run_id = str(result.OutputArguments[0].Value.Identifier).removeprefix(
                "Campaigns.")
            _, runs = await web.call("GET", "/api/campaigns")
            assert runs[0]["id"] == run_id and runs[0]["state"] == "running"
            got, answer = await web.call("POST", "/api/campaigns", {"campaign": "tiny.toml"})
            assert (got, answer["status"]) == (503, "BadResourceUnavailable")
            got, answer = await web.call("GET", f"/api/campaigns/{run_id}/report")
            assert (got, answer["status"]) == (409, "BadInvalidState")
            got, answer = await web.call("POST", f"/api/campaigns/{run_id}/halt",
                                         role=Role.VIEWER)
            assert (got, answer["status"]) == (403, "BadUserAccessDenied")
            got, run = await web.call("POST", f"/api/campaigns/{run_id}/halt",
                                      role=Role.OPERATOR)
            assert got == 200 and run["state"] == "cancelled", run
            assert (await _campaign_value(client, run_id, "CurrentState")).Text == "Halted"
        got, answer = await web.call("POST", f"/api/campaigns/{run_id}/halt")
        assert (got, answer["status"]) == (409, "BadInvalidState")

    @pytest.mark.parametrize(("campaign", "http"), [
        pytest.param(CAMPAIGN.replace('"tank.area"', '"tank.arae"'), 400, id="errors"),
        pytest.param(CAMPAIGN.replace('"plant.toml"', '"../users.json"'), 400,
                     id="config-out-of-the-folders"),
        pytest.param("../tiny.toml", 400, id="file-out-of-the-folders"),
        pytest.param("none.toml", 404, id="no-such-file"),
        pytest.param("", 400, id="empty"),
    ])
    async def test_refusals_match_run_campaigns(self, web: Web, campaign: str, http: int
                                                ) -> None:
        """A campaign with errors, one naming a config outside the scenario folders, a
        file outside them or not in them: RunCampaign's status and message, nothing
        runs."""
        before = len((await web.call("GET", "/api/campaigns"))[1])
        async with await _opcua_client(web) as client:
            result = await _run_campaign(client, campaign)
        got, answer = await web.call("POST", "/api/campaigns", {"campaign": campaign})
        assert got == http and (answer["status"], answer["message"]) == (
            result.StatusCode.name, message(result)), answer
        assert len((await web.call("GET", "/api/campaigns"))[1]) == before

    async def test_without_dask_it_is_not_supported(self, web: Web,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """Where distributed cannot be imported, POST /api/campaigns answers
        RunCampaign's BadNotSupported naming the extra to install."""
        monkeypatch.setitem(sys.modules, "distributed", None)
        async with await _opcua_client(web) as client:
            result = await _run_campaign(client, "tiny.toml")
        got, answer = await web.call("POST", "/api/campaigns", {"campaign": "tiny.toml"})
        assert (got, answer["status"]) == (501, result.StatusCode.name) == (
            501, "BadNotSupported")
        assert "twin-server[campaigns]" in answer["message"]

    async def test_a_viewer_may_not_run_one(self, web: Web) -> None:
        """Running a campaign needs RunCampaign's role (an operator's); an unknown run
        is BadNotFound."""
        got, answer = await web.call("POST", "/api/campaigns", {"campaign": "tiny.toml"},
                                     role=Role.VIEWER)
        assert (got, answer["status"]) == (403, "BadUserAccessDenied")
        got, answer = await web.call("GET", "/api/campaigns/nope")
        assert (got, answer["status"]) == (404, "BadNotFound") and "nope" in answer["message"]


class TestCoverage:
    async def test_every_documented_route_was_exercised(self, web: Web) -> None:
        """The tests of this module called every route of the document (run last)."""
        assert web.daemon.web is not None
        _, document = await web.call("GET", "/api/openapi.json")
        documented = {op["operationId"] for ops in document["paths"].values()
                      for op in ops.values()}
        assert documented - set(web.daemon.web.calls) == set()
