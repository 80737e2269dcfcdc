// The official TypeScript SDK over MCP Streamable HTTP, with the client
// certificate given to undici, whose fetch the transport uses.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Agent, fetch as undiciFetch } from 'undici';

import { State, startGateway, structured } from './helpers.mjs';

// connect returns an initialized SDK client presenting tls ({cert, key, ca})
// and the undici agent to close afterwards.
async function connect(url, tls) {
  const agent = new Agent({ connect: tls });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    fetch: (input, init) => undiciFetch(input, { ...init, dispatcher: agent }),
  });
  const client = new Client({ name: 'nefia-e2e-http', version: '1.0.0' });
  try {
    await client.connect(transport);
  } catch (err) {
    await agent.close();
    throw err;
  }
  return { client, close: async () => { await client.close(); await agent.close(); } };
}

describe('TypeScript SDK over Streamable HTTP', { timeout: 120_000 }, () => {
  const state = new State();
  const foreign = new State();
  let gw;
  let url;

  before(async () => {
    state.init();
    state.issue('ops', 'operator');
    state.issue('watcher', 'agent');
    foreign.init();
    foreign.issue('intruder', 'operator');
    gw = await startGateway(state);
    url = `https://${gw.addr}/mcp`;
  });

  after(async () => {
    await gw?.stop();
    state.cleanup();
    foreign.cleanup();
  });

  it('lists the tools and calls nefia.mtls.status as an operator', async () => {
    const { client, close } = await connect(url, { cert: state.pem('ops.crt'), key: state.pem('ops.key'), ca: state.pem('ca.crt') });
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['nefia.gateway.disconnect', 'nefia.gateway.sessions', 'nefia.mtls.init', 'nefia.mtls.issue_client', 'nefia.mtls.renew', 'nefia.mtls.renew_server', 'nefia.mtls.revoke', 'nefia.mtls.status']);
      const st = structured(await client.callTool({ name: 'nefia.mtls.status', arguments: {} }));
      assert.equal(st.enabled, true);
      assert.equal(st.caller.name, 'ops');
      assert.equal(st.caller.role, 'operator');
      assert.equal(st.caller.transport, 'mtls-http');
    } finally {
      await close();
    }
  });

  it('shows an agent only what it may call', async () => {
    const { client, close } = await connect(url, { cert: state.pem('watcher.crt'), key: state.pem('watcher.key'), ca: state.pem('ca.crt') });
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name), ['nefia.mtls.renew', 'nefia.mtls.status']);
      const denied = await client.callTool({ name: 'nefia.mtls.revoke', arguments: { serial: '01' } });
      assert.equal(denied.isError, true);
      assert.match(denied.content[0].text, /permission denied/);
    } finally {
      await close();
    }
  });

  it('refuses a client without a certificate', async () => {
    await assert.rejects(connect(url, { ca: state.pem('ca.crt') }));
  });

  it("refuses another CA's certificate", async () => {
    await assert.rejects(connect(url, { cert: foreign.pem('intruder.crt'), key: foreign.pem('intruder.key'), ca: state.pem('ca.crt') }));
  });
});
