// The playground: the package's own web build, so what it shows is what the
// engine (and the Envoy filter) decides. Everything runs in the page; the
// state travels in the URL fragment (deflate + base64url), with the engine
// version, so a link needs no server and never goes stale silently.
import { Engine, version } from './pkg/web.js';

const $ = (id) => document.getElementById(id);
const ENGINE_VERSION = version();

const EXAMPLE = {
  config: JSON.stringify({
    router: {
      default_version: 'v1',
      routes: [
        { name: 'jason-to-v2', match: { headers: { 'end-user': { exact: 'jason' } } }, version: 'v2' },
        { name: 'canary', match: { path: { prefix: '/reviews' } },
          split: [{ version: 'v1', weight: 90 }, { version: 'v2', weight: 10 }], sticky: { cookie: 'user' } },
      ],
    },
    timeouts: { rules: [{ name: 'reviews', match: { path: { prefix: '/reviews' } }, timeout_ms: 500 }] },
    shadow: { rules: [{ name: 'mirror-reviews', match: { path: { prefix: '/reviews' } }, percent: 10, target_cluster: 'reviews-v3' }] },
  }, null, 2),
  method: 'GET',
  path: '/productpage',
  headers: 'end-user: jason',
  cookies: '',
  claims: '',
};

function state() {
  return {
    config: $('config').value,
    method: $('method').value,
    path: $('path').value,
    headers: $('headers').value,
    cookies: $('cookies').value,
    claims: $('claims').value,
  };
}

function setState(s) {
  $('config').value = s.config ?? '';
  $('method').value = s.method ?? 'GET';
  $('path').value = s.path ?? '/';
  $('headers').value = s.headers ?? '';
  $('cookies').value = s.cookies ?? '';
  $('claims').value = s.claims ?? '';
}

// --- share links -----------------------------------------------------------

async function pack(obj) {
  const bytes = new TextEncoder().encode(JSON.stringify(obj));
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('deflate-raw'));
  const packed = new Uint8Array(await new Response(stream).arrayBuffer());
  let bin = '';
  for (const b of packed) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

async function unpack(text) {
  const bin = atob(text.replaceAll('-', '+').replaceAll('_', '/'));
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  return JSON.parse(await new Response(stream).text());
}

async function shareLink() {
  const fragment = `#v=${encodeURIComponent(ENGINE_VERSION)}&s=${await pack(state())}`;
  return `${location.origin}${location.pathname}${fragment}`;
}

async function fromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const s = params.get('s');
  if (!s) return null;
  const from = params.get('v');
  if (from && from !== ENGINE_VERSION) {
    $('share-status').textContent = `link made with engine ${from}; this page runs ${ENGINE_VERSION}`;
  }
  try {
    return await unpack(s);
  } catch {
    $('share-status').textContent = 'the link could not be read';
    return null;
  }
}

// --- the request -----------------------------------------------------------

function parseRequest(s) {
  const headers = {};
  for (const [i, line] of s.headers.split('\n').entries()) {
    if (!line.trim()) continue;
    const at = line.indexOf(':', line.startsWith(':') ? 1 : 0);
    if (at <= 0) throw new Error(`headers line ${i + 1}: expected "name: value"`);
    const name = line.slice(0, at).trim().toLowerCase();
    const value = line.slice(at + 1).trim();
    headers[name] = name in headers ? [].concat(headers[name], value) : value;
  }
  const cookies = {};
  for (const part of s.cookies.split(';')) {
    if (!part.trim()) continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`cookies: "${part.trim()}" is not name=value`);
    cookies[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  const request = { method: s.method, path: s.path || '/', headers, cookies };
  if (s.claims.trim()) {
    try {
      request.claims = JSON.parse(s.claims);
    } catch (e) {
      throw new Error(`claims: ${e.message}`);
    }
  }
  return request;
}

// --- a test identity (WebCrypto; the private key stays in this page) --------

const ISSUER = 'https://playground.switchyard.local';
const AUDIENCE = 'playground';
let pageKey = null;

async function key() {
  pageKey ??= await (async () => {
    const pair = await crypto.subtle.generateKey(
      { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      true, ['sign', 'verify']);
    const { kty, n, e } = await crypto.subtle.exportKey('jwk', pair.publicKey);
    return { pair, jwk: { kty, n, e, kid: 'playground', alg: 'RS256', use: 'sig' } };
  })();
  return pageKey;
}

const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');

async function mintToken(sub) {
  const { pair } = await key();
  const now = Math.floor(Date.now() / 1000);
  const enc = (obj) => b64url(new TextEncoder().encode(JSON.stringify(obj)));
  const input = `${enc({ alg: 'RS256', typ: 'JWT', kid: 'playground' })}.${enc({ iss: ISSUER, aud: AUDIENCE, sub, iat: now, exp: now + 3600 })}`;
  const sig = await crypto.subtle.sign('RSASSA-PKCS1-v1_5', pair.privateKey, new TextEncoder().encode(input));
  return `${input}.${b64url(sig)}`;
}

async function addKeyToConfig() {
  const { jwk } = await key();
  let config;
  try {
    config = JSON.parse($('config').value || '{}');
  } catch {
    $('request-error').textContent = 'fix the configuration\'s JSON first';
    return;
  }
  const provider = { name: 'playground', jwt: { issuer: ISSUER, audiences: [AUDIENCE], jwks: { keys: [jwk] } } };
  const auth = config.auth ?? { providers: [], rules: [{ match: {}, require_any: ['playground'] }], identity: { header: 'end-user' } };
  auth.providers = [...(auth.providers ?? []).filter((p) => p.name !== 'playground'), provider];
  config = { auth, ...config, auth };
  $('config').value = JSON.stringify(config, null, 2);
  update();
}

async function useToken() {
  const token = await mintToken($('sub').value.trim() || 'jason');
  const lines = $('headers').value.split('\n').filter((l) => l.trim() && !/^authorization\s*:/i.test(l));
  $('headers').value = [...lines, `authorization: Bearer ${token}`].join('\n');
  update();
}

// --- rendering -------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, attrs);
  for (const c of children) e.append(c);
  return e;
}

function showErrors(errors) {
  const list = $('config-errors');
  list.replaceChildren(...errors.map((e) => el('li', { className: 'config-error' },
    el('code', { textContent: [e.section, e.field].filter(Boolean).join('.') || '(document)' }), `: ${e.message}`)));
}

function summaryOf(d) {
  const parts = [];
  if (d.reply) {
    parts.push(el('div', { className: 'verdict', id: 'verdict', textContent: `${d.reply.status} from ${d.reply.policy}` }),
      el('div', { textContent: d.reply.details }));
    return parts;
  }

  const version = d.router ? d.router.version : '(no router)';
  parts.push(el('div', { className: 'verdict', id: 'verdict', textContent: `forward → ${version}` }));
  if (d.auth) {
    parts.push(el('div', { id: 'auth-summary', textContent: d.auth.verdict === 'allow'
      ? `auth: allowed${d.auth.provider ? ` by ${d.auth.provider}` : ' (anonymous)'}${d.auth.subject ? ` as ${d.auth.subject}` : ''}`
      : `auth: would deny (${d.auth.reason}), dry run` }));
  }
  if (d.router) {
    let why = `rule ${d.router.rule} (${d.router.reason})`;
    if (d.router.split) why += `, bucket ${d.router.split.bucket} of ${d.router.split.total}${d.router.split.stickyKey ? ` for ${d.router.split.stickyBy} = ${d.router.split.stickyKey}` : ''}`;
    parts.push(el('div', { textContent: why }));
  }
  if (d.timeouts) {
    const t = d.timeouts;
    parts.push(el('div', { textContent: `timeout: ${t.budgetMs ?? 'route default'}${t.budgetMs ? ' ms' : ''}${t.rule ? ` (rule ${t.rule})` : ''}${t.retries ? `, ${t.retries.attempts} retries on ${t.retries.retryOn}` : ''}${t.fault ? `, fault ${t.fault.name}` : ''}` }));
  }
  if (d.shadow) {
    const m = d.shadow.mirror;
    parts.push(el('div', { textContent: m ? `shadow: ${m.rule} → ${m.cluster} (${m.outcome})` : 'shadow: no rule' }));
  }
  if (d.path.normalized) parts.push(el('div', { textContent: `path decided on as ${d.path.decidedOn}` }));
  return parts;
}

function showDecision(d) {
  $('summary').replaceChildren(...summaryOf(d));
  const rows = (d.trace ?? []).map((t) => el('tr', {},
    el('td', { textContent: t.policy }),
    el('td', { textContent: t.rule }),
    el('td', { className: t.matched ? 'yes' : 'no', textContent: t.matched ? 'yes' : 'no' }),
    el('td', { textContent: t.unmet ? `${t.unmet.field}: wants ${t.unmet.expected}, got ${t.unmet.actual ?? '(absent)'}` : (t.note ?? '') })));
  $('trace').tBodies[0].replaceChildren(...rows);
  $('decision').textContent = JSON.stringify(d, null, 2);
}

// --- live evaluation -------------------------------------------------------

let engine = null;
let compiledText = null;

function compile(text) {
  if (text === compiledText && engine) return engine;
  const checked = Engine.check(text);
  showErrors(checked.errors);
  engine?.free();
  engine = null;
  compiledText = text;
  if (checked.ok) engine = Engine.compile(text);
  return engine;
}

let latest = 0;

// With an auth section the page runs authorize(): the token in the headers
// is verified as the filter would (a remote JWKS is fetched with the page's
// fetch, so offline it answers 503); without one, decide() on the claims typed.
async function update() {
  const turn = ++latest;
  const s = state();
  const e = compile(s.config);
  $('request-error').textContent = '';
  if (!e) {
    $('summary').replaceChildren(el('div', { className: 'verdict', id: 'verdict', textContent: 'fix the configuration' }));
    return;
  }
  try {
    const request = parseRequest(s);
    const d = hasAuth(s.config) ? await e.authorize(request, { explain: true }) : e.decide(request, { explain: true });
    if (turn === latest) showDecision(d);
  } catch (err) {
    if (turn === latest) $('request-error').textContent = err.message;
  }
}

function hasAuth(text) {
  try {
    return Boolean(JSON.parse(text).auth);
  } catch {
    return false;
  }
}

function runTraffic() {
  const s = state();
  const e = compile(s.config);
  if (!e) return;
  const users = Math.max(1, Math.min(100000, Number($('users').value) || 1000));
  const cookie = $('sticky-cookie').value.trim();
  let base;
  try {
    base = parseRequest(s);
  } catch (err) {
    $('request-error').textContent = err.message;
    return;
  }
  const counts = new Map();
  let changed = 0;
  let shadowed = 0;
  for (let i = 0; i < users; i++) {
    const req = { ...base, cookies: cookie ? { ...base.cookies, [cookie]: `user-${i}` } : base.cookies };
    const first = e.decide(req);
    const again = e.decide(req);
    const v = first.reply ? `${first.reply.status}` : (first.router?.version ?? 'forward');
    counts.set(v, (counts.get(v) ?? 0) + 1);
    if ((again.router?.version) !== (first.router?.version)) changed++;
    if (first.shadow?.mirror?.outcome === 'shadowed') shadowed++;
  }
  const bars = [...counts].sort().map(([v, n]) => el('div', { className: 'bar' },
    el('code', { textContent: v.padEnd(6) }),
    el('span', { className: 'fill', style: `width:${Math.max(1, (n / users) * 300)}px` }),
    el('span', { className: 'count', textContent: `${n} (${((n / users) * 100).toFixed(1)} %)` })));
  $('traffic-chart').replaceChildren(...bars);
  $('traffic-notes').textContent = `${users} users, each sent twice: ${changed} changed version on the second request; ${shadowed} mirrored.`;
}

async function init() {
  $('engine-version').textContent = `engine ${ENGINE_VERSION}`;
  setState((await fromFragment()) ?? EXAMPLE);
  for (const id of ['config', 'method', 'path', 'headers', 'cookies', 'claims']) {
    $(id).addEventListener('input', update);
  }
  $('run-traffic').addEventListener('click', runTraffic);
  $('add-key').addEventListener('click', addKeyToConfig);
  $('mint').addEventListener('click', useToken);
  $('share').addEventListener('click', async () => {
    const link = await shareLink();
    history.replaceState(null, '', link);
    try {
      await navigator.clipboard.writeText(link);
      $('share-status').textContent = 'link copied';
    } catch {
      $('share-status').textContent = 'link in the address bar';
    }
  });
  await update();
  document.body.dataset.ready = 'true';
}

init();
