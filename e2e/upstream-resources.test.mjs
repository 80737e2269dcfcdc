// Resources, resource templates and prompts of a real third-party MCP server
// through nefia (issue 12 item 2): @modelcontextprotocol/server-everything
// (pinned in package-lock.json) as a stdio upstream, reached by the
// TypeScript SDK over mTLS Streamable HTTP. The policy gives bot the static
// documents, the text template and two prompts; other agents get none, and
// what a list hides cannot be read either.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';


import { State, connectHTTP, startGateway } from './helpers.mjs';

const require = createRequire(import.meta.url);
const everything = join(dirname(require.resolve('@modelcontextprotocol/server-everything/package.json')), 'dist', 'index.js');


describe('server-everything resources and prompts behind the gateway', { timeout: 120_000 }, () => {
  const state = new State();
  let gw;

  before(async () => {
    state.init();
    state.issue('bot', 'agent');
    state.issue('other', 'agent');
    writeFileSync(state.env.NEFIA_CONFIG, `version: 1
mcp:
  mtls:
    enabled: true
  upstreams:
    - name: every
      command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(everything)}, stdio]
  policy:
    - match: {name: bot}
      allow:
        - "every.prompt:simple-prompt"
        - "every.prompt:args-prompt"
        - "every.prompt:completable-prompt"
        - "every.resource:demo://resource/static/*"
        - "every.resource:demo://resource/dynamic/text/*"
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

  it('lists, reads and gets what the policy allows, over Streamable HTTP', async () => {
    const { client, close } = await connectHTTP(state, gw.addr, 'bot', 'nefia-e2e-resources-bot');
    try {
      const caps = client.getServerCapabilities();
      assert.ok(caps.resources && caps.prompts, JSON.stringify(caps));

      const prompts = (await client.listPrompts()).prompts.map((p) => p.name).sort();
      assert.deepEqual(prompts, ['every.args-prompt', 'every.completable-prompt', 'every.simple-prompt']);
      const got = await client.getPrompt({ name: 'every.args-prompt', arguments: { city: 'Paris', state: 'TX' } });
      assert.equal(got.messages[0].content.text, "What's weather in Paris, TX?");

      // Upstream URIs are kept; the static documents are listed.
      const resources = (await client.listResources()).resources;
      assert.ok(resources.length > 0, 'no static documents listed');
      for (const r of resources) {
        assert.match(r.uri, /^demo:\/\/resource\/static\/document\//);
      }
      const doc = await client.readResource({ uri: resources[0].uri });
      assert.equal(doc.contents[0].uri, resources[0].uri);
      assert.ok(doc.contents[0].text.length > 0);

      // The text template only: the blob one is not allowed, so not listed.
      const templates = (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
      assert.deepEqual(templates, ['demo://resource/dynamic/text/{resourceId}']);
      const dyn = await client.readResource({ uri: 'demo://resource/dynamic/text/7' });
      assert.match(dyn.contents[0].text, /^Resource 7: /);

      await assert.rejects(client.readResource({ uri: 'demo://resource/dynamic/blob/7' }), /permission denied/);
      await assert.rejects(client.getPrompt({ name: 'every.resource-prompt', arguments: { resourceType: 'Text', resourceId: '1' } }), /permission denied/);
    } finally {
      await close();
    }
  });

  it('forwards completions of prompt arguments and template variables it may get or read', async () => {
    const { client, close } = await connectHTTP(state, gw.addr, 'bot', 'nefia-e2e-completions-bot');
    try {
      assert.ok(client.getServerCapabilities().completions, 'no completions capability');
      const prompt = { type: 'ref/prompt', name: 'every.completable-prompt' };
      let res = await client.complete({ ref: prompt, argument: { name: 'department', value: 'E' } });
      assert.deepEqual(res.completion.values, ['Engineering']);
      // The context (arguments already chosen) reaches the upstream too.
      res = await client.complete({ ref: prompt, argument: { name: 'name', value: '' }, context: { arguments: { department: 'Sales' } } });
      assert.deepEqual(res.completion.values, ['David', 'Eve', 'Frank']);
      const template = { type: 'ref/resource', uri: 'demo://resource/dynamic/text/{resourceId}' };
      res = await client.complete({ ref: template, argument: { name: 'resourceId', value: '7' } });
      assert.deepEqual(res.completion.values, ['7']);
      await assert.rejects(client.complete({ ref: { type: 'ref/resource', uri: 'demo://resource/dynamic/blob/{resourceId}' }, argument: { name: 'resourceId', value: '7' } }), /permission denied/);
    } finally {
      await close();
    }
  });

  it('hides them from an agent the policy gives none, and refuses its reads', async () => {
    const { client, close } = await connectHTTP(state, gw.addr, 'other', 'nefia-e2e-resources-other');
    try {
      assert.deepEqual((await client.listPrompts()).prompts, []);
      assert.deepEqual((await client.listResources()).resources, []);
      assert.deepEqual((await client.listResourceTemplates()).resourceTemplates, []);
      await assert.rejects(client.readResource({ uri: 'demo://resource/dynamic/text/1' }), /permission denied/);
      await assert.rejects(client.getPrompt({ name: 'every.simple-prompt' }), /permission denied/);
      await assert.rejects(client.complete({ ref: { type: 'ref/prompt', name: 'every.completable-prompt' }, argument: { name: 'department', value: 'E' } }), /permission denied/);
    } finally {
      await close();
    }
  });
});
