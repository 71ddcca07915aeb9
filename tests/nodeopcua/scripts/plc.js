// A soft PLC on node-opcua: the tank loop of tests/hil/soft_plc.py (which is asyncua)
// on another stack, which revises small publishing and sampling intervals up (to
// 50 ms) as many PLCs do. Started by NodeOpcua.spawn("plc.js", port=0); serves
// opc.tcp://127.0.0.1:<port>/plc, namespace urn:soft-plc, under Objects/PLC:
//
//   PLC.Level     Float   writable   the tank level the twin sends (m)
//   PLC.Setpoint  Double  writable   the level setpoint (m)
//   PLC.Valve     Double  read-only  the valve command, every scan:
//                                    clamp(bias + kp * (setpoint - level), 0, valve_max)
//   PLC.EchoIn    Double  writable   copied to EchoOut every scan (round trip)
//   PLC.EchoOut   Double  read-only
//
// args: port (0: any free port), scan (ms, 10), setpoint (1.0), kp (0.2), bias (0.05),
// valve_max (0.5). Prints {"ready": true, "port", "endpoint", "minimumPublishingInterval",
// "minimumSamplingInterval"} when it serves, then a line per subscription created or
// modified ({"subscription": {"publishingInterval"}}) and per monitored item
// ({"monitoredItem": {"nodeId", "samplingInterval"}}): what node-opcua revised.
"use strict";

const path = require("path");
const { args, opcua, emit } = require("./lib");

const NAMESPACE = "urn:soft-plc";

async function start() {
    const pki = path.join(__dirname, "..", "node_modules", ".pki-plc");
    const server = new opcua.OPCUAServer({
        port: args.port || 0,
        hostname: "127.0.0.1",
        host: "127.0.0.1",
        resourcePath: "/plc",
        securityPolicies: [opcua.SecurityPolicy.None],
        securityModes: [opcua.MessageSecurityMode.None],
        allowAnonymous: true,
        serverCertificateManager: new opcua.OPCUACertificateManager({
            rootFolder: pki, automaticallyAcceptUnknownCertificate: true,
        }),
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace(NAMESPACE);
    const plc = ns.addFolder(addressSpace.rootFolder.objects, { nodeId: "s=PLC",
                                                                 browseName: "PLC" });
    const nodes = {};
    function variable(name, dataType, value, writable) {
        const access = writable ? "CurrentRead | CurrentWrite" : "CurrentRead";
        nodes[name] = ns.addVariable({
            componentOf: plc, nodeId: `s=PLC.${name}`, browseName: name, dataType,
            accessLevel: access, userAccessLevel: access,
            value: { dataType: opcua.DataType[dataType], value },
        });
    }
    const read = (name) => nodes[name].readValue().value.value;
    const write = (name, value) => nodes[name].setValueFromSource(
        { dataType: opcua.DataType.Double, value });
    variable("Level", "Float", 0.0, true);
    variable("Setpoint", "Double", args.setpoint ?? 1.0, true);
    variable("Valve", "Double", 0.0, false);
    variable("EchoIn", "Double", 0.0, true);
    variable("EchoOut", "Double", 0.0, false);

    // the scan: what a PLC's cycle does (setValueFromSource notifies only on a change)
    const kp = args.kp ?? 0.2, bias = args.bias ?? 0.05, valveMax = args.valve_max ?? 0.5;
    setInterval(() => {
        write("Valve", Math.min(Math.max(bias + kp * (read("Setpoint") - read("Level")), 0.0),
                                valveMax));
        write("EchoOut", read("EchoIn"));
    }, args.scan || 10);

    server.on("create_session", (session) => {
        session.on("new_subscription", (subscription) => {
            emit({ subscription: { publishingInterval: subscription.publishingInterval } });
            subscription.on("monitoredItem", (item) => {
                emit({ monitoredItem: { nodeId: item.node ? item.node.nodeId.toString() : null,
                                        samplingInterval: item.samplingInterval } });
            });
        });
    });
    await server.start();
    const port = server.endpoints[0].port;
    emit({
        ready: true, port, endpoint: `opc.tcp://127.0.0.1:${port}/plc`,
        minimumPublishingInterval: opcua.Subscription.minimumPublishingInterval,
        minimumSamplingInterval: opcua.MonitoredItem.minimumSamplingInterval,
    });
}

start().catch((err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
});
