// Shared setup for the end-to-end suite: the nefia binary, a state
// directory with a CA and client certificates, and a running gateway.
//
// Nothing here skips: a missing tool (go, curl) is a failure, because a
// suite that quietly proves nothing is worse than a red one.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Agent, fetch as undiciFetch } from 'undici';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..');

let builtBin;

// nefiaBin is $NEFIA_BIN, else a binary built from this checkout into a
// temporary directory (once per test process).
export function nefiaBin() {
  if (process.env.NEFIA_BIN) return process.env.NEFIA_BIN;
  if (builtBin) return builtBin;
  const dir = mkdtempSync(join(tmpdir(), 'nefia-e2e-bin-'));
  const out = join(dir, 'nefia');
  const r = spawnSync('go', ['build', '-o', out, './cmd/nefia'], { cwd: repoRoot, encoding: 'utf8' });
  if (r.error) throw new Error(`NEFIA_BIN is not set and go could not be run to build nefia: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`go build ./cmd/nefia failed:\n${r.stderr}`);
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  builtBin = out;
  return out;
}

// State is one nefia installation: state dir, config and certificate
// bundles, each in a fresh temporary directory.
export class State {
  constructor() {
    this.root = mkdtempSync(join(tmpdir(), 'nefia-e2e-'));
    this.env = {
      ...process.env,
      NEFIA_STATE_DIR: join(this.root, 'state'),
      NEFIA_CONFIG: join(this.root, 'nefia.yaml'),
    };
    this.certs = join(this.root, 'certs');
  }

  // nefia runs the CLI and returns its stdout; a non-zero exit throws.
  nefia(...args) {
    const r = spawnSync(nefiaBin(), args, { env: this.env, encoding: 'utf8' });
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`nefia ${args.join(' ')}: exit ${r.status}\n${r.stderr}`);
    return r.stdout;
  }

  // init creates the CA and a server certificate for the loopback names.
  init() {
    this.nefia('mtls', 'init', '--hosts', 'localhost,127.0.0.1');
    return this;
  }

  // issue writes NAME.crt, NAME.key and ca.crt into this.certs and returns
  // the issued record (serial, ...).
  issue(name, role = 'agent') {
    return JSON.parse(this.nefia('mtls', 'issue-client', '--name', name, '--role', role, '--out-dir', this.certs, '--json'));
  }

  file(name) {
    return join(this.certs, name);
  }

  pem(name) {
    return readFileSync(this.file(name));
  }

  cleanup() {
    rmSync(this.root, { recursive: true, force: true });
  }
}

// startGateway runs 'nefia mcp serve --listen 127.0.0.1:0' and resolves
// to { addr, stop } once the gateway logs its address.
export async function startGateway(state) {
  const child = spawn(nefiaBin(), ['mcp', 'serve', '--listen', '127.0.0.1:0', '--log-format', 'json'], {
    env: state.env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs = [];
  const addr = await new Promise((resolveAddr, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not report its address within 20s:\n${logs.join('\n')}`)), 20000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`gateway exited with ${code}:\n${logs.join('\n')}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      logs.push(line);
      try {
        const rec = JSON.parse(line);
        if (rec.msg === 'gateway listening') {
          clearTimeout(timer);
          resolveAddr(rec.addr);
        }
      } catch {
        // tint's text lines before the JSON logger is set up
      }
    });
  });
  const stop = () =>
    new Promise((done) => {
      if (child.exitCode !== null) return done();
      child.once('exit', done);
      child.kill('SIGTERM');
    });
  return { addr, stop, logs };
}

// connectArgs are the 'nefia mcp connect' arguments for certificate name.
export function connectArgs(state, addr, name) {
  return ['mcp', 'connect', '--name', name, '--cert-dir', state.certs, '--addr', addr];
}

// structured returns a tool result's structured content, failing on a tool
// error with its text.
export function structured(result) {
  if (result.isError) {
    throw new Error(`tool error: ${result.content?.map((c) => c.text).join(' ')}`);
  }
  return result.structuredContent;
}

// connectHTTP connects the TypeScript SDK to the gateway over mTLS
// Streamable HTTP with the certificate of name; close ends the client and
// its undici agent.
export async function connectHTTP(state, addr, name, clientName = `nefia-e2e-${name}`) {
  const agent = new Agent({ connect: { cert: state.pem(`${name}.crt`), key: state.pem(`${name}.key`), ca: state.pem('ca.crt') } });
  const client = new Client({ name: clientName, version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`https://${addr}/mcp`), {
    fetch: (input, init) => undiciFetch(input, { ...init, dispatcher: agent }),
  }));
  return { client, close: async () => { await client.close(); await agent.close(); } };
}
