// Bounded memory on one long-lived instance. The plugin keeps what it holds of a request in buffers
// it reuses (plugin/core/memo.go) and refuses a request over 256 KiB; the kernel caps each
// instance's WebAssembly memory (src/kernel.js, createClient's memoryLimitBytes) and the client
// replaces an instance over its cap. Before: 80 forced fetches of a request with 1 MiB of params grew
// this process by 1.3 GB (the plugin parsed, encoded and hashed the request anew at every step, and
// TinyGo's collector keeps most of what it allocates in megabytes; nothing capped the instance).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createClient, Instance, loadModule, PluginTrap, DEFAULT_MEMORY_LIMIT_BYTES } from '../src/index.js';
import { WASM } from './support.js';

const MiB = 1 << 20;
const MAX_REQUEST_BYTES = 256 << 10; // plugin/core MaxRequestBytes
const FETCHES = 80;
const rss = () => process.memoryUsage().rss;

// The client's instances are its own: every instance that runs a call is recorded here.
const used = new Set();
const call = Instance.prototype.call;
Instance.prototype.call = function (...args) {
  used.add(this);
  return call.apply(this, args);
};

// A provider that reads the whole body and answers a token.
let provider;
let bodyBytes = 0;
before(async () => {
  const server = createServer((req, res) => {
    let n = 0;
    req.on('data', (chunk) => (n += chunk.length));
    req.on('end', () => {
      bodyBytes = n;
      res.setHeader('Content-Type', 'application/json');
      res.end('{"access_token":"big-token","token_type":"Bearer","expires_in":3600}');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  provider = { url: `http://127.0.0.1:${server.address().port}/token`, close: () => new Promise((resolve) => server.close(resolve)) };
});
after(() => provider?.close());

/** request returns a forced request whose JSON (what the plugin is given) is size bytes, its one parameter made of fill. */
function request(size, fill, secret = 's') {
  const req = { provider: 'nikohealth', client_id: 'c', client_secret: secret, token_url: provider.url, force: true, params: { pad: '' } };
  req.params.pad = fill.repeat(size - JSON.stringify(req).length);
  assert.equal(JSON.stringify(req).length, size);
  return req;
}

/**
 * fetches runs FETCHES forced fetches of reqs (in turn) on a client of one instance and returns
 * the answers, the instances that ran calls, the instance's memory after each fetch, and the growth
 * of this process's resident memory from the 5th fetch on.
 */
async function fetches(reqs, options = {}) {
  const client = await createClient({ wasm: WASM, allowLoopback: true, instances: 1, ...options });
  used.clear();
  const answers = [];
  const memory = [];
  let start = 0;
  for (let i = 0; i < FETCHES; i++) {
    if (i === 5) start = rss();
    answers.push(await client.token(reqs[i % reqs.length]));
    memory.push([...used].at(-1).memoryBytes);
  }
  const grown = rss() - start;
  await client.close();
  return { answers, instances: used.size, memory, grown };
}

const mib = (n) => `${(n / MiB).toFixed(1)} MiB`;

test(`${FETCHES} forced fetches of a request with 1 MiB of params on one instance: refused, memory flat`, async () => {
  const { answers, instances, memory, grown } = await fetches([request(MiB + 300, 'v')]);
  console.log(`1 MiB of params: RSS grew ${mib(grown)} from fetch 5 to ${FETCHES}; instance memory ${mib(memory[0])} -> ${mib(memory.at(-1))}`);
  for (const [i, a] of answers.entries()) {
    assert.equal(a.error?.kind, 'invalid_request', `fetch ${i + 1}: ${JSON.stringify(a).slice(0, 200)}`);
    assert.equal(a.error.message, 'request exceeds 256 KiB');
  }
  assert.equal(instances, 1, 'every fetch on the one instance');
  assert.ok(memory.at(-1) <= 4 * MiB && memory.at(-1) === memory[3], `instance memory ${memory.map(mib)}`);
  assert.ok(grown < 64 * MiB, `RSS grew ${mib(grown)}`);
});

// The plugin's worst case within its limits: requests of 256 KiB whose one parameter is 3 bytes
// form-encoded, two of them alternating, so each step replaces the request the instance remembers.
// (host/limits_test.go TestLargeRequestsOnOneInstance runs more cases in the Go host.)
{
  const name = 'at the request limit, form-encoded (3 bytes each), two alternating';
  test(`${FETCHES} forced fetches of requests ${name} on one instance: a token each, memory flat`, async () => {
    const { answers, instances, memory, grown } = await fetches([request(MAX_REQUEST_BYTES, '<'), request(MAX_REQUEST_BYTES, '<', 't')]);
    console.log(`${name}: RSS grew ${mib(grown)} from fetch 5 to ${FETCHES}; instance memory ${mib(memory[0])} -> ${mib(memory.at(-1))}`);
    for (const [i, a] of answers.entries()) {
      assert.equal(a.token?.access_token, 'big-token', `fetch ${i + 1}: ${JSON.stringify(a).slice(0, 200)}`);
      assert.equal(a.cached, false);
    }
    assert.ok(bodyBytes > MAX_REQUEST_BYTES - 1000, `the provider got ${bodyBytes} bytes`);
    assert.equal(instances, 1, 'every fetch on the one instance');
    assert.ok(memory.at(-1) <= 16 * MiB && memory.at(-1) === memory[3], `instance memory ${memory.map(mib)}`);
    assert.ok(grown < 64 * MiB, `RSS grew ${mib(grown)}`);
  });
}

test('memoryLimitBytes: an instance over its cap after a call keeps the answer and is replaced', async () => {
  const module = await loadModule(WASM);
  assert.equal(new Instance(module).memoryLimitBytes, DEFAULT_MEMORY_LIMIT_BYTES);
  assert.equal(DEFAULT_MEMORY_LIMIT_BYTES, 32 * MiB, "the Go host's default (WithMemoryLimit: 512 pages)");
  for (const bad of [0, -1, Number.NaN, '1', null]) {
    await assert.rejects(createClient({ wasm: module, memoryLimitBytes: bad }), TypeError, String(bad));
  }
  // The plugin's memory at start (it grows its heap once: 768 KiB) is the least cap: one byte less
  // is refused at once, rather than every call running on a new instance.
  const atStart = new Instance(module).memoryBytes;
  assert.equal(atStart, 768 << 10);
  await assert.rejects(createClient({ wasm: module, memoryLimitBytes: atStart - 1 }), RangeError);
  assert.throws(() => new Instance(module, {}, { memoryLimitBytes: 512 << 10 }), /below the plugin's memory at start/);
  const least = await createClient({ wasm: module, instances: 1, memoryLimitBytes: atStart });
  used.clear();
  for (let i = 0; i < 20; i++) assert.ok(least.encode({ provider: 'nikohealth', client_id: 'c', client_secret: 's', token_url: 'https://x.nikohealth.com/token' }).request);
  assert.equal(used.size, 1, 'at the least cap, one instance serves every call');
  await least.close();

  const big = request(200 << 10, '<');
  const small = { provider: 'nikohealth', client_id: 'c', client_secret: 's', token_url: 'https://x.nikohealth.com/token' };

  // The kernel: the call answers, then the instance is broken.
  const inst = new Instance(module, {}, { memoryLimitBytes: 2 * MiB });
  inst.call('encode', JSON.stringify(small));
  assert.equal(inst.broken, false, `${mib(inst.memoryBytes)} after a small request`);
  const out = JSON.parse(inst.call('encode', JSON.stringify(big)));
  assert.ok(out.request, 'the call over the cap still answers');
  assert.ok(inst.memoryBytes > 2 * MiB && inst.broken, `${mib(inst.memoryBytes)}, broken ${inst.broken}`);
  assert.throws(() => inst.call('encode', JSON.stringify(small)), PluginTrap);

  // The client: the next call runs on a new instance, and every answer is right.
  const client = await createClient({ wasm: module, instances: 1, memoryLimitBytes: 2 * MiB });
  used.clear();
  assert.ok(client.encode(small).request);
  const first = [...used][0];
  assert.ok(client.encode(big).request);
  assert.equal(used.size, 1, 'the call that went over the cap ran on the first instance');
  assert.ok(first.broken);
  assert.ok(client.encode(small).request);
  assert.equal(used.size, 2, 'the next call ran on a new instance');
  assert.ok(![...used][1].broken);
  await client.close();

  // Without a cap the same instance serves on.
  const uncapped = await createClient({ wasm: module, instances: 1, memoryLimitBytes: Infinity });
  used.clear();
  uncapped.encode(big);
  uncapped.encode(small);
  assert.equal(used.size, 1);
  await uncapped.close();
});
