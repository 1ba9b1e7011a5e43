// The playground in a real headless Chromium (Debian's, driven by
// playwright-core; no browser download): what a user sees. Run by
// `make browser-test` after `make playground-build`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile, mkdir } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { chromium } from 'playwright-core';

const ROOT = new URL('../../../target/playground/', import.meta.url).pathname;
// Written on every run; docs/playground.png (the README's) is a copy of one.
const SCREENSHOT = new URL('../../../target/playground-screenshot.png', import.meta.url).pathname;
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json' };

let server;
let base;
let browser;

before(async () => {
  server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(ROOT, path.endsWith('/') ? `${path}index.html` : path);
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}/`;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function open(url = base) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30000 });
  return { page, errors };
}

test('the example decides, and the decision follows the request as it is typed', async () => {
  const { page, errors } = await open();
  assert.equal(await page.textContent('#verdict'), 'forward → v2');
  assert.match(await page.textContent('#trace'), /jason-to-v2/);
  await page.fill('#headers', 'end-user: bob');
  await page.waitForFunction(() => document.getElementById('verdict').textContent === 'forward → v1');
  assert.match(await page.textContent('#trace'), /routes\[0\]\.match\.headers\.end-user: wants exact "jason", got bob/);
  await page.fill('#path', '/reviews/7');
  await page.fill('#cookies', 'user=u8');
  await page.waitForFunction(() => /bucket 90 of 100 for cookie:user = u8/.test(document.getElementById('summary').textContent));
  assert.deepEqual(errors, []);
  await page.close();
});

test('a bad configuration shows its field path', async () => {
  const { page } = await open();
  const config = JSON.parse(await page.inputValue('#config'));
  config.router.routes[1].split[0].weight = 0;
  config.router.routes[1].split[1].weight = 0;
  await page.fill('#config', JSON.stringify(config, null, 2));
  await page.waitForSelector('.config-error');
  assert.equal(await page.textContent('.config-error'), 'router.routes[1].split: total weight must be positive');
  assert.equal(await page.textContent('#verdict'), 'fix the configuration');
  await page.close();
});

test('a share link restores the whole state', async () => {
  const { page } = await open();
  await page.fill('#path', '/reviews/1');
  await page.fill('#headers', 'end-user: maria\nx-trace: 1');
  await page.fill('#cookies', 'user=u7');
  await page.click('#share');
  await page.waitForFunction(() => location.hash.includes('s='));
  const link = page.url();
  assert.match(link, /#v=\d+\.\d+\.\d+&s=/);
  await page.close();
  const again = await open(link);
  assert.equal(await again.page.inputValue('#path'), '/reviews/1');
  assert.equal(await again.page.inputValue('#headers'), 'end-user: maria\nx-trace: 1');
  assert.equal(await again.page.inputValue('#cookies'), 'user=u7');
  assert.equal(await again.page.textContent('#verdict'), 'forward → v1');
  await again.page.close();
});

test('the traffic view splits synthetic users and keeps sticky users stable', async () => {
  const { page } = await open();
  await page.fill('#path', '/reviews/1');
  await page.fill('#headers', '');
  await page.fill('#users', '2000');
  await page.click('#run-traffic');
  await page.waitForSelector('.bar');
  const counts = await page.$$eval('.bar', (bars) => Object.fromEntries(bars.map((b) => [b.querySelector('code').textContent.trim(), parseInt(b.querySelector('.count').textContent, 10)])));
  assert.equal(counts.v1 + counts.v2, 2000);
  assert.ok(counts.v2 > 140 && counts.v2 < 260, `v2 got ${counts.v2} of 2000`);
  assert.match(await page.textContent('#traffic-notes'), /0 changed version/);
  await mkdir(new URL('.', `file://${SCREENSHOT}`).pathname, { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  await page.close();
});

test('a token minted in the page is verified as the filter would, and routes its user', async () => {
  const { page, errors } = await open();
  await page.click('#add-key');
  await page.waitForFunction(() => JSON.parse(document.getElementById('config').value).auth?.providers?.length === 1);
  await page.waitForFunction(() => document.getElementById('verdict').textContent === '401 from auth');
  await page.fill('#headers', '');
  await page.fill('#sub', 'jason');
  await page.click('#mint');
  await page.waitForFunction(() => document.getElementById('verdict').textContent === 'forward → v2');
  assert.equal(await page.textContent('#auth-summary'), 'auth: allowed by playground as jason');
  await page.fill('#sub', 'bob');
  await page.click('#mint');
  await page.waitForFunction(() => document.getElementById('verdict').textContent === 'forward → v1');
  const tampered = (await page.inputValue('#headers')).replace(/\.([^.]*)$/, '.AAAA');
  await page.fill('#headers', tampered);
  await page.waitForFunction(() => document.getElementById('verdict').textContent === '401 from auth');
  assert.match(await page.textContent('#summary'), /switchyard_auth_token_bad_signature/);
  assert.deepEqual(errors, []);
  await page.close();
});
