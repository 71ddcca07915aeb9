// Call methods in one Call request. args: endpoint, calls: [{objectId, methodId,
// inputArguments: [{dataType, value}]}], user/password optional. Prints {results:
// [{status, outputs, diagnostics}]}, or {fault: name} for a ServiceFault.
"use strict";
const { main, withSession, plain } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => {
    const requests = args.calls.map(({ objectId, methodId, inputArguments }) => ({
        objectId, methodId,
        inputArguments: (inputArguments || []).map(({ dataType, value }) => ({
            dataType: opcua.DataType[dataType], value })),
    }));
    try {
        const results = await session.call(requests);
        return { results: results.map((r) => ({
            status: r.statusCode.name,
            outputs: plain(r.outputArguments || []),
            diagnostics: (r.inputArgumentDiagnosticInfos || [])
                .map((d) => (d && d.additionalInfo) || null),
        })) };
    } catch (err) {
        const match = /Bad\w+/.exec(err.message);
        return { fault: match ? match[0] : err.message };
    }
}));
