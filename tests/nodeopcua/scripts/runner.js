// One node process that runs many scripts (tests/nodeopcua/__init__.py starts it once
// per test module): loading node-opcua takes 1.5 s of CPU, over 10 s on a busy machine,
// which a process per script would pay every time.
//
// stdin: one JSON request a line, {id, script (a file name here) | source (inline
// code), args}; stdout: one JSON reply a line, {id, ok: true, result} or {id, ok:
// false, error}, after a first {ready: true}; before each reply, "@@nodeopcua-done
// ID" on stderr. Requests run one after the other. A
// script calls lib's main(fn): here that hands fn over instead of running it.
"use strict";

const path = require("path");
const Module = require("module");
const readline = require("readline");

const DONE = "@@nodeopcua-done";
const runner = { fn: undefined, register(fn) { this.fn = fn; } };
global.__nodeopcuaRunner = runner;
const lib = require("./lib");

const exit = process.exit.bind(process);
process.exit = (code) => {
    throw new Error(`the script called process.exit(${code})`);
};
process.on("unhandledRejection", (err) => console.error("unhandled rejection:", err));
process.on("uncaughtException", (err) => console.error("uncaught exception:", err));

function load(request) {
    runner.fn = undefined;
    if (request.script) {
        const file = path.join(__dirname, request.script);
        delete require.cache[require.resolve(file)];
        require(file);
    } else {
        const filename = path.join(__dirname, "(inline).js");
        const inline = new Module(filename, module);
        inline.filename = filename;
        inline.paths = Module._nodeModulePaths(__dirname);
        inline._compile(request.source, filename);
    }
    if (runner.fn === undefined) {
        throw new Error("the script did not call main(fn) of ./lib");
    }
    return runner.fn;
}

async function answer(request) {
    try {
        const result = await load(request)(request.args, lib.opcua);
        return { id: request.id, ok: true, result: lib.plain(result === undefined ? null : result) };
    } catch (err) {
        return { id: request.id, ok: false, error: (err && err.stack) || String(err) };
    }
}

let queue = Promise.resolve();
readline.createInterface({ input: process.stdin })
    .on("line", (line) => {
        const request = JSON.parse(line);
        queue = queue.then(async () => {
            const reply = await answer(request);
            // the end of the request's stderr, before its reply (the test waits for it)
            process.stderr.write(`${DONE} ${request.id}\n`);
            process.stdout.write(JSON.stringify(reply) + "\n");
        });
    })
    .on("close", () => queue.then(() => exit(0)));
process.stdout.write(JSON.stringify({ ready: true }) + "\n");
