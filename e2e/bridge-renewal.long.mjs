// The TypeScript SDK's stdio client through 'nefia mcp connect' holding a
// one-minute certificate (the shortest nefia issues, config.MinClientDuration)
// for more than three lifetimes, calling a tool every second (issue 13,
// "done means"): no call fails, the bridge renews at about two thirds of
// each lifetime, every renewal is in the audit trail, and every new
// certificate verifies with openssl against the CA.
//
// It takes about 3.3 minutes of wall time, nearly all of it waiting, so
// run.sh runs it beside the other e2e tests rather than after them; its
// name keeps it out of 'node --test''s default file pattern.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

import { State, connectArgs, nefiaBin, startGateway, structured } from './helpers.mjs';

const lifetimeMs = 60_000;
const runMs = 3 * lifetimeMs + 10_000;

function openssl(...args) {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`openssl is required: ${r.error.message}`);
  return r;
}

describe('nefia mcp connect renews a one-minute certificate under a calling client', { timeout: runMs + 60_000 }, () => {
  const state = new State();
  let gw;

  before(async () => {
    state.init();
    state.nefia('mtls', 'issue-client', '--name', 'bot', '--role', 'agent', '--duration', '1m', '--out-dir', state.certs, '--json');
    gw = await startGateway(state);
  });

  after(async () => {
    await gw?.stop();
    state.cleanup();
  });

  it('calls status every second for three lifetimes without a failure', async () => {
    const transport = new StdioClientTransport({
      command: nefiaBin(),
      args: [...connectArgs(state, gw.addr, 'bot'), '--log-format', 'json'],
      stderr: 'pipe',
    });
    let stderr = '';
    transport.stderr?.on('data', (d) => { stderr += d; });
    const client = new Client({ name: 'nefia-e2e-renewal', version: '1.0.0' });
    await client.connect(transport);

    const serials = []; // in the order the gateway saw them
    const failures = [];
    const verified = [];
    let calls = 0;
    try {
      const end = Date.now() + runMs;
      while (Date.now() < end) {
        const tick = sleep(1000);
        calls++;
        try {
          const st = structured(await client.callTool({ name: 'nefia.mtls.status', arguments: {} }));
          const serial = st.caller.serial;
          if (serials.at(-1) !== serial) {
            serials.push(serial);
            if (serials.length > 1) {
              // The bridge wrote the new pair before it switched to it.
              const crt = state.file('bot.crt');
              const v = openssl('verify', '-CAfile', state.file('ca.crt'), crt);
              assert.equal(v.status, 0, `openssl verify ${crt}: ${v.stdout}${v.stderr}`);
              const s = openssl('x509', '-noout', '-serial', '-in', crt).stdout.trim().replace(/^serial=/, '').toLowerCase().replace(/^0+/, '');
              assert.equal(s, serial.replace(/^0+/, ''), 'bot.crt holds the certificate the calls are made with');
              verified.push(serial);
            }
          }
        } catch (err) {
          failures.push(`call ${calls}: ${err.message}`);
        }
        await tick;
      }
    } finally {
      await client.close();
    }

    assert.deepEqual(failures, [], `${failures.length} of ${calls} calls failed; bridge stderr:\n${stderr}`);
    // 190 s at one renewal per 37-43 s of a 60 s lifetime.
    assert.ok(serials.length >= 5, `serials seen ${serials.join(', ')}: want the first and at least four renewals`);
    assert.equal(verified.length, serials.length - 1);

    const records = state.nefia('audit', 'query', '--event', 'mtls.renew', '--outcome', 'ok', '--json')
      .trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const renewedBy = records.map((r) => r.agent.serial);
    // Each certificate renewed exactly once, by the bridge, in order; the
    // last may have renewed after the last call.
    assert.deepEqual(renewedBy.slice(0, serials.length - 1), serials.slice(0, -1), JSON.stringify(records.map((r) => r.agent)));
    assert.ok(renewedBy.length <= serials.length, `renewals ${renewedBy.length} for ${serials.length} serials`);

    const logs = stderr.split('\n').filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return { msg: l }; } });
    const renewed = logs.filter((l) => l.msg === 'client certificate renewed');
    const took = renewed.map((l) => `${Math.round(Number(l.took) / 1e6)} ms`).join(', '); // slog's JSON duration: nanoseconds
    console.log(`${calls} calls, 0 failed, ${serials.length - 1} renewals seen by the client; bridge-side renewal took: ${took}`);
    const bad = logs.filter((l) => l.level === 'ERROR' || l.level === 'WARN');
    assert.deepEqual(bad, [], stderr);
    assert.ok(readFileSync(state.file('bot.key')).length > 0);
  });
});
