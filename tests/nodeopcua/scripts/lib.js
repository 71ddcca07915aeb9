// What every node-opcua test script shares: its arguments, a connected client and
// session, and its JSON result: printed on stdout when the script runs on its own
// (`NODEOPCUA_ARGS='{"endpoint": ...}' node read.js`), handed to runner.js when
// tests/nodeopcua/__init__.py runs it there. Anything else goes to stderr, which the
// test shows when the script fails.
//
//   const { main, withSession, plain } = require("./lib");   // from a script file
//   main(async (args, opcua) => withSession(args, async (session) => { ... return x; }));
//
// args: the JSON object the test passed (always with `endpoint`); optional `user` and
// `password` (a UserName identity, else anonymous), `policy` (a SecurityPolicy name such
// as "Basic256Sha256", default "None") and `mode` ("Sign" or "SignAndEncrypt").
//
// A long-running script (the test starts it with NodeOpcua.spawn) prints one JSON line
// when it is ready and more as things happen, with emit(), and never returns: the test
// kills it.
"use strict";

const path = require("path");
const opcua = require("node-opcua");

// stdout is for the result alone: node-opcua's own messages ("Creating default
// certificate ...") go to stderr
console.log = console.info = console.debug = console.error;

const NAMESPACE_URI = "urn:twin-server";

const args = JSON.parse(process.env.NODEOPCUA_ARGS || "{}");

// the client's own certificate store: made once per checkout (inside node_modules, so
// `npm ci` starts it afresh), not in the user's home
const PKI = process.env.NODEOPCUA_PKI || path.join(__dirname, "..", "node_modules", ".pki");

function identity(options) {
    if (options.user === undefined) {
        return { type: opcua.UserTokenType.Anonymous };
    }
    return { type: opcua.UserTokenType.UserName, userName: options.user,
             password: options.password || "" };
}

let certificateManager;

async function connect(options = args) {
    certificateManager = certificateManager || new opcua.OPCUACertificateManager({
        rootFolder: PKI, automaticallyAcceptUnknownCertificate: true,
    });
    const policy = options.policy || "None";
    const client = opcua.OPCUAClient.create({
        applicationName: "twin-server-tests",
        endpointMustExist: false,
        securityPolicy: opcua.SecurityPolicy[policy],
        securityMode: policy === "None" ? opcua.MessageSecurityMode.None
            : opcua.MessageSecurityMode[options.mode || "SignAndEncrypt"],
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        clientCertificateManager: certificateManager,
        requestedSessionTimeout: 60000,
    });
    await client.connect(options.endpoint);
    return client;
}

// run fn(session, client) in a session of a fresh connection; always disconnect
async function withSession(options, fn) {
    const client = await connect(options);
    let session;
    try {
        session = await client.createSession(identity(options));
        return await fn(session, client);
    } finally {
        if (session) {
            await session.close().catch((err) => console.error("close:", err.message));
        }
        await client.disconnect();
    }
}

// twin-server's namespace (urn:twin-server) in this session: a function that makes the
// NodeId string of an identifier in it, e.g. ns("Sessions.main.SimTime")
async function twinNamespace(session) {
    const namespaces = await session.readNamespaceArray();
    const index = namespaces.indexOf(NAMESPACE_URI);
    if (index < 0) {
        throw new Error(`the server has no namespace ${NAMESPACE_URI}: ${namespaces}`);
    }
    return (identifier) => `ns=${index};s=${identifier}`;
}

// a DataValue, a StatusCode or a Variant as plain JSON
function plain(x) {
    if (x === null || x === undefined) {
        return x;
    }
    if (x instanceof opcua.DataValue) {
        return { value: plain(x.value), status: x.statusCode.name,
                 sourceTimestamp: x.sourceTimestamp && x.sourceTimestamp.toISOString(),
                 serverTimestamp: x.serverTimestamp && x.serverTimestamp.toISOString() };
    }
    if (x instanceof opcua.Variant) {
        return plain(x.value);
    }
    if (x && x.constructor && x.constructor.name === "ConstantStatusCode") {
        return x.name;
    }
    if (x instanceof opcua.NodeId) {
        return x.toString();
    }
    if (x instanceof opcua.LocalizedText) {
        return x.text;
    }
    if (x instanceof opcua.QualifiedName) {
        return x.toString();
    }
    if (Array.isArray(x) || ArrayBuffer.isView(x)) {
        return Array.from(x, plain);
    }
    if (typeof x === "number" && !Number.isFinite(x)) {
        return String(x);  // JSON has no Infinity or NaN: "Infinity", "-Infinity", "NaN"
    }
    if (typeof x === "bigint") {
        return x.toString();
    }
    if (x instanceof Date) {
        return x.toISOString();
    }
    if (typeof x === "object") {
        if (typeof x.toJSON === "function") {
            return plain(JSON.parse(JSON.stringify(x)));
        }
        const out = {};
        for (const [key, value] of Object.entries(x)) {
            out[key] = plain(value);
        }
        return out;
    }
    return x;
}

// one JSON line on stdout now (a long-running script's output: NodeOpcua.spawn reads
// the first, the test the others)
function emit(x) {
    process.stdout.write(JSON.stringify(plain(x === undefined ? null : x)) + "\n");
}

// run the script's body; print its result as JSON, or its error on stderr and exit 1
// (in runner.js, which runs many scripts in one process: hand the body over)
function main(fn) {
    if (global.__nodeopcuaRunner) {
        global.__nodeopcuaRunner.register(fn);
        return;
    }
    fn(args, opcua).then(
        (result) => {
            process.stdout.write("\n" + JSON.stringify(plain(result === undefined ? null : result))
                                 + "\n");
            process.exit(0);
        },
        (err) => {
            console.error(err && err.stack ? err.stack : String(err));
            process.exit(1);
        },
    );
}

module.exports = { args, opcua, connect, withSession, identity, twinNamespace, plain, emit,
                   main, PKI };
