// GetEndpoints. args: endpoint. Prints [{url, policy, mode, applicationName,
// applicationUri, productUri, tokens}] per endpoint.
"use strict";
const { main, connect } = require("./lib");

main(async (args, opcua) => {
    const client = await connect(args);
    try {
        const endpoints = await client.getEndpoints();
        return endpoints.map((e) => ({
            url: e.endpointUrl,
            policy: e.securityPolicyUri.split("#")[1],
            mode: opcua.MessageSecurityMode[e.securityMode],
            applicationName: e.server.applicationName.text,
            applicationUri: e.server.applicationUri,
            productUri: e.server.productUri,
            tokens: e.userIdentityTokens.map((t) => opcua.UserTokenType[t.tokenType]),
        }));
    } finally {
        await client.disconnect();
    }
});
