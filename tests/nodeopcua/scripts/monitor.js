// Stay subscribed to twin-server variables and print every notification (long-running:
// started with NodeOpcua.spawn, killed by the test).
// args: endpoint, publishingInterval (ms, default 50), items: [{node (an identifier in
// urn:twin-server, e.g. "Sessions.main.SimTime"), samplingInterval (ms, default 0),
// deadband ({type: "Absolute" | "Percent", value}, optional)}], all created in one
// CreateMonitoredItems request, each with its own parameters.
// Prints {publishingInterval, items: [{status, revisedSamplingInterval}]} once the
// server answered, then one line per notification: {item (its index), status, value,
// sourceTimestamp, serverTimestamp}.
"use strict";
const { main, withSession, twinNamespace, emit } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => {
    const ns = await twinNamespace(session);
    const subscription = await session.createSubscription2({
        requestedPublishingInterval: args.publishingInterval || 50,
        requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 20,
        maxNotificationsPerPublish: 0, publishingEnabled: true, priority: 1,
    });
    // node-opcua's group makes one request of its items; each gets its own parameters
    // before the request goes out (the group sends it on the next turn of the loop)
    const group = opcua.ClientMonitoredItemGroup.create(
        subscription,
        args.items.map((item) => ({ nodeId: ns(item.node),
                                    attributeId: opcua.AttributeIds.Value })),
        { samplingInterval: 0, queueSize: 100, discardOldest: true },
        opcua.TimestampsToReturn.Both);
    group.monitoredItems.forEach((monitored, i) => {
        const item = args.items[i];
        monitored.monitoringParameters.samplingInterval = item.samplingInterval || 0;
        if (item.deadband) {
            monitored.monitoringParameters.filter = new opcua.DataChangeFilter({
                trigger: opcua.DataChangeTrigger.StatusValue,
                deadbandType: opcua.DeadbandType[item.deadband.type],
                deadbandValue: item.deadband.value,
            });
        }
    });
    // notifications that come before the answer is printed wait for it
    let ready = false;
    const pending = [];
    const print = (item, dataValue) => emit({
        item, status: dataValue.statusCode, value: dataValue.value.value,
        sourceTimestamp: dataValue.sourceTimestamp, serverTimestamp: dataValue.serverTimestamp,
    });
    group.on("changed", (_monitored, dataValue, item) => {
        if (ready) {
            print(item, dataValue);
        } else {
            pending.push([item, dataValue]);
        }
    });
    await new Promise((resolve, reject) => {
        group.once("initialized", resolve);
        group.once("err", (message) => reject(new Error(`CreateMonitoredItems: ${message}`)));
    });
    emit({
        publishingInterval: subscription.publishingInterval,
        items: group.monitoredItems.map((monitored) => ({
            status: monitored.statusCode,
            revisedSamplingInterval: monitored.result
                ? monitored.result.revisedSamplingInterval : null,
        })),
    });
    ready = true;
    pending.splice(0).forEach(([item, dataValue]) => print(item, dataValue));
    await new Promise(() => {});  // until the test kills it
}));
