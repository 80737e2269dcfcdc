// curl, as an operator would try the gateway by hand: an initialize POSTed
// to /mcp with the client certificate.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';

import { State, startGateway } from './helpers.mjs';

const initialize = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'curl', version: '1' } },
});

// curl runs curl and fails the test (never skips it) when curl is missing.
function curl(...args) {
  const r = spawnSync('curl', ['--silent', '--show-error', '--max-time', '30', ...args], { encoding: 'utf8' });
  if (r.error) throw new Error(`curl could not be run (is it installed?): ${r.error.message}`);
  return r;
}

describe('curl', { timeout: 120_000 }, () => {
  const state = new State();
  let gw;
  let url;

  before(async () => {
    state.init();
    state.issue('ops', 'operator');
    gw = await startGateway(state);
    url = `https://${gw.addr}/mcp`;
  });

  after(async () => {
    await gw?.stop();
    state.cleanup();
  });

  for (const [name, flags] of [['HTTP/2', ['--http2']], ['HTTP/1.1', ['--http1.1']], ['HTTP/1.1 without ALPN', ['--http1.1', '--no-alpn']]]) {
    it(`POSTs an initialize and gets a result (${name})`, () => {
      const r = curl(...flags, '--include',
        '--cert', state.file('ops.crt'), '--key', state.file('ops.key'), '--cacert', state.file('ca.crt'),
        '-H', 'Content-Type: application/json', '-H', 'Accept: application/json, text/event-stream',
        '--data', initialize, url);
      assert.equal(r.status, 0, r.stderr);
      const [head, body] = r.stdout.split(/\r?\n\r?\n/, 2);
      assert.match(head, /^HTTP\/\S+ 200/);
      assert.match(head, /^mcp-session-id: \S+/im);
      const res = JSON.parse(body);
      assert.equal(res.result.serverInfo.name, 'nefia');
      assert.equal(res.result.protocolVersion, '2025-11-25');
    });
  }

  it('gets nothing without a certificate', () => {
    const r = curl('--cacert', state.file('ca.crt'), '-H', 'Content-Type: application/json', '--data', initialize, url);
    assert.notEqual(r.status, 0);
    assert.equal(r.stdout, '');
  });
});
