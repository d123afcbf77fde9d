// @extism/extism 1.0.3 never frees kernel memory blocks between calls; without the host's reset()
// after each call, every call fails after some thousands (measured on these machines: about 8-16 thousand calls). 50,000 calls
// prove the host stays healthy: every answer right, memory flat after warm-up. Then 5,000 `token`
// calls served from the cache, which go through the host imports (memory blocks made by the host).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, Instance, loadModule } from '../src/index.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WASM, ROOT } from './support.js';

const MiB = 1 << 20;
const CALLS = 50000;
const rss = () => process.memoryUsage().rss;

let host;
before(async () => {
  host = await createClient({ wasm: WASM });
});
after(() => host?.close());

test(`${CALLS} encode calls: every answer right, memory bounded`, async () => {
  const req = { provider: 'nikohealth', domain: 'acme', client_id: 'niko-client', client_secret: 'niko:secret+with space', scope: 'external' };
  const input = JSON.stringify(req);
  const want = JSON.stringify((await host.encode(req)).request);
  assert.match(want, /"url":"https:\/\/acme\.nikohealth\.com\/api\/identity\/connect\/token"/);

  const start = performance.now();
  const marks = {};
  for (let i = 1; i <= CALLS; i++) {
    const got = await host.call('encode', input);
    if (JSON.stringify(got.request) !== want) assert.fail(`call ${i}: ${JSON.stringify(got)}`);
    if (i === 2000 || i % 10000 === 0) marks[i] = rss();
  }
  const ms = performance.now() - start;
  const grown = marks[CALLS] - marks[2000];
  const line = Object.entries(marks).map(([i, b]) => `${i}: ${(b / MiB).toFixed(1)}`).join(', ');
  console.log(`${CALLS} encode calls in ${(ms / 1000).toFixed(1)} s (${((ms * 1000) / CALLS).toFixed(0)} us/call); RSS MiB at ${line}; grew ${(grown / MiB).toFixed(1)} MiB after warm-up`);
  // Leaked blocks would cost about 1 KiB per call (input, output, the plugin's blocks): ~48 MiB here,
  // and the calls would fail long before. The bound leaves room for the GC's own rhythm.
  assert.ok(grown < 40 * MiB, `RSS grew ${(grown / MiB).toFixed(1)} MiB between call 2000 and call ${CALLS}`);
});

test(`${CALLS} token_step calls on one instance: the kernel arena never grows`, async () => {
  // Blocks never outlive a call (the arena is reset at the start of each), so the arena in use after
  // every call is the same: a leak would show on the second call.
  const inst = new Instance(await loadModule(WASM));
  const input = JSON.stringify({ request: { provider: 'candid', client_id: 'c', client_secret: 'candid-secret-1', now_ms: 1767225600000 } });
  const want = inst.call('token_step', input).replace(/"state":"[^"]*"/, '');
  const arena = inst.arenaBytes;
  for (let i = 1; i <= CALLS; i++) {
    const got = inst.call('token_step', input);
    if (got.replace(/"state":"[^"]*"/, '') !== want) assert.fail(`call ${i}: ${got}`);
    if (inst.arenaBytes !== arena) assert.fail(`call ${i}: arena ${inst.arenaBytes} bytes, ${arena} after the first`);
  }
});

test('a block a call allocates holds zeros, whatever an earlier call left in the arena', async () => {
  // The kernel's test plugin (host/internal/extism/testdata/faults.wat): echo copies its input into a
  // block and outputs it; fresh outputs a new block, unwritten, as long as its input.
  const faults = await loadModule(readFileSync(join(ROOT, 'host/internal/extism/testdata/faults.wasm')));
  const inst = new Instance(faults);
  const secret = 'client_secret=hunter2;'.repeat(50);
  assert.equal(inst.call('echo', secret), secret);
  const fresh = inst.call('fresh', 'x'.repeat(2 * secret.length));
  assert.equal(fresh, '\0'.repeat(2 * secret.length), `an earlier call's bytes: ${JSON.stringify(fresh.replace(/\0+/g, '').slice(0, 40))}`);
});
