// Day-2 operations (issue 14 item 1): with the TypeScript SDK connected over
// Streamable HTTP and another client through the bridge, an operator lists
// the live connections with nefia.gateway.sessions and ends exactly one of
// them with nefia.gateway.disconnect, without revoking anything.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Agent, fetch as undiciFetch } from 'undici';

import { State, connectArgs, nefiaBin, startGateway, structured } from './helpers.mjs';

describe('live sessions and disconnect', { timeout: 120_000 }, () => {
  const state = new State();
  let gw;

  before(async () => {
    state.init();
    state.issue('ops', 'operator');
    state.issue('watcher', 'agent');
    gw = await startGateway(state);
  });

  after(async () => {
    await gw?.stop();
    state.cleanup();
  });

  it('lists the SDK and bridge connections and disconnects exactly one', async () => {
    // The agent, over Streamable HTTP.
    const agent = new Agent({ connect: { cert: state.pem('watcher.crt'), key: state.pem('watcher.key'), ca: state.pem('ca.crt') } });
    const http = new Client({ name: 'nefia-e2e-sessions-http', version: '1.0.0' });
    await http.connect(new StreamableHTTPClientTransport(new URL(`https://${gw.addr}/mcp`), {
      fetch: (input, init) => undiciFetch(input, { ...init, dispatcher: agent }),
    }));
    // The operator, through the bridge.
    const ops = new Client({ name: 'nefia-e2e-sessions-stdio', version: '1.0.0' });
    await ops.connect(new StdioClientTransport({ command: nefiaBin(), args: connectArgs(state, gw.addr, 'ops'), stderr: 'pipe' }));
    try {
      await http.callTool({ name: 'nefia.mtls.status', arguments: {} });

      const listed = structured(await ops.callTool({ name: 'nefia.gateway.sessions', arguments: {} }));
      const byName = Object.fromEntries(listed.connections.map((c) => [c.name, c]));
      assert.equal(byName.watcher?.transport, 'mtls-http', JSON.stringify(listed));
      assert.equal(byName.watcher.role, 'agent');
      assert.ok(byName.watcher.calls >= 1, JSON.stringify(byName.watcher));
      assert.equal(byName.ops?.transport, 'mtls-stream', JSON.stringify(listed));

      // An agent may not list them.
      const refused = await http.callTool({ name: 'nefia.gateway.sessions', arguments: {} });
      assert.equal(refused.isError, true);

      const done = structured(await ops.callTool({ name: 'nefia.gateway.disconnect', arguments: { id: byName.watcher.id } }));
      assert.deepEqual(done.closed.map((c) => c.id), [byName.watcher.id]);

      const after = structured(await ops.callTool({ name: 'nefia.gateway.sessions', arguments: {} }));
      assert.ok(!after.connections.some((c) => c.id === byName.watcher.id), JSON.stringify(after));
      assert.ok(after.connections.some((c) => c.id === byName.ops.id), 'the bridge connection survives');
      // Not revoked: the agent's certificate still gets in.
      const again = structured(await http.callTool({ name: 'nefia.mtls.status', arguments: {} }));
      assert.equal(again.caller.name, 'watcher');
    } finally {
      await ops.close();
      await http.close();
      await agent.close();
    }
  });
});
