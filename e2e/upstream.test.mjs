// A real third-party MCP server behind nefia: @modelcontextprotocol/server-everything
// (pinned in package-lock.json) as a stdio upstream of a running gateway,
// reached by the TypeScript SDK over mTLS Streamable HTTP and through
// 'nefia mcp connect'.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Agent, fetch as undiciFetch } from 'undici';

import { State, connectArgs, nefiaBin, startGateway, structured } from './helpers.mjs';

// The server's entry point, run with this node: no npx, no network.
const require = createRequire(import.meta.url);
const everything = join(dirname(require.resolve('@modelcontextprotocol/server-everything/package.json')), 'dist', 'index.js');

function text(result) {
  return result.content.map((c) => c.text).join('');
}

describe('server-everything behind the gateway', { timeout: 120_000 }, () => {
  const state = new State();
  let gw;

  before(async () => {
    state.init();
    state.issue('ops', 'operator');
    state.issue('bot', 'agent');
    state.issue('other', 'agent');
    writeFileSync(state.env.NEFIA_CONFIG, `version: 1
mcp:
  mtls:
    enabled: true
  upstreams:
    - name: every
      command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(everything)}, stdio]
      call_timeout: 2s
  policy:
    - match: {name: bot}
      allow: [every.echo, "every.get-*", every.trigger-long-running-operation]
    - match: {role: agent}
      allow: [nefia.mtls.status]
    - match: {role: operator}
      allow: ["*"]
`);
    gw = await startGateway(state);
  });

  after(async () => {
    await gw?.stop();
    state.cleanup();
  });

  it('serves the allowed tools to an agent over Streamable HTTP and forwards calls', async () => {
    const agent = new Agent({ connect: { cert: state.pem('bot.crt'), key: state.pem('bot.key'), ca: state.pem('ca.crt') } });
    const client = new Client({ name: 'nefia-e2e-upstream', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`https://${gw.addr}/mcp`), {
      fetch: (input, init) => undiciFetch(input, { ...init, dispatcher: agent }),
    }));
    try {
      // Exactly what mcp.policy gives bot (its rule and the agents' one).
      const names = (await client.listTools()).tools.map((t) => t.name).sort();
      assert.deepEqual(names.filter((n) => !n.startsWith('every.get-')), ['every.echo', 'every.trigger-long-running-operation', 'nefia.mtls.status']);
      assert.ok(names.includes('every.get-sum'), names.join(' '));

      assert.equal(text(await client.callTool({ name: 'every.echo', arguments: { message: 'through nefia' } })), 'Echo: through nefia');
      const sum = await client.callTool({ name: 'every.get-sum', arguments: { a: 2, b: 3 } });
      assert.match(text(sum), /5/);

      // Longer than call_timeout (2s): a tool error, not a hang.
      const started = Date.now();
      const slow = await client.callTool({ name: 'every.trigger-long-running-operation', arguments: { duration: 10, steps: 2 } });
      assert.equal(slow.isError, true, JSON.stringify(slow));
      assert.match(text(slow), /timed out/);
      assert.ok(Date.now() - started < 8000, `answered after ${Date.now() - started}ms`);

      const denied = await client.callTool({ name: 'every.toggle-simulated-logging', arguments: {} });
      assert.equal(denied.isError, true);
      assert.match(text(denied), /permission denied/);
    } finally {
      await client.close();
      await agent.close();
    }
  });

  it('shows the upstream to an operator through nefia mcp connect', async () => {
    const transport = new StdioClientTransport({ command: nefiaBin(), args: connectArgs(state, gw.addr, 'ops'), stderr: 'pipe' });
    const client = new Client({ name: 'nefia-e2e-upstream-stdio', version: '1.0.0' });
    await client.connect(transport);
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(names.includes('every.toggle-simulated-logging'), names.join(' '));
      assert.equal(text(await client.callTool({ name: 'every.echo', arguments: { message: 'ops' } })), 'Echo: ops');
      const st = structured(await client.callTool({ name: 'nefia.gateway.status', arguments: {} }));
      assert.equal(st.upstreams.length, 1);
      assert.equal(st.upstreams[0].name, 'every');
      assert.equal(st.upstreams[0].state, 'up');
      assert.ok(st.upstreams[0].tools >= 10, JSON.stringify(st));
    } finally {
      await client.close();
    }
  });

  it('logs the upstream\'s stderr, never mixing it into stdout', () => {
    assert.ok(gw.logs.some((l) => l.includes('upstream stderr') && l.includes('every')), gw.logs.join('\n'));
  });
});
