// The official TypeScript SDK's stdio client spawning 'nefia mcp connect',
// as Claude Desktop or Claude Code would.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

import { State, connectArgs, nefiaBin, startGateway, structured } from './helpers.mjs';

describe('TypeScript SDK stdio client through nefia mcp connect', { timeout: 120_000 }, () => {
  const state = new State();
  let gw;

  before(async () => {
    state.init();
    state.issue('ops', 'operator');
    gw = await startGateway(state);
  });

  after(async () => {
    await gw?.stop();
    state.cleanup();
  });

  it('lists the eight tools and calls four of them as an operator', async () => {
    const transport = new StdioClientTransport({ command: nefiaBin(), args: connectArgs(state, gw.addr, 'ops'), stderr: 'pipe' });
    let stderr = '';
    transport.stderr?.on('data', (d) => { stderr += d; });
    const client = new Client({ name: 'nefia-e2e-stdio', version: '1.0.0' });
    await client.connect(transport);
    try {
      const { tools } = await client.listTools();
      assert.equal(tools.length, 8);

      const st = structured(await client.callTool({ name: 'nefia.mtls.status', arguments: {} }));
      assert.equal(st.caller.name, 'ops');
      assert.equal(st.caller.transport, 'mtls-stream');

      const issued = structured(await client.callTool({ name: 'nefia.mtls.issue_client', arguments: { name: 'e2e-bot', duration: '1h' } }));
      assert.match(issued.serial, /^[0-9a-f]+$/);

      const revoked = structured(await client.callTool({ name: 'nefia.mtls.revoke', arguments: { serial: issued.serial, reason: 'e2e' } }));
      assert.equal(revoked.serial, issued.serial);

      // Last, because it replaces the CA that admitted this very session.
      const init = structured(await client.callTool({ name: 'nefia.mtls.init', arguments: { hosts: ['localhost', '127.0.0.1'], force: true } }));
      assert.ok(init.ca, `init result: ${JSON.stringify(init)}`);
    } finally {
      await client.close();
    }
    assert.doesNotMatch(stderr, /level=(ERROR|WARN)/, stderr);
  });
});
