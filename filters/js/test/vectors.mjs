// The shared decision vectors (tests/vectors/decisions.json), resolved for
// Node: named configs, the test keys' JWKS, and tokens minted with jose.
import { readFileSync } from 'node:fs';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { SignJWT, exportJWK } from 'jose';

const root = new URL('../../../', import.meta.url);
const KEYS = { RS256: ['rsa', 'rsa'], ES256: ['ec256', 'p256'], ES384: ['ec384', 'p384'], EdDSA: ['ed25519', 'ed'] };

export const ISSUER = 'https://idp.example.com';
export const AUDIENCE = 'gateway';

function keyFile(name) {
  return readFileSync(new URL(`tests/keys/${name}`, root), 'utf8');
}

export async function jwks() {
  const keys = [];
  for (const [alg, [file, kid]] of Object.entries(KEYS)) {
    const jwk = await exportJWK(createPublicKey(keyFile(`${file}.pub.pem`)));
    keys.push({ ...jwk, kid, alg, use: 'sig' });
  }
  return { keys };
}

/** A token for `sub`, valid ten minutes from `nowS` (or expired an hour ago). */
export async function mint(alg, sub, nowS, { expired = false, claims = {} } = {}) {
  const [file, kid] = KEYS[alg];
  const iat = expired ? nowS - 7200 : nowS;
  return new SignJWT({ groups: ['dev'], ...claims })
    .setProtectedHeader({ alg, kid })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(sub)
    .setIssuedAt(iat)
    .setExpirationTime(expired ? nowS - 3600 : nowS + 600)
    .sign(createPrivateKey(keyFile(`${file}.pem`)));
}

export function load() {
  return JSON.parse(readFileSync(new URL('tests/vectors/decisions.json', root), 'utf8'));
}

/** Named configs expanded ("@auth" inside the chain) and "{{jwks}}" filled in. */
export async function configOf(file, name) {
  const set = await jwks();
  const expand = (v) => {
    if (v === '{{jwks}}') return set;
    if (typeof v === 'string' && v.startsWith('@')) return expand(file.configs[v.slice(1)]);
    if (Array.isArray(v)) return v.map(expand);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, expand(x)]));
    return v;
  };
  return expand(file.configs[name]);
}

/** The request with every "{{jwt:ALG:SUB[:expired]}}" minted. */
export async function requestOf(vector, nowS) {
  const text = JSON.stringify(vector.request);
  const tokens = [...text.matchAll(/\{\{jwt:([A-Za-z0-9]+):([^:}]+)(:expired)?\}\}/g)];
  let out = text;
  for (const [all, alg, sub, expired] of tokens) {
    out = out.replace(all, await mint(alg, sub, nowS, { expired: Boolean(expired) }));
  }
  return JSON.parse(out);
}
