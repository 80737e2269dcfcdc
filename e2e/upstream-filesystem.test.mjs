// @modelcontextprotocol/server-filesystem (pinned in package-lock.json) as
// a stdio upstream of a running gateway (issue 12, done-means): its tools
// listed and called through the gateway, allowed and denied per
// certificate by mcp.policy, and audited with the upstream named.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

import { State, connectArgs, connectHTTP, nefiaBin, startGateway } from './helpers.mjs';

// The server's entry point, run with this node: no npx, no network.
const require = createRequire(import.meta.url);
const filesystem = join(dirname(require.resolve('@modelcontextprotocol/server-filesystem/package.json')), 'dist', 'index.js');

function text(result) {
  return result.content.map((c) => c.text).join('');
}


// waitForLog resolves when a gateway log line after index from has msg
// (the gateway polls nefia.yaml every second).
async function waitForLog(gw, from, msg) {
  const deadline = Date.now() + 15000;
  for (;;) {
    if (gw.logs.slice(from).some((l) => l.includes(`"msg":"${msg}"`))) return;
    if (Date.now() > deadline) throw new Error(`gateway did not log ${msg}:\n${gw.logs.slice(from).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('server-filesystem behind the gateway', { timeout: 120_000 }, () => {
  const state = new State();
  const shared = join(state.root, 'shared');
  let gw;

  before(async () => {
    mkdirSync(shared);
    writeFileSync(join(shared, 'hello.txt'), 'hello from the shared directory\n');
    state.init();
    state.issue('ops', 'operator');
    state.issue('reader', 'agent');
    state.issue('other', 'agent');
    writeFileSync(state.env.NEFIA_CONFIG, `version: 1
mcp:
  mtls:
    enabled: true
  upstreams:
    - name: fs
      command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(filesystem)}, ${JSON.stringify(shared)}]
      call_timeout: 10s
  policy:
    - match: {name: reader}
      allow: [nefia.mtls.status, "fs.read_*", "fs.list_*"]
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

  it('lists and calls the read tools for a reader over Streamable HTTP, and refuses writes', async () => {
    const { client, close } = await connectHTTP(state, gw.addr, 'reader', 'nefia-e2e-fs-reader');
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      for (const want of ['fs.read_text_file', 'fs.list_directory', 'fs.list_allowed_directories']) {
        assert.ok(names.includes(want), `${want} missing from ${names.join(' ')}`);
      }
      assert.deepEqual(names.filter((n) => n.startsWith('fs.') && !/^fs\.(read|list)_/.test(n)), [], names.join(' '));

      const read = await client.callTool({ name: 'fs.read_text_file', arguments: { path: join(shared, 'hello.txt') } });
      assert.equal(read.isError ?? false, false, JSON.stringify(read));
      assert.match(text(read), /hello from the shared directory/);
      const list = await client.callTool({ name: 'fs.list_directory', arguments: { path: shared } });
      assert.match(text(list), /\[FILE\] hello\.txt/);

      // The upstream's own refusal (outside its allowed directories) passes through as isError.
      const outside = await client.callTool({ name: 'fs.read_text_file', arguments: { path: '/etc/hostname' } });
      assert.equal(outside.isError, true, JSON.stringify(outside));
      assert.match(text(outside), /denied|outside/i);

      const write = await client.callTool({ name: 'fs.write_file', arguments: { path: join(shared, 'evil.txt'), content: 'x' } });
      assert.equal(write.isError, true);
      assert.match(text(write), /permission denied/);
      assert.equal(existsSync(join(shared, 'evil.txt')), false, 'a denied write reached the upstream');
    } finally {
      await close();
    }
  });

  it('shows no fs tool to another agent through nefia mcp connect and denies its calls', async () => {
    const transport = new StdioClientTransport({ command: nefiaBin(), args: connectArgs(state, gw.addr, 'other'), stderr: 'pipe' });
    const client = new Client({ name: 'nefia-e2e-fs-other', version: '1.0.0' });
    await client.connect(transport);
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.deepEqual(names, ['nefia.mtls.status']);
      const denied = await client.callTool({ name: 'fs.read_text_file', arguments: { path: join(shared, 'hello.txt') } });
      assert.equal(denied.isError, true);
      assert.match(text(denied), /permission denied/);
      assert.doesNotMatch(text(denied), /hello from the shared directory/);
    } finally {
      await client.close();
    }
  });

  it('lets an operator write through the same upstream', async () => {
    const { client, close } = await connectHTTP(state, gw.addr, 'ops', 'nefia-e2e-fs-ops');
    try {
      const names = (await client.listTools()).tools.map((t) => t.name);
      assert.ok(names.includes('fs.write_file'), names.join(' '));
      const write = await client.callTool({ name: 'fs.write_file', arguments: { path: join(shared, 'ops.txt'), content: 'by ops' } });
      assert.equal(write.isError ?? false, false, JSON.stringify(write));
      assert.equal(existsSync(join(shared, 'ops.txt')), true);
    } finally {
      await close();
    }
  });

  it('refuses a live session\'s next call once an edit of nefia.yaml takes the tool away', async () => {
    const { client, close } = await connectHTTP(state, gw.addr, 'reader', 'nefia-e2e-fs-reader');
    try {
      const before = await client.callTool({ name: 'fs.list_directory', arguments: { path: shared } });
      assert.equal(before.isError ?? false, false, JSON.stringify(before));
      const seen = gw.logs.length;
      writeFileSync(state.env.NEFIA_CONFIG, readFileSync(state.env.NEFIA_CONFIG, 'utf8').replace('"fs.read_*", "fs.list_*"', '"fs.read_*"'));
      await waitForLog(gw, seen, 'configuration reloaded');
      const after = await client.callTool({ name: 'fs.list_directory', arguments: { path: shared } });
      assert.equal(after.isError, true, JSON.stringify(after));
      assert.match(text(after), /permission denied/);
    } finally {
      await close();
    }
  });

  it('audits the forwarded calls with the upstream named', async () => {
    await gw.stop(); // flushes the batched audit records
    const recs = state.nefia('audit', 'tail', '-n', '200', '--json').trim().split('\n').map((l) => JSON.parse(l));
    const calls = recs.filter((r) => r.event === 'tool_call');
    const find = (tool, who, outcome) => calls.find((r) => r.tool === tool && r.agent?.name === who && r.outcome === outcome);
    for (const [tool, who, outcome] of [
      ['fs.read_text_file', 'reader', 'ok'],
      ['fs.write_file', 'reader', 'denied'],
      ['fs.read_text_file', 'other', 'denied'],
      ['fs.write_file', 'ops', 'ok'],
      ['fs.list_directory', 'reader', 'denied'],
    ]) {
      const r = find(tool, who, outcome);
      assert.ok(r, `no ${outcome} record of ${tool} by ${who} in ${JSON.stringify(calls, null, 1)}`);
      assert.equal(r.upstream, 'fs', JSON.stringify(r));
    }
    assert.equal(calls.filter((r) => r.tool?.startsWith('nefia.')).every((r) => r.upstream === undefined), true);
    state.nefia('audit', 'verify');
  });
});
