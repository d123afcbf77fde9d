import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '../../..');
export const WASM = process.env.TOKENWASM_WASM || resolve(ROOT, 'host/tokenwasm.wasm');
export const TESTDATA = resolve(ROOT, 'testdata');
