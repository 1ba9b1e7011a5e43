// The package's API as a Node user calls it: compile once, decide, explain,
// typed errors for every bad input, freed engines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Engine, ConfigError, RequestError, OptionsError, StateError, SwitchyardError, diffResponses, version,
} from '@switchyard/policy';

const LAB = {
  default_version: 'v1',
  routes: [
    { name: 'jason-to-v2', match: { headers: { 'end-user': { exact: 'jason' } } }, version: 'v2' },
    { name: 'canary', match: { path: { prefix: '/reviews' } },
      split: [{ version: 'v1', weight: 90 }, { version: 'v2', weight: 10 }], sticky: { cookie: 'user' } },
  ],
};

test('a compiled router decides, and is reused across requests', () => {
  const engine = Engine.compile(LAB, { policy: 'router' });
  const d = engine.decide({ path: '/productpage', headers: { 'End-User': 'jason' } });
  assert.equal(d.action, 'forward');
  assert.deepEqual([d.router.version, d.router.rule, d.router.reason], ['v2', 'jason-to-v2', 'route']);
  assert.deepEqual(d.upstream.headers.find(([k]) => k === 'x-version'), ['x-version', 'v2']);
  assert.deepEqual(d.responseHeaders, [['x-served-version', 'v2']]);
  const other = engine.decide({ path: '/productpage' });
  assert.equal(other.router.version, 'v1');
  assert.equal(other.router.reason, 'default');
  engine.free();
});

test('a sticky split reports its key and bucket, stable per user', () => {
  const engine = Engine.compile(LAB, { policy: 'router' });
  const a = engine.decide({ path: '/reviews/1', cookies: { user: 'u8' } });
  assert.equal(a.router.reason, 'sticky_split');
  assert.deepEqual(a.router.split, { bucket: 90, total: 100, stickyBy: 'cookie:user', stickyKey: 'u8' });
  for (let i = 0; i < 20; i++) {
    assert.equal(engine.decide({ path: '/reviews/1', cookies: { user: 'u8' } }).router.version, 'v2');
  }
  engine.free();
});

test('a random split holds 90/10 over many requests and honours options.random', () => {
  const engine = Engine.compile(LAB, { policy: 'router' });
  let v2 = 0;
  for (let i = 0; i < 1000; i++) {
    if (engine.decide({ path: '/reviews/1' }).router.version === 'v2') v2++;
  }
  assert.ok(v2 >= 95 && v2 <= 105, `v2 got ${v2} of 1000`);
  assert.equal(engine.decide({ path: '/reviews/1' }, { random: 0.95 }).router.version, 'v2');
  assert.equal(engine.decide({ path: '/reviews/1' }, { random: 0.05 }).router.version, 'v1');
  engine.free();
});

test('route() answers what decide().router does, without the rest', () => {
  const engine = Engine.compile({ router: { ...LAB, override: { header: 'x-pin', allow: ['v2'] } } });
  const requests = [
    { path: '/productpage', headers: { 'end-user': 'jason' } },
    { path: '/reviews/1', cookies: { user: 'u8' } },
    { path: '/reviews/1', cookies: { user: 'u7' } },
    { path: '/x/../reviews/1', cookies: { user: 'u8' } },
    { path: '/', headers: { 'x-pin': 'v2' } },
    { path: '/' },
    { path: '/reviews/1', headers: { cookie: 'a=1' }, cookies: { user: 'u8' } },
    { path: '/productpage', headers: { 'End-User': 'bob', 'end-user': 'jason' } },
    { path: '/productpage', headers: { 'end-user': ['jason', 'bob'] } },
    { path: '/productpage', claims: { sub: 'x' }, headers: { 'end-user': 'jason' } },
    { path: '/reviews/1', cookies: { 'ü': 'x', user: 'u8' } },
    { path: '/reviews/1', headers: { Cookie: ['user=u8', 'b=2'] }, cookies: { c: '3' } },
    { path: '/productpage', method: undefined, headers: { 'end-user': 'jason', 'x-gone': undefined } },
    { path: '/productpage', headers: { 'x-pin': 'v2', 'end-user': 'jason' } },
  ];
  for (const r of requests) {
    const d = engine.decide(r).router;
    assert.deepEqual(engine.route(r), { version: d.version, rule: d.rule }, JSON.stringify(r));
  }
  assert.equal(engine.route({ path: '/reviews/1' }, { random: 0.95 }).version, 'v2');
  assert.deepEqual(engine.route({ path: '/a%2fb' }), { status: 400 });
  assert.throws(() => engine.route({ headers: { a: 1 } }), RequestError);
  // What the compact form cannot carry goes as JSON, whose parser names the field.
  for (const bad of [{ method: null }, { headers: null }, { headers: ['a'] }, { cookies: { a: 1 } }, { pathh: '/' }]) {
    assert.throws(() => engine.route(bad), RequestError, JSON.stringify(bad));
  }
  assert.throws(() => engine.route({ headers: { ':path': '/x' } }), (e) => e instanceof RequestError && e.field === 'headers.:path');
  engine.free();
  const noRouter = Engine.compile({ timeouts: {} });
  assert.throws(() => noRouter.route({ path: '/' }), StateError);
  noRouter.free();
});

test('explain traces every rule tried and the condition that failed', () => {
  const engine = Engine.compile(LAB, { policy: 'router' });
  const d = engine.decide({ path: '/reviews/1', headers: { 'end-user': 'bob' } }, { explain: true });
  assert.deepEqual(d.trace[0], {
    policy: 'router', rule: 'jason-to-v2', matched: false,
    unmet: { field: 'routes[0].match.headers.end-user', expected: 'exact "jason"', actual: 'bob' },
  });
  assert.equal(d.trace[1].rule, 'canary');
  assert.equal(d.trace[1].matched, true);
  assert.equal(engine.decide({ path: '/' }).trace, undefined, 'no trace unless asked');
  engine.free();
});

test('the chain decides path, router, timeouts and shadow on verified claims', () => {
  const engine = Engine.compile({
    router: { default_version: 'v1', routes: [{ match: { claims: { sub: { exact: 'jason' } } }, version: 'v2' }] },
    timeouts: {
      rules: [{ name: 'jason', match: { claims: { sub: { exact: 'jason' } } }, timeout_ms: 250 }],
      deadline: { inbound: ['x-request-timeout-ms'] },
    },
    shadow: { rules: [{ name: 'all', percent: 100, target_cluster: 'shadow' }] },
  });
  const d = engine.decide({ path: '/a/./b//c', claims: { sub: 'jason' }, headers: { 'x-request-timeout-ms': '100' } }, { nowMs: 1000 });
  assert.equal(d.path.decidedOn, '/a/b/c');
  assert.equal(d.path.normalized, true);
  assert.equal(d.router.version, 'v2');
  assert.equal(d.timeouts.rule, 'jason');
  assert.equal(d.timeouts.budgetMs, 100, 'the caller deadline caps the rule');
  assert.equal(d.timeouts.capped, true);
  assert.equal(d.shadow.mirror.outcome, 'shadowed');
  assert.equal(d.upstream.path, '/a/b/c');
  const late = engine.decide({ path: '/', claims: { sub: 'jason' } }, { nowMs: 1000, arrivedMs: 900 });
  assert.equal(late.timeouts.budgetMs, 150, 'time already spent counts against the budget');
  engine.free();
});

test('a fault delay is followed to its end: the budget left after it is forwarded', () => {
  const engine = Engine.compile({
    rules: [{ name: 'api', timeout_ms: 1000 }],
    faults: [{ name: 'slow', delay: { fixed_ms: 300 } }],
  }, { policy: 'timeouts' });
  const d = engine.decide({ path: '/' }, { nowMs: 0 });
  assert.deepEqual(d.timeouts.fault, { name: 'slow', delayMs: 300, aborted: false });
  assert.equal(d.timeouts.budgetMs, 700);
  engine.free();
});

test('an ambiguous path is answered 400 before any policy', () => {
  const engine = Engine.compile({ router: LAB });
  const d = engine.decide({ path: '/public/..%2fadmin' });
  assert.equal(d.action, 'reply');
  assert.equal(d.reply.status, 400);
  assert.equal(d.reply.policy, 'path');
  assert.equal(d.path.rejected, 'encoded_slash');
  assert.equal(d.router, undefined);
  engine.free();
});

test('a bad configuration throws a ConfigError with the filter\'s field and message', () => {
  const bad = { default_version: 'v1', routes: [{ split: [{ version: 'v1', weight: 0 }] }] };
  assert.throws(() => Engine.compile(bad, { policy: 'router' }), (e) => {
    assert.ok(e instanceof ConfigError && e instanceof SwitchyardError);
    assert.equal(e.field, 'routes[0].split');
    assert.equal(e.message, 'routes[0].split: total weight must be positive');
    return true;
  });
  assert.throws(() => Engine.compile({ router: bad }), (e) => e.section === 'router' && e.field === 'routes[0].split');
  assert.throws(() => Engine.compile({ routes: [] }), (e) => e instanceof ConfigError && e.field === 'routes');
  assert.throws(() => Engine.compile('{"router": {"default_version": "v1", "default_version": "v2"}}'),
    (e) => e instanceof ConfigError && /duplicate/.test(e.message));
  assert.throws(() => Engine.compile(LAB, { policy: 'routr' }), OptionsError);
});

test('check never throws and lists the error for an editor', () => {
  assert.deepEqual(Engine.check(LAB, { policy: 'router' }), { ok: true, errors: [] });
  const r = Engine.check({ router: { default_version: 'v1', routes: [{ version: 'v1', sticky: { header: 'u' } }] } });
  assert.equal(r.ok, false);
  assert.deepEqual(r.errors[0], { kind: 'config', section: 'router', field: 'routes[0].sticky', message: 'only applies to a split' });
  const cyclic = {}; cyclic.self = cyclic;
  assert.equal(Engine.check(cyclic).ok, false);
  assert.equal(Engine.check('{not json').ok, false);
  assert.equal(Engine.check(undefined).ok, true, 'no sections: nothing to check');
});

test('bad requests and options are typed errors, and the engine keeps working', () => {
  const engine = Engine.compile(LAB, { policy: 'router' });
  assert.throws(() => engine.decide({ headers: { a: 1 } }), (e) => e instanceof RequestError && e.field === 'headers.a');
  assert.throws(() => engine.decide({ headers: { ':path': '/x' } }), RequestError);
  assert.throws(() => engine.decide({ path: '/' }, { nowMs: 'soon' }), (e) => e instanceof OptionsError && e.field === 'options.nowMs');
  assert.throws(() => engine.decide(10n), RequestError);
  assert.equal(engine.decide({ path: '/productpage', headers: { 'end-user': 'jason' } }).router.version, 'v2');
  engine.free();
});

test('hostile inputs never abort the module', () => {
  const engine = Engine.compile({ router: LAB, timeouts: { rules: [{ name: 'r', timeout_ms: 5 }], deadline: { inbound: ['grpc-timeout', 'x-t'] } } });
  const junk = ['', '\u0000', '\uffff', '%', '%zz', '/%2', '//..//..', 'a'.repeat(100000), '\ud800', '/ä/%C3%A4', '*', '?', '/?a=%'];
  let decided = 0;
  for (const s of junk) {
    for (const req of [
      { path: s }, { method: s, path: '/' }, { headers: { [s || 'x']: s } }, { cookies: { [s]: s } },
      { headers: { 'grpc-timeout': s, 'x-t': s, cookie: s } }, { headers: { 'end-user': [s, s] } },
    ]) {
      for (const call of [() => engine.decide(req), () => engine.route(req)]) {
        try {
          call();
          decided++;
        } catch (e) {
          assert.ok(e instanceof SwitchyardError, `${JSON.stringify(req).slice(0, 80)}: ${e}`);
        }
      }
    }
  }
  assert.ok(decided > 100, `decided ${decided}`);
  const many = {};
  for (let i = 0; i < 5000; i++) many[`h${i}`] = 'v'.repeat(20);
  assert.equal(engine.decide({ headers: many }).router.version, 'v1');
  assert.equal(engine.decide({ path: '/productpage', headers: { 'end-user': 'jason' } }).router.version, 'v2');
  engine.free();
});

test('a freed engine throws a StateError instead of touching freed memory', () => {
  const engine = Engine.compile(LAB, { policy: 'router' });
  engine.free();
  engine.free();
  assert.throws(() => engine.decide({ path: '/' }), StateError);
  assert.throws(() => new Engine(), StateError);
});

test('diffResponses reports status, headers and every JSON-pointer difference', () => {
  const primary = { status: 200, headers: [['content-type', 'application/json'], ['date', 'x']], body: { id: 1, items: [{ n: 1 }, { n: 2 }], at: 't1' } };
  const shadow = { status: 200, headers: [['content-type', 'application/json'], ['date', 'y']], body: { id: 1, items: [{ n: 1 }, { n: 3 }], at: 't2', extra: true } };
  const d = diffResponses(primary, shadow, { ignore_json_paths: ['/at'], ignore_headers: ['date'] });
  assert.equal(d.match, false);
  assert.deepEqual(d.headers, [], 'date was ignored');
  assert.deepEqual(diffResponses(primary, shadow).headers, ['date']);
  assert.deepEqual(d.body, ['/extra: absent vs true', '/items/1/n: 2 vs 3']);
  assert.equal(diffResponses(primary, { ...primary, headers: [['content-type', 'text/plain']] }).headers[0], 'content-type');
  assert.deepEqual(diffResponses({ status: 200, body: 'a' }, { status: 500, body: 'b' }).status, [200, 500]);
  assert.equal(diffResponses({ status: 200, body: 'same' }, { status: 200, body: 'same' }).match, true);
  assert.throws(() => diffResponses({ status: 'ok' }, { status: 200 }), (e) => e instanceof RequestError && e.field.startsWith('primary'));
  assert.throws(() => diffResponses({ status: 200 }, { status: 200 }, { ignore_json_paths: ['at'] }), OptionsError);
});

test('the version is the crate\'s', () => {
  assert.match(version(), /^\d+\.\d+\.\d+$/);
});
