// Every conformance vector in testdata/ through the plugin in this host, matched with the rules of
// internal/conformance (exact JSON equality; "<uuid>" matches any UUID v4). Then the WASI the host
// gives the plugin: the real clock and real randomness (ABI.md, "The host side").
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHost } from '../host.js';
import { WASM, TESTDATA, loadVectors, match } from '../support.js';

const vectors = loadVectors(TESTDATA);
let host;

before(async () => {
  host = await createHost({ wasm: WASM });
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

test('describe: ABI tokenwasm/1 and the four providers', async () => {
  const d = await host.describe();
  assert.equal(d.abi, 'tokenwasm/1');
  assert.deepEqual(d.providers.map((p) => p.name).sort(), ['candescent', 'candid', 'nikohealth', 'pattern']);
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
  const other = await createHost({ wasm: WASM });
  try {
    const ids = [];
    for (const h of [host, other, host, other]) ids.push((await h.encode(req)).request.headers.transactionId);
    assert.equal(new Set(ids).size, ids.length, `transactionIds repeat: ${ids}`);
  } finally {
    await other.close();
  }
});
