// Write values in one Write request. args: endpoint, writes: [{nodeId, dataType (a
// DataType name such as "Double"), value}], user/password optional. Prints
// {statuses: [StatusCode name per write]}, or {fault: name} when the whole request
// was refused (a ServiceFault) instead of being answered per operation.
"use strict";
const { main, withSession } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => {
    const nodesToWrite = args.writes.map(({ nodeId, dataType, value }) => ({
        nodeId, attributeId: opcua.AttributeIds.Value,
        value: { value: { dataType: opcua.DataType[dataType], value } },
    }));
    try {
        const statuses = await session.write(nodesToWrite);
        return { statuses: statuses.map((s) => s.name) };
    } catch (err) {
        const match = /Bad\w+/.exec(err.message);
        return { fault: match ? match[0] : err.message };
    }
}));
