// Read attributes in one Read request. args: endpoint, nodes: [nodeId string, ...] or
// [{nodeId, attribute}] (an AttributeIds name, default "Value"); user/password
// optional. Prints one DataValue (plain JSON) per node, in order.
"use strict";
const { main, withSession } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => session.read(
    args.nodes.map((node) => (typeof node === "string" ? { nodeId: node } : node))
        .map(({ nodeId, attribute }) => ({
            nodeId, attributeId: opcua.AttributeIds[attribute || "Value"] })))));
