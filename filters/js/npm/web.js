// Browser, worker and Deno entry point: the .wasm is fetched beside this
// file and instantiated before the module finishes loading (top-level await),
// so the API is ready on import, as in Node.
import init from './wasm/switchyard_policy.js';
import * as bindings from './wasm/switchyard_policy.js';
import { bind } from './api.js';

await init({ module_or_path: new URL('./wasm/switchyard_policy_bg.wasm', import.meta.url) });
bind(bindings);

export * from './api.js';
