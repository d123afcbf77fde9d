// Runs test/suite.js in the runtime that runs this file (Node, Deno or Bun):
//   <runtime> test/run-suite.js ENV.json
// ENV.json (written by test/runtimes.js) holds the plugin's path, the vectors and the servers' URLs.
// Prints one JSON line per case; exits 1 if any failed.
import { readFileSync } from 'node:fs';
import process from 'node:process';
import { run } from './suite.js';

const env = JSON.parse(readFileSync(process.argv[2], 'utf8'));
env.wasm = readFileSync(env.wasmPath);
env.rss = async () => (globalThis.Deno ? Deno.memoryUsage().rss : process.memoryUsage().rss);
const results = await run(env, (r) => console.log(JSON.stringify(r)));
process.exit(results.every((r) => r.ok) ? 0 : 1);
