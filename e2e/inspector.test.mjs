// The MCP Inspector's CLI (1.0.3, the last line that runs on Node 20)
// spawning 'nefia mcp connect'.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { State, connectArgs, nefiaBin, startGateway } from './helpers.mjs';

// inspector-cli 1.0.3 reads its own version with
// import(existsSync('../package.json') ? '../package.json' : '../../package.json'):
// the check is relative to the working directory, the import to the module,
// so it only works when run from its build/ folder.
const require = createRequire(import.meta.url);
const inspectorBuild = join(dirname(require.resolve('@modelcontextprotocol/inspector-cli/package.json')), 'build');

describe('MCP Inspector CLI through nefia mcp connect', { timeout: 120_000 }, () => {
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

  it('tools/list succeeds', () => {
    const r = spawnSync(process.execPath, [join(inspectorBuild, 'cli.js'), '--cli', nefiaBin(), ...connectArgs(state, gw.addr, 'ops'), '--method', 'tools/list'], {
      cwd: inspectorBuild,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.error, undefined);
    assert.equal(r.status, 0, r.stderr);
    const { tools } = JSON.parse(r.stdout);
    assert.deepEqual(tools.map((t) => t.name).sort(), ['nefia.gateway.disconnect', 'nefia.gateway.sessions', 'nefia.mtls.init', 'nefia.mtls.issue_client', 'nefia.mtls.renew', 'nefia.mtls.renew_server', 'nefia.mtls.revoke', 'nefia.mtls.status']);
  });
});
