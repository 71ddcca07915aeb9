// Browse a node's children and read the Value of each variable among them.
// args: endpoint, node (a NodeId string, default the Objects folder); prints
// {browse: [{browseName, nodeId, nodeClass}], values: {browseName: DataValue}}
"use strict";
const { main, withSession } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => {
    const result = await session.browse(args.node || "i=85");
    if (result.statusCode !== opcua.StatusCodes.Good) {
        throw new Error(`browse ${args.node}: ${result.statusCode.name}`);
    }
    const browse = result.references.map((ref) => ({
        browseName: ref.browseName.toString(), nodeId: ref.nodeId.toString(),
        nodeClass: opcua.NodeClass[ref.nodeClass],
    }));
    const variables = browse.filter((ref) => ref.nodeClass === "Variable");
    const read = await session.read(variables.map((ref) => ({
        nodeId: ref.nodeId, attributeId: opcua.AttributeIds.Value })));
    const values = {};
    variables.forEach((ref, i) => { values[ref.browseName] = read[i]; });
    return { browse, values };
}));
