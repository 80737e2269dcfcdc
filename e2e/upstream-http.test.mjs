// @modelcontextprotocol/server-everything (pinned in package-lock.json) in
// its Streamable HTTP mode as a url upstream of a running gateway (issue
// 12, done-means): listed, called, allowed and denied per certificate.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Agent, fetch as undiciFetch } from 'undici';

import { State, connectArgs, nefiaBin, startGateway, structured } from './helpers.mjs';

const require = createRequire(import.meta.url);
const everything = join(dirname(require.resolve('@modelcontextprotocol/server-everything/package.json')), 'dist', 'index.js');

function text(result) {
  return result.content.map((c) => c.text).join('');
}

// freePort asks the kernel for a loopback port (server-everything reads
// its port from $PORT and does not report one it chose itself).
function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

// startEverythingHTTP runs server-everything's Streamable HTTP mode and
// resolves once it listens.
async function startEverythingHTTP() {
  const port = await freePort();
  const child = spawn(process.execPath, [everything, 'streamableHttp'], {
    env: { ...process.env, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs = [];
  await new Promise((ready, reject) => {
    const timer = setTimeout(() => reject(new Error(`server-everything did not listen within 20s:\n${logs.join('\n')}`)), 20000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`server-everything exited with ${code}:\n${logs.join('\n')}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      logs.push(line);
      if (line.includes('listening on port')) {
        clearTimeout(timer);
        ready();
      }
    });
  });
  const stop = () => new Promise((done) => {
    if (child.exitCode !== null) return done();
    child.once('exit', done);
    child.kill('SIGTERM');
  });
  return { url: `http://127.0.0.1:${port}/mcp`, stop };
}

describe('server-everything over Streamable HTTP behind the gateway', { timeout: 120_000 }, () => {
  const state = new State();
  let gw;
  let upstream;

  before(async () => {
    upstream = await startEverythingHTTP();
    state.init();
    state.issue('ops', 'operator');
    state.issue('bot', 'agent');
    state.issue('other', 'agent');
    writeFileSync(state.env.NEFIA_CONFIG, `version: 1
mcp:
  mtls:
    enabled: true
  upstreams:
    - name: web
      url: ${upstream.url}
      call_timeout: 10s
  policy:
    - match: {name: bot}
      allow: [web.echo, "web.get-*"]
    - match: {role: agent}
      allow: [nefia.mtls.status]
    - match: {role: operator}
      allow: ["*"]
`);
    gw = await startGateway(state);
  });

  after(async () => {
    await gw?.stop();
    await upstream?.stop();
    state.cleanup();
  });

  it('serves the allowed tools to an agent over mTLS HTTP and forwards calls over HTTP', async () => {
    const agent = new Agent({ connect: { cert: state.pem('bot.crt'), key: state.pem('bot.key'), ca: state.pem('ca.crt') } });
    const client = new Client({ name: 'nefia-e2e-upstream-http', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`https://${gw.addr}/mcp`), {
      fetch: (input, init) => undiciFetch(input, { ...init, dispatcher: agent }),
    }));
    try {
      const names = (await client.listTools()).tools.map((t) => t.name).sort();
      assert.ok(names.includes('web.echo') && names.includes('web.get-sum'), names.join(' '));
      // bot's rule and the agents' one, nothing else.
      assert.deepEqual(names.filter((n) => n !== 'web.echo' && !n.startsWith('web.get-')), ['nefia.mtls.status'], names.join(' '));

      assert.equal(text(await client.callTool({ name: 'web.echo', arguments: { message: 'over http' } })), 'Echo: over http');
      assert.match(text(await client.callTool({ name: 'web.get-sum', arguments: { a: 20, b: 22 } })), /42/);

      const denied = await client.callTool({ name: 'web.toggle-simulated-logging', arguments: {} });
      assert.equal(denied.isError, true);
      assert.match(text(denied), /permission denied/);
    } finally {
      await client.close();
      await agent.close();
    }
  });

  it('denies another agent through nefia mcp connect and shows the upstream to an operator', async () => {
    for (const [name, check] of [
      ['other', async (client) => {
        const names = (await client.listTools()).tools.map((t) => t.name);
        assert.deepEqual(names, ['nefia.mtls.status']);
        const denied = await client.callTool({ name: 'web.echo', arguments: { message: 'no' } });
        assert.equal(denied.isError, true);
        assert.match(text(denied), /permission denied/);
      }],
      ['ops', async (client) => {
        assert.equal(text(await client.callTool({ name: 'web.echo', arguments: { message: 'ops' } })), 'Echo: ops');
        const st = structured(await client.callTool({ name: 'nefia.gateway.status', arguments: {} }));
        assert.equal(st.upstreams[0].name, 'web');
        assert.equal(st.upstreams[0].transport, 'http');
        assert.equal(st.upstreams[0].state, 'up');
      }],
    ]) {
      const client = new Client({ name: `nefia-e2e-upstream-http-${name}`, version: '1.0.0' });
      await client.connect(new StdioClientTransport({ command: nefiaBin(), args: connectArgs(state, gw.addr, name), stderr: 'pipe' }));
      try {
        await check(client);
      } finally {
        await client.close();
      }
    }
  });
});
