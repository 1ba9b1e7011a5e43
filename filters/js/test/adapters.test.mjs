// The adapters against the real libraries: Express from npm, and the fetch
// API's own Request/Response (Node's fetch, as in workers, Deno and Bun).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import { Engine } from '@switchyard/policy';
import { switchyard } from '@switchyard/policy/express';
import { withSwitchyard, fromFetch } from '@switchyard/policy/fetch';

const CONFIG = {
  auth: {
    providers: [{ name: 'ci', api_key: { header: 'x-api-key',
      keys: [{ name: 'ci-bot', sha256: 'f82da6e2b2e51c046a2eaf10964ef184b69c0aee9892f10a2a7b657477d407e6' }] } }],
    rules: [{ match: { path: { prefix: '/public/' } }, allow: 'anonymous' }, { match: {}, require: ['ci'] }],
    identity: { header: 'end-user' },
  },
  router: { default_version: 'v1', routes: [{ match: { headers: { 'end-user': { exact: 'ci-bot' } } }, version: 'v2' }] },
};

async function withApp(app, fn) {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    return await fn(`http://127.0.0.1:${server.address().port}`);
  } finally {
    server.close();
  }
}

test('Express: replies as the filter would, or hands on the rewritten request', async () => {
  const engine = Engine.compile(CONFIG);
  const app = express();
  app.use(switchyard(engine));
  app.get('*', (req, res) => res.json({ url: req.url, user: req.headers['end-user'] ?? null,
    version: req.headers['x-version'], decided: req.switchyard.router.rule }));
  await withApp(app, async (url) => {
    const denied = await fetch(`${url}/orders`);
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get('content-type'), 'application/json');
    assert.match(await denied.text(), /missing_credential/);

    const ok = await fetch(`${url}/orders?x=1`, { headers: { 'x-api-key': 'ci-secret', 'end-user': 'mallory' } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('x-served-version'), 'v2');
    assert.deepEqual(await ok.json(), { url: '/orders?x=1', user: 'ci-bot', version: 'v2', decided: 'route-0' });

    const spoofed = await fetch(`${url}/public/a`, { headers: { 'end-user': 'ci-bot' } });
    assert.deepEqual(await spoofed.json(), { url: '/public/a', user: null, version: 'v1', decided: 'default' });

    const normalised = await fetch(`${url}/public//a/./b`);
    assert.equal((await normalised.json()).url, '/public/a/b');

    const twoKeys = await fetch(`${url}/orders`, { headers: [['x-api-key', 'ci-secret'], ['x-api-key', 'x']] });
    assert.equal(twoKeys.status, 401, 'repeated credentials are seen apart (rawHeaders)');
  });
  engine.free();
});

test('fetch API: a wrapped handler gets the upstream request and the decision', async () => {
  const engine = Engine.compile(CONFIG);
  const handler = withSwitchyard(engine, async (request, decision) =>
    Response.json({ path: new URL(request.url).pathname, user: request.headers.get('end-user'), version: decision.router.version }));
  const denied = await handler(new Request('http://gw.local/orders'));
  assert.equal(denied.status, 401);
  const ok = await handler(new Request('http://gw.local/orders/./1', { headers: { 'x-api-key': 'ci-secret' } }));
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('x-served-version'), 'v2');
  assert.deepEqual(await ok.json(), { path: '/orders/1', user: 'ci-bot', version: 'v2' });
  const bad = await handler(new Request('http://gw.local/a%2fb'));
  assert.equal(bad.status, 400);
  assert.deepEqual(fromFetch(new Request('http://gw.local/a?b=1', { headers: { 'X-A': '1' } })).headers, { 'x-a': '1' });
  engine.free();
});
