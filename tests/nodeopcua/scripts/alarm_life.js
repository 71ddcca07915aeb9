// An alarm's whole life as a node-opcua SCADA sees it: subscribed to events on the
// Server object with node-opcua's own Part 9 filter (every field of the alarm type,
// as extractConditionFields finds them, where OfType AcknowledgeableConditionType),
// the level driven over High and HighHigh by writing the tank's inflow, the alarm
// acknowledged and confirmed with the EventId of the event answered, a viewer's
// Acknowledge, ConditionRefresh, back to normal, then shelved with ShelvingState's
// TimedShelve and unshelved.
// args: endpoint, session (its name), alarm (its name), viewer {user, password}.
// Returns {fields, steps: [{step, ...}], events: [flat event]} where each event holds
// the non-null fields by their dotted names (e.g. "ActiveState.Id"), and each step
// what the client did and what the server answered.
"use strict";
const { main, withSession, twinNamespace, plain } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => {
    const ns = await twinNamespace(session);
    const tank = `Sessions.${args.session}.Components.tank`;
    const fields = await opcua.extractConditionFields(session, "ExclusiveLimitAlarmType");
    const filter = opcua.constructEventFilter(
        fields, opcua.ofType("AcknowledgeableConditionType"));
    const subscription = await session.createSubscription2({
        requestedPublishingInterval: 50, requestedLifetimeCount: 600,
        requestedMaxKeepAliveCount: 20, maxNotificationsPerPublish: 0,
        publishingEnabled: true, priority: 1,
    });
    const events = [];
    let arrived = () => {};
    const item = await subscription.monitor(
        { nodeId: "i=2253", attributeId: opcua.AttributeIds.EventNotifier },
        { samplingInterval: 0, queueSize: 1000, discardOldest: false, filter },
        opcua.TimestampsToReturn.Both);
    item.on("changed", (eventFields) => {
        const event = {};
        fields.forEach((name, i) => {
            const variant = eventFields[i];
            if (variant && variant.dataType !== opcua.DataType.Null) {
                event[name] = plain(variant.value);
            }
        });
        event.eventIdBuffer = eventFields[fields.indexOf("EventId")].value;
        events.push(event);
        arrived();
    });
    const steps = [];
    // the first event after `from` that passes `check`
    async function until(label, check, from, timeout = 10000) {
        const deadline = Date.now() + timeout;
        for (;;) {
            const found = events.slice(from).find(check);
            if (found) {
                return found;
            }
            if (Date.now() > deadline) {
                throw new Error(`${label}: not within ${timeout} ms; events: ` +
                                JSON.stringify(events.map(({ eventIdBuffer, ...e }) => e)));
            }
            await new Promise((resolve) => {
                arrived = resolve;
                setTimeout(resolve, 100);
            });
        }
    }
    const eventType = (name) => opcua.resolveNodeId(name).toString();
    const ofAlarm = (e) => e.ConditionName === args.alarm;
    async function write(path, value) {
        const status = await session.write({
            nodeId: ns(`${tank}.${path}`), attributeId: opcua.AttributeIds.Value,
            value: { value: { dataType: opcua.DataType.Double, value } } });
        steps.push({ step: `write ${path} = ${value}`, status: status.name });
    }
    async function call(label, fn) {
        const status = await fn();
        steps.push({ step: label, status: status.name });
        return status;
    }

    // inactive: what a refresh shows of it (nothing, it is not retained)
    await call("ConditionRefresh (inactive)",
               () => opcua.callConditionRefresh(session, subscription.subscriptionId));
    await until("RefreshEnd (inactive)", (e) => e.EventType === eventType("RefreshEndEventType"), 0);
    let mark = events.length;
    // over High: the tank fills at 0.25 m/s; stop once the alarm says so
    await write("Inputs.inflow", 0.25);
    const high = await until("High active", (e) => ofAlarm(e) && e["ActiveState.Id"], mark);
    await write("Inputs.inflow", 0.0);
    // a viewer may see the alarm but not acknowledge it
    await withSession({ ...args, ...args.viewer }, async (viewer) => call(
        "viewer Acknowledge",
        () => viewer.acknowledgeCondition(high.ConditionId, high.eventIdBuffer, "viewer")));
    // the operator acknowledges, then confirms, each with the EventId of the latest event
    mark = events.length;
    await call("Acknowledge", () => session.acknowledgeCondition(
        high.ConditionId, high.eventIdBuffer, "on my way"));
    const acked = await until("acknowledged", (e) => ofAlarm(e) && e["AckedState.Id"], mark);
    await call("Acknowledge again", () => session.acknowledgeCondition(
        acked.ConditionId, acked.eventIdBuffer, "twice"));
    mark = events.length;
    await call("Confirm", () => session.confirmCondition(
        acked.ConditionId, acked.eventIdBuffer, "checked"));
    const confirmed = await until("confirmed", (e) => ofAlarm(e) && e["ConfirmedState.Id"], mark);
    await call("Acknowledge with a stale EventId", () => session.acknowledgeCondition(
        high.ConditionId, high.eventIdBuffer, "stale"));
    // the condition's methods as node-opcua finds them (a browse path from it), AddComment
    const methods = {};
    for (const name of ["Enable", "Disable", "AddComment", "Acknowledge", "Confirm"]) {
        methods[name] = (await session.findMethodId(high.ConditionId, name)).toString();
    }
    mark = events.length;
    await call("AddComment", () => session.addCommentCondition(
        confirmed.ConditionId, confirmed.eventIdBuffer, "level sensor checked"));
    const commented = await until("comment", (e) => ofAlarm(e) &&
        e.Comment === "level sensor checked", mark);
    // ConditionRefresh: RefreshStart, the retained condition as it is, RefreshEnd
    mark = events.length;
    await call("ConditionRefresh (active)",
               () => opcua.callConditionRefresh(session, subscription.subscriptionId));
    await until("RefreshEnd (active)", (e) => e.EventType === eventType("RefreshEndEventType"), mark);
    const refreshed = events.slice(mark);
    // HighHigh: a new alarm, to acknowledge again
    mark = events.length;
    await write("Inputs.inflow", 1.0);
    const highHigh = await until("HighHigh", (e) => ofAlarm(e) &&
        e["LimitState.CurrentState"] === "HighHigh", mark);
    await write("Inputs.inflow", 0.0);
    // back to normal (the level written down), then acknowledged and confirmed
    mark = events.length;
    await write("States.level", 0.5);
    const normal = await until("normal", (e) => ofAlarm(e) && e["ActiveState.Id"] === false,
                               mark);
    const before = events.length;
    await call("Acknowledge (normal)", () => session.acknowledgeCondition(
        normal.ConditionId, normal.eventIdBuffer, ""));
    const normalAcked = await until("acknowledged (normal)",
                                    (e) => ofAlarm(e) && e["AckedState.Id"], before);
    await call("Confirm (normal)", () => session.confirmCondition(
        normalAcked.ConditionId, normalAcked.eventIdBuffer, ""));
    await until("confirmed (normal)", (e) => ofAlarm(e) && e.Retain === false, mark);
    mark = events.length;
    await call("ConditionRefresh (normal)",
               () => opcua.callConditionRefresh(session, subscription.subscriptionId));
    await until("RefreshEnd (normal)", (e) => e.EventType === eventType("RefreshEndEventType"), mark);
    const refreshedNormal = events.slice(mark);
    // shelving: ShelvingState's methods as a client finds them (a browse from it)
    const shelvingState = ns(`Sessions.${args.session}.Alarms.${args.alarm}.ShelvingState`);
    const shelvingMethods = {};
    for (const name of ["TimedShelve", "OneShotShelve", "Unshelve"]) {
        shelvingMethods[name] = await session.findMethodId(shelvingState, name);
    }
    const shelve = (label, name, inputArguments = []) => call(label, async () => (
        await session.call({ objectId: shelvingState, methodId: shelvingMethods[name],
                             inputArguments })).statusCode);
    const duration = (ms) => [{ dataType: opcua.DataType.Double, value: ms }];
    const readShelving = async () => (await session.read({
        nodeId: ns(`Sessions.${args.session}.Alarms.${args.alarm}.ShelvingState.CurrentState`),
        attributeId: opcua.AttributeIds.Value })).value.value.text;
    await shelve("TimedShelve over MaxTimeShelved", "TimedShelve", duration(8 * 3600000 + 1));
    mark = events.length;
    await shelve("TimedShelve", "TimedShelve", duration(60000));
    const shelved = await until("shelved", (e) => ofAlarm(e) && e.SuppressedOrShelved, mark);
    const shelvingRead = await readShelving();
    await shelve("TimedShelve again", "TimedShelve", duration(60000));
    mark = events.length;
    await shelve("Unshelve", "Unshelve");
    const unshelved = await until("unshelved", (e) => ofAlarm(e) &&
        e.SuppressedOrShelved === false, mark);
    await shelve("Unshelve again", "Unshelve");
    await subscription.terminate();
    const strip = ({ eventIdBuffer, ...e }) => e;
    return {
        fields, steps, methods, commented: strip(commented), events: events.map(strip), high: strip(high), highHigh: strip(highHigh),
        confirmed: strip(confirmed), refreshed: refreshed.map(strip),
        refreshedNormal: refreshedNormal.map(strip),
        shelvingMethods: Object.fromEntries(Object.entries(shelvingMethods).map(
            ([name, id]) => [name, id.toString()])),
        shelved: strip(shelved), unshelved: strip(unshelved), shelvingRead,
        shelvingReadAfter: await readShelving(),
    };
}));
