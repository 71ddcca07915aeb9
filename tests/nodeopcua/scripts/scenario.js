// RunScenario through node-opcua: subscribe to the ScenarioFinished events of the
// Scenarios folder, call TwinServer.RunScenario(Scenario, [Options]), wait for the
// event of that run, then read the run's CurrentState, Verdict, Error and JUnit.
// args: endpoint, scenario (TOML text or a file name), options (JSON text, optional),
// timeout (ms to wait for the event, default 30000).
// Prints {status, diagnostics} when the call is refused, else {run, event: {run,
// scenario, verdict, passed, failed, errors, skipped, simTime, severity, message,
// sourceName}, state, verdict, error, junit}.
"use strict";
const { main, withSession, twinNamespace } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => {
    const ns = await twinNamespace(session);
    const index = (await session.readNamespaceArray()).indexOf("urn:twin-server");
    const fields = ["Run", "Scenario", "Verdict", "Passed", "Failed", "Errors", "Skipped",
                    "SimTime"];
    const filter = opcua.constructEventFilter(
        ["EventType", "SourceName", "Message", "Severity", ...fields.map((f) => `${index}:${f}`)]);
    const subscription = await session.createSubscription2({
        requestedPublishingInterval: 50, requestedLifetimeCount: 600,
        requestedMaxKeepAliveCount: 20, maxNotificationsPerPublish: 0,
        publishingEnabled: true, priority: 1,
    });
    const events = [];
    let wake = () => {};
    const monitored = await subscription.monitor(
        { nodeId: ns("Scenarios"), attributeId: opcua.AttributeIds.EventNotifier },
        { samplingInterval: 0, queueSize: 100, discardOldest: true, filter },
        opcua.TimestampsToReturn.Both);
    monitored.on("changed", (values) => {
        const [eventType, sourceName, message, severity, ...rest] = values.map((v) => v.value);
        const event = { eventType: eventType && eventType.toString(), sourceName,
                        message: message && message.text, severity };
        fields.forEach((f, i) => {
            event[f[0].toLowerCase() + f.slice(1)] = rest[i];
        });
        events.push(event);
        wake();
    });
    const inputArguments = [{ dataType: opcua.DataType.String, value: args.scenario }];
    if (args.options !== undefined) {
        inputArguments.push({ dataType: opcua.DataType.String, value: args.options });
    }
    const result = await session.call({ objectId: ns("TwinServer"), methodId: ns("RunScenario"),
                                        inputArguments });
    if (!result.statusCode.isGood()) {
        await subscription.terminate();
        return { status: result.statusCode.name,
                 diagnostics: (result.inputArgumentDiagnosticInfos || [])
                     .map((d) => (d && d.additionalInfo) || null) };
    }
    const nodeId = result.outputArguments[0].value;
    const run = nodeId.value.replace(/^Scenarios\./, "");
    const deadline = Date.now() + (args.timeout || 30000);
    let event;
    while (!(event = events.find((e) => e.run === run))) {
        const left = deadline - Date.now();
        if (left <= 0) {
            throw new Error(`no ScenarioFinished event of ${run} within ${args.timeout || 30000}`
                            + ` ms (events: ${JSON.stringify(events)})`);
        }
        await new Promise((resolve) => { wake = resolve; setTimeout(resolve, left); });
    }
    await subscription.terminate();
    const paths = ["CurrentState", "Verdict", "Error", "JUnit"];
    const values = await session.read(paths.map((p) => ({
        nodeId: ns(`Scenarios.${run}.${p}`), attributeId: opcua.AttributeIds.Value })));
    for (const [i, dv] of values.entries()) {
        if (!dv.statusCode.isGood()) {
            throw new Error(`reading Scenarios.${run}.${paths[i]}: ${dv.statusCode.name}`);
        }
    }
    const [state, verdict, error, junit] = values.map((dv) => dv.value.value);
    return { run, runNodeId: nodeId.toString(), event, state: state.text, verdict, error,
             junit };
}));
