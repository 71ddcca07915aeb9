// Force inputs of a session by writing them, release them with ReleaseInput(Name) and
// ReleaseInputs(), and read ForcedInputs after each step, all through node-opcua's
// write, call and read.
// args: endpoint, session (its name), inputs: {"component.input": value (a Double)},
// release: the input ReleaseInput names.
// Prints {arguments: {ReleaseInput: [input names], ReleaseInputs: [output names]},
// forced: ForcedInputs (value, dataType, arrayType) once every write shows,
// releaseInput: CallMethodResult, afterReleaseInput: ForcedInputs,
// releaseInputs: CallMethodResult, afterReleaseInputs: ForcedInputs}.
"use strict";
const { main, withSession, twinNamespace } = require("./lib");

main(async (args, opcua) => withSession(args, async (session) => {
    const ns = await twinNamespace(session);
    const base = `Sessions.${args.session}`;
    const object = ns(base);
    const method = (name) => ns(`${base}.${name}`);
    const input = (name) => {
        const [component, variable] = name.split(".");
        return ns(`${base}.Components.${component}.Inputs.${variable}`);
    };

    const variant = (v) => ({ dataType: opcua.DataType[v.dataType],
                              arrayType: opcua.VariantArrayType[v.arrayType], value: v.value });
    async function forced() {
        const dv = await session.read({ nodeId: ns(`${base}.ForcedInputs`),
                                        attributeId: opcua.AttributeIds.Value });
        return { status: dv.statusCode, ...variant(dv.value) };
    }
    // ForcedInputs follows the session's publish period: wait until it shows `names`
    async function until(names) {
        const deadline = Date.now() + 5000;
        for (;;) {
            const shown = await forced();
            const now = Array.from(shown.value || []).sort();
            if (JSON.stringify(now) === JSON.stringify([...names].sort())) {
                return shown;
            }
            if (Date.now() > deadline) {
                throw new Error(`ForcedInputs still ${JSON.stringify(shown)}, not ${names}`);
            }
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
    }
    const argumentNames = async (name) => {
        const { inputArguments, outputArguments } =
            await session.getArgumentDefinition(method(name));
        return { inputs: inputArguments.map((a) => a.name),
                 outputs: outputArguments.map((a) => a.name) };
    };
    const call = async (name, inputArguments = []) => {
        const result = await session.call({ objectId: object, methodId: method(name),
                                            inputArguments });
        return { status: result.statusCode, inputArgumentResults: result.inputArgumentResults,
                 outputArguments: (result.outputArguments || []).map(variant) };
    };

    const written = await session.write(Object.entries(args.inputs).map(([name, value]) => ({
        nodeId: input(name), attributeId: opcua.AttributeIds.Value,
        value: { value: { dataType: opcua.DataType.Double, value } },
    })));
    const names = Object.keys(args.inputs);
    const result = { written, arguments: { ReleaseInput: await argumentNames("ReleaseInput"),
                                           ReleaseInputs: await argumentNames("ReleaseInputs") } };
    result.forced = await until(names);
    result.releaseInput = await call("ReleaseInput", [
        { dataType: opcua.DataType.String, value: args.release }]);
    result.afterReleaseInput = await until(names.filter((n) => n !== args.release));
    result.releaseInputs = await call("ReleaseInputs");
    result.afterReleaseInputs = await until([]);
    return result;
}));
