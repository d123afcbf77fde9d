// Every conformance vector in testdata/ through the plugin on this package's kernel, matched with the
// rules of internal/conformance (exact JSON equality; "<uuid>" matches any UUID v4), and the same
// inputs through the official SDK (@extism/extism, a test-only witness, as go-sdk is for Go): the
// same bytes out. Then the WASI the kernel gives the plugin: the real clock and real randomness.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '../src/index.js';
import { readFileSync } from 'node:fs';
import createPlugin from '@extism/extism';
import { Instance, loadModule } from '../src/index.js';
import { WASM, TESTDATA, loadVectors, match } from './support.js';

const vectors = loadVectors(TESTDATA);
let host;

before(async () => {
  host = await createClient({ wasm: WASM });
});
after(() => host?.close());

test('the vectors are there', () => {
  assert.ok(vectors.length >= 60, `${vectors.length} vectors under ${TESTDATA}`);
  const dirs = new Set(vectors.map((v) => v.name.split('/')[0]));
  for (const d of ['candid', 'pattern', 'candescent', 'nikohealth', 'custom', 'errors']) assert.ok(dirs.has(d), `vectors of ${d}`);
});

for (const v of vectors) {
  test(v.name, async () => {
    // The input's own bytes, as the Go suites pass them.
    let got = await host.call(v.export, v.rawInput);
    // A token_step flow: each answer names an action; the next call carries the request, the state
    // and the action's scripted answer (internal/conformance, Vector.Check).
    for (const [i, s] of (v.steps ?? []).entries()) {
      const { state, ...rest } = got;
      assert.equal(typeof state, 'string', `step ${i}: no state in ${JSON.stringify(got)}`);
      assert.equal(match(s.want, rest), null, `step ${i}: ${match(s.want, rest)}`);
      const next = { request: s.request ?? v.input.request, state: s.state ?? state };
      if (s.answer !== undefined) next.answer = s.answer;
      if (v.input.op) next.op = v.input.op;
      got = await host.call(v.export, JSON.stringify(next));
    }
    const err = match(v.want, got);
    assert.equal(err, null, `${v.doc}\n${v.path}\ngot ${JSON.stringify(got)}`);
  });
}

test('describe: ABI tokenwasm/1 and the five built-in providers', async () => {
  const d = await host.describe();
  assert.equal(d.abi, 'tokenwasm/1');
  assert.deepEqual(d.providers.map((p) => p.name).sort(), ['candescent', 'candid', 'nikohealth', 'pattern', 'smart']);
});

test('WASI: the plugin reads the real wall clock', async () => {
  const before = Date.now();
  const res = await host.decode({ provider: 'candid', client_id: 'c', client_secret: 'secret-1' }, { status: 200, body: '{"access_token":"t","expires_in":60}' });
  const after = Date.now();
  assert.ok(res.token, JSON.stringify(res));
  assert.ok(res.token.issued_at_ms >= before - 5 && res.token.issued_at_ms <= after + 5, `issued_at_ms ${res.token.issued_at_ms} not in [${before}, ${after}]`);
});

test('WASI: real randomness, different in every instance', async () => {
  const req = { provider: 'candescent', client_id: 'c', client_secret: 'secret-1', institution_id: '1' };
  const other = await createClient({ wasm: WASM });
  try {
    const ids = [];
    for (const h of [host, other, host, other]) ids.push((await h.encode(req)).request.headers.transactionId);
    assert.equal(new Set(ids).size, ids.length, `transactionIds repeat: ${ids}`);
  } finally {
    await other.close();
  }
});

/**
 * inputsOf lists every input a vector sends: its input, then for a token_step flow each next input,
 * built from the state this kernel's instance answered (random lock values make states differ).
 */
function inputsOf(v, inst) {
  const inputs = [v.rawInput];
  let got = inst.call(v.export, v.rawInput);
  for (const s of v.steps ?? []) {
    const { state } = JSON.parse(got);
    const next = { request: s.request ?? v.input.request, state: s.state ?? state };
    if (s.answer !== undefined) next.answer = s.answer;
    if (v.input.op) next.op = v.input.op;
    inputs.push(JSON.stringify(next));
    got = inst.call(v.export, inputs.at(-1));
  }
  return inputs;
}

// What differs between two runs by design: Candescent's transactionId and the fleet lock's value
// (UUIDs v4, also inside a state), nothing else.
const UUIDS = /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/g;
const STATE = /"state":"[^"]*"/g;

test('the official SDK (@extism/extism 1.0.3) answers the same bytes on every vector', async () => {
  const inst = new Instance(await loadModule(WASM));
  const stub = () => 0n; // token_step and the pure exports call no user import
  const witness = await createPlugin(
    { wasm: [{ data: readFileSync(WASM) }] },
    { useWasi: true, functions: { 'extism:host/user': { http_send: stub, cache_get: stub, cache_set: stub, cache_delete: stub } } },
  );
  let compared = 0;
  try {
    for (const v of vectors) {
      for (const input of inputsOf(v, inst)) {
        const ours = inst.call(v.export, input);
        const theirs = (await witness.call(v.export, input))?.text() ?? '';
        await witness.reset(); // it keeps every block otherwise
        // A state is compared whole unless the flow holds the fleet lock (its random value is in it).
        const norm = (s) => s.replace(UUIDS, '<uuid>').replace(STATE, (m) => (ours === theirs ? m : '"state":"<state>"'));
        assert.equal(norm(ours), norm(theirs), `${v.name}: input ${input}`);
        if (ours === theirs) compared++;
        else assert.ok(/"(lock|fleet)|transactionId|if_value/.test(ours) || /fleet/.test(v.name), `${v.name}: answers differ outside a random value`);
      }
    }
  } finally {
    await witness.close();
  }
  assert.ok(compared >= vectors.length, `${compared} answers byte for byte`);
});
