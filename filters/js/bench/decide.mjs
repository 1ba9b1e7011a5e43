// Decisions per second in Node, one core: the lab router, and auth with a
// cached RS256 token (the same token every time, as a warm gateway sees a
// returning user). Prints JSON; `make bench-js` writes it to bench/js.json.
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { gzipSync } from 'node:zlib';
import { Engine } from '@switchyard/policy';
import { jwks, mint, ISSUER, AUDIENCE } from '../test/vectors.mjs';

const LAB = {
  default_version: 'v1',
  routes: [
    { name: 'jason-to-v2', match: { headers: { 'end-user': { exact: 'jason' } } }, version: 'v2' },
    { name: 'canary', match: { path: { prefix: '/reviews' } },
      split: [{ version: 'v1', weight: 90 }, { version: 'v2', weight: 10 }], sticky: { cookie: 'user' } },
  ],
  override: { header: 'x-pin-version', allow: ['v2'] },
};

function rate(fn, seconds = 2) {
  for (let i = 0; i < 20000; i++) fn(i); // warm-up (JIT, caches)
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(seconds * 1e9);
  let now = start;
  while (now < end) {
    for (let i = 0; i < 1000; i++) fn(n + i);
    n += 1000;
    now = process.hrtime.bigint();
  }
  return Math.round(n / (Number(now - start) / 1e9));
}

async function rateAsync(fn, seconds = 2) {
  for (let i = 0; i < 5000; i++) await fn(i);
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(seconds * 1e9);
  let now = start;
  while (now < end) {
    for (let i = 0; i < 500; i++) await fn(n + i);
    n += 500;
    now = process.hrtime.bigint();
  }
  return Math.round(n / (Number(now - start) / 1e9));
}

const router = Engine.compile(LAB, { policy: 'router' });
const requests = [
  { path: '/productpage', headers: { 'end-user': 'jason' } },
  { path: '/reviews/1', cookies: { user: 'u8' } },
  { path: '/reviews/2', headers: { 'user-agent': 'bench' } },
  { path: '/', headers: { 'x-pin-version': 'v2' } },
];
const routerRate = rate((i) => router.decide(requests[i & 3]));
const routeRate = rate((i) => router.route(requests[i & 3]));

const auth = Engine.compile({
  auth: {
    providers: [{ name: 'corp', jwt: { issuer: ISSUER, audiences: [AUDIENCE], jwks: await jwks() } }],
    rules: [{ match: {}, require: ['corp'] }],
    identity: { header: 'end-user' },
  },
});
const token = await mint('RS256', 'jason', Math.floor(Date.now() / 1000));
const authRequest = { path: '/orders', headers: { authorization: `Bearer ${token}` } };
const first = await auth.authorize(authRequest);
if (first.action !== 'forward') throw new Error(`the token was refused: ${JSON.stringify(first.reply)}`);
const authRate = await rateAsync(() => auth.authorize(authRequest));

// Cedar's package on a comparable rule (one principal permitted), its policy
// set parsed once (statefulIsAuthorized), as the issue asks.
const cedar = createRequire(import.meta.url)('@cedar-policy/cedar-wasm/nodejs');
const parsed = cedar.preparsePolicySet('routes', {
  staticPolicies: 'permit(principal == User::"jason", action == Action::"route", resource);',
});
if (parsed.type !== 'success') throw new Error(`cedar: ${JSON.stringify(parsed)}`);
const cedarCall = (who) => ({ principal: { type: 'User', id: who }, action: { type: 'Action', id: 'route' },
  resource: { type: 'Page', id: 'productpage' }, context: {}, preparsedPolicySetId: 'routes', entities: [] });
const cedarCalls = [cedarCall('jason'), cedarCall('bob')];
if (cedar.statefulIsAuthorized(cedarCalls[0]).response?.decision !== 'allow') throw new Error('cedar: jason not allowed');
const cedarRate = rate((i) => cedar.statefulIsAuthorized(cedarCalls[i & 1]));
const cedarWasm = new URL('../node_modules/@cedar-policy/cedar-wasm/nodejs/cedar_wasm_bg.wasm', import.meta.url);
const cedarBytes = readFileSync(cedarWasm);

const wasm = new URL('../pkg/wasm/switchyard_policy_bg.wasm', import.meta.url);
const bytes = readFileSync(wasm);
console.log(JSON.stringify({
  node: process.version,
  wasm_bytes: statSync(wasm).size,
  wasm_gzip_bytes: gzipSync(bytes, { level: 9 }).length,
  router_decisions_per_s: routerRate,
  router_route_only_per_s: routeRate,
  auth_cached_rs256_per_s: authRate,
  cedar: {
    version: cedar.getCedarVersion(),
    wasm_bytes: cedarBytes.length,
    wasm_gzip_bytes: gzipSync(cedarBytes, { level: 9 }).length,
    decisions_per_s: cedarRate,
  },
}, null, 2));
