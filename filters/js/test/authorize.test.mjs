// authorize(): auth's full decision with the host's fetch bringing remote
// key sets and ext-auth answers from real HTTP servers, tokens minted by jose.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { Engine } from '@switchyard/policy';
import { jwks, mint, ISSUER, AUDIENCE } from './vectors.mjs';

let server;
let base;
const hits = { jwks: 0, check: 0 };
let jwksUp = true;

before(async () => {
  const keys = JSON.stringify(await jwks());
  server = createServer((req, res) => {
    if (req.url === '/.well-known/jwks.json') {
      hits.jwks++;
      if (!jwksUp) { res.writeHead(500).end(); return; }
      res.writeHead(200, { 'content-type': 'application/json' }).end(keys);
    } else if (req.url === '/check') {
      hits.check++;
      const ok = req.headers.authorization === 'Token good' && req.headers['x-forwarded-uri'] === '/ext/x';
      if (ok) res.writeHead(200, { 'x-user': 'svc-7' }).end();
      else res.writeHead(403, { 'content-type': 'text/plain' }).end('nope\n');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => server.close());

const config = () => ({
  auth: {
    providers: [
      { name: 'corp', jwt: { issuer: ISSUER, audiences: [AUDIENCE],
        remote_jwks: { cluster: 'idp', authority: 'idp.example.com', path: '/.well-known/jwks.json', refresh_s: 300, timeout_ms: 1000 } } },
      { name: 'authz', ext_auth: { cluster: 'authz', authority: 'authz', path: '/check', timeout_ms: 1000,
        forward_headers: ['authorization'], identity_header: 'x-user' } },
    ],
    rules: [
      { match: { path: { prefix: '/ext/' } }, require: ['authz'] },
      { match: {}, require: ['corp'] },
    ],
    identity: { header: 'end-user' },
  },
  router: { default_version: 'v1', routes: [{ match: { claims: { sub: { exact: 'jason' } } }, version: 'v2' }] },
});

const now = () => Math.floor(Date.now() / 1000);

test('a remote JWKS is fetched once, a token verified, and routing follows the identity', async () => {
  const engine = Engine.compile(config());
  const clusters = { idp: base, authz: base };
  const before = hits.jwks;
  const token = await mint('RS256', 'jason', now());
  const requests = Array.from({ length: 5 }, () => engine.authorize(
    { path: '/orders', headers: { authorization: `Bearer ${token}`, 'end-user': 'mallory' } }, { clusters }));
  for (const d of await Promise.all(requests)) {
    assert.equal(d.action, 'forward', JSON.stringify(d.reply));
    assert.equal(d.auth.verdict, 'allow');
    assert.equal(d.auth.provider, 'corp');
    assert.equal(d.auth.claims.sub, 'jason');
    assert.deepEqual(d.upstream.headers.filter(([k]) => k === 'end-user'), [['end-user', 'jason']]);
    assert.equal(d.router.version, 'v2');
  }
  assert.equal(hits.jwks - before, 1, 'five concurrent requests, one key-set fetch');
  const maria = await engine.authorize({ path: '/', headers: { authorization: `Bearer ${await mint('ES256', 'maria', now())}` } }, { clusters });
  assert.equal(maria.router.version, 'v1');
  assert.equal(hits.jwks - before, 1, 'the key set is kept by the engine');
  engine.free();
});

test('bad tokens are refused with the filter\'s reasons and statuses', async () => {
  const engine = Engine.compile(config());
  const clusters = { idp: base, authz: base };
  const ask = async (headers) => (await engine.authorize({ path: '/orders', headers }, { clusters })).reply;
  assert.equal((await ask({})).status, 401);
  assert.match((await ask({})).body, /missing_credential/);
  const expired = await mint('RS256', 'jason', now(), { expired: true });
  assert.match((await ask({ authorization: `Bearer ${expired}` })).body, /token_expired/);
  const [h, p] = (await mint('RS256', 'jason', now())).split('.');
  assert.match((await ask({ authorization: `Bearer ${h}.${p}.AAAA` })).body, /token_bad_signature/);
  assert.match((await ask({ authorization: ['Bearer a', 'Bearer b'] })).body, /ambiguous_credential/);
  engine.free();
});

test('an unreachable key set answers 503, and the retry waits for its backoff', async () => {
  const engine = Engine.compile(config());
  jwksUp = false;
  try {
    const token = await mint('RS256', 'jason', now());
    const req = { path: '/orders', headers: { authorization: `Bearer ${token}` } };
    const first = await engine.authorize(req, { clusters: { idp: base } });
    assert.equal(first.reply.status, 503);
    assert.equal(first.auth.reason, 'jwks_unavailable');
    const fetched = hits.jwks;
    const again = await engine.authorize(req, { clusters: { idp: base } });
    assert.equal(again.reply.status, 503);
    assert.equal(hits.jwks, fetched, 'no new fetch before the retry time');
    jwksUp = true;
    const later = await engine.authorize(req, { clusters: { idp: base }, nowMs: Date.now() + 5000 });
    assert.equal(later.action, 'forward', 'after the backoff the key set loads');
  } finally {
    jwksUp = true;
    engine.free();
  }
});

test('ext auth is asked with the forwarded request and its answer decides', async () => {
  const engine = Engine.compile(config());
  const clusters = { idp: base, authz: base };
  const ok = await engine.authorize({ path: '/ext/x', headers: { authorization: 'Token good' } }, { clusters });
  assert.equal(ok.action, 'forward', JSON.stringify(ok));
  assert.equal(ok.auth.subject, 'svc-7');
  const denied = await engine.authorize({ path: '/ext/x', headers: { authorization: 'Token bad' } }, { clusters });
  assert.equal(denied.reply.status, 403);
  assert.equal(denied.reply.body, 'nope\n', 'the service\'s own answer is passed back');
  const down = await engine.authorize({ path: '/ext/x' }, { clusters: { authz: 'http://127.0.0.1:1' } });
  assert.equal(down.reply.status, 503, 'failure_mode closed');
  engine.free();
});

test('a host fetch that throws is a failed fetch, not a crash', async () => {
  const engine = Engine.compile(config());
  const d = await engine.authorize(
    { path: '/orders', headers: { authorization: `Bearer ${await mint('RS256', 'jason', now())}` } },
    { fetch: async () => { throw new Error('offline'); } });
  assert.equal(d.reply.status, 503);
  engine.free();
});

test('authorize without an auth section decides like decide', async () => {
  const engine = Engine.compile({ router: config().router });
  const d = await engine.authorize({ path: '/', claims: { sub: 'jason' } });
  assert.equal(d.router.version, 'v2');
  assert.equal(d.auth, undefined);
  engine.free();
});

test('stale keys serve up to max_stale_s, then tokens get 503 until a fetch succeeds', async () => {
  const c = config();
  Object.assign(c.auth.providers[0].jwt.remote_jwks, { refresh_s: 10, max_stale_s: 60 });
  const engine = Engine.compile(c);
  const clusters = { idp: base };
  const t0 = Date.now();
  const ask = async (sub, at) => engine.authorize(
    { path: '/orders', headers: { authorization: `Bearer ${await mint('RS256', sub, now())}` } },
    { clusters, nowMs: t0 + at });
  try {
    assert.equal((await ask('u0', 0)).action, 'forward');
    jwksUp = false;
    const stale = await ask('u1', 50_000);
    assert.equal(stale.action, 'forward', 'the last good keys, 50 s old, still serve');
    const expired = await ask('u2', 61_000);
    assert.equal(expired.reply.status, 503);
    assert.equal(expired.auth.reason, 'jwks_unavailable');
    jwksUp = true;
    assert.equal((await ask('u3', 75_000)).action, 'forward', 'a fetch that succeeds brings them back');
  } finally {
    jwksUp = true;
    engine.free();
  }
});
