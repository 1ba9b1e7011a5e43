// The shared vectors against the package: the same expectations the real
// .wasm filters meet in the harness (host-harness/tests/parity.rs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '@switchyard/policy';
import { load, configOf, requestOf } from './vectors.mjs';

const file = load();

function header(pairs, name) {
  const found = pairs.filter(([k]) => k === name).map(([, v]) => v);
  return found.length ? found.join(',') : null;
}

for (const v of file.vectors) {
  test(`parity: ${v.name}`, async () => {
    const engine = Engine.compile(await configOf(file, v.config), v.policy ? { policy: v.policy } : {});
    try {
      const request = await requestOf(v, Math.floor(Date.now() / 1000));
      const d = await engine.authorize(request);
      const status = d.reply?.status ?? 200;
      assert.equal(status, v.expect.status, JSON.stringify(d));
      for (const [name, want] of Object.entries(v.expect.upstream ?? {})) {
        const got = name === ':path' ? d.upstream.path : header(d.upstream.headers, name);
        assert.equal(got, want, `upstream ${name}: ${JSON.stringify(d)}`);
      }
      for (const [name, want] of Object.entries(v.expect.router ?? {})) {
        assert.equal(header(d.routerControls, name), want, `router ${name}: ${JSON.stringify(d)}`);
      }
      const response = d.reply ? d.reply.headers : d.responseHeaders;
      for (const [name, want] of Object.entries(v.expect.response ?? {})) {
        assert.equal(header(response, name), want, `response ${name}: ${JSON.stringify(d)}`);
      }
      if (v.expect.body) assert.match(d.reply?.body ?? '', new RegExp(v.expect.body), JSON.stringify(d));
    } finally {
      engine.free();
    }
  });
}
