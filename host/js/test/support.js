// Test support for Node (the runners and node --test): where the plugin and the vectors are, the vector loader and matcher (the rules of internal/conformance), and the Go
// fake providers.
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createServer } from 'node:http';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '../../..');
/** The plugin under test: $TOKENWASM_WASM (relative to the working directory), else host/tokenwasm.wasm. */
export const WASM = process.env.TOKENWASM_WASM ? resolve(process.env.TOKENWASM_WASM) : resolve(ROOT, 'host/tokenwasm.wasm');
export const TESTDATA = resolve(ROOT, 'testdata');

/**
 * rawMember returns the exact text of a top-level member's value in a JSON object document, so a
 * vector's input reaches the plugin as the same bytes the Go suites pass (json.RawMessage), not as a
 * re-serialization.
 */
export function rawMember(text, name) {
  let i = 0;
  const ws = () => {
    while (' \t\r\n'.includes(text[i]) && i < text.length) i++;
  };
  const skipString = () => {
    for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++;
    i++;
  };
  const skipValue = () => {
    if (text[i] === '"') return skipString();
    let depth = 0;
    for (; i < text.length; i++) {
      const c = text[i];
      if (c === '"') {
        skipString();
        i--;
      } else if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        if (depth === 0) return; // the end of the enclosing object
        if (--depth === 0) return void i++;
      } else if (depth === 0 && c === ',') return;
    }
  };
  ws();
  if (text[i] !== '{') throw new Error('not a JSON object');
  for (i++; ; ) {
    ws();
    if (text[i] === '}') return undefined;
    const k0 = i;
    skipString();
    const key = JSON.parse(text.slice(k0, i));
    ws();
    i++; // ':'
    ws();
    const v0 = i;
    skipValue();
    if (key === name) return text.slice(v0, i).trimEnd();
    ws();
    if (text[i] === ',') i++;
  }
}

/** loadVectors reads every vector testdata/<dir>/*.json (sorted by path, files without export skipped). */
export function loadVectors(dir = TESTDATA) {
  const paths = readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .flatMap((d) => readdirSync(join(dir, d.name)).filter((f) => f.endsWith('.json')).map((f) => join(dir, d.name, f)))
    .sort();
  const vectors = [];
  for (const path of paths) {
    const text = readFileSync(path, 'utf8');
    const v = JSON.parse(text);
    if (!v.export) continue; // not a vector
    vectors.push({ ...v, path, rawInput: rawMember(text, 'input') ?? 'null' });
  }
  return vectors;
}

export { match } from './match.js';

/**
 * fakesBinary returns the `tokenwasm` command as {bin, cleanup}: $TOKENWASM_FAKES_BIN (run-tests.sh
 * builds it), else one built now with `go build` into a temporary folder that cleanup removes.
 */
export function fakesBinary() {
  if (process.env.TOKENWASM_FAKES_BIN) return { bin: process.env.TOKENWASM_FAKES_BIN, cleanup: () => {} };
  const dir = mkdtempSync(join(tmpdir(), 'tokenwasm-js-'));
  const bin = join(dir, 'tokenwasm');
  execFileSync('go', ['build', '-o', bin, '.'], { cwd: join(ROOT, 'host/cmd/tokenwasm'), stdio: 'inherit' });
  return { bin, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * startFakes runs `tokenwasm fakes` (the four fake providers on loopback) and resolves to
 * {fakes, stop}: fakes is its JSON line ({provider: {token_url, api_url, stats_url, config}}).
 */
export async function startFakes() {
  const { bin, cleanup } = fakesBinary();
  const child = spawn(bin, ['fakes', '-quiet'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('error', reject);
    child.once('exit', (code, signal) => reject(new Error(`tokenwasm fakes exited (${code ?? signal}) before printing its URLs`)));
  });
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => resolve(clearTimeout(kill)));
      child.kill('SIGINT'); // the command stops on an interrupt
    }).finally(cleanup);
  return { fakes: JSON.parse(line), stop };
}

/**
 * serve starts a loopback HTTP server for one test; handler(req, res, n) answers each request once its
 * body is read, n counting requests from 1. close() also ends connections still open (a stalled case).
 */
export async function serve(handler) {
  let n = 0;
  const server = createServer((req, res) => {
    const seq = ++n;
    req.resume();
    req.on('end', () => handler(req, res, seq));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/token`,
    count: () => n,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}
