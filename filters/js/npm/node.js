// Node entry point: the one .wasm (shared with the web build), read from
// disk and instantiated synchronously, so the API is ready on import.
import { readFileSync } from 'node:fs';
import { initSync } from './wasm/switchyard_policy.js';
import * as bindings from './wasm/switchyard_policy.js';
import { bind } from './api.js';

initSync({ module: readFileSync(new URL('./wasm/switchyard_policy_bg.wasm', import.meta.url)) });
bind(bindings);

export * from './api.js';
