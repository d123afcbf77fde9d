// The full token flow in the Node host against the Go fake providers (`tokenwasm fakes`): a token from
// each of the four providers, the second call served from the cache, counted at the fakes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createHost } from '../host.js';
import { WASM } from '../paths.js';

let fakes; // the child process
let urls; // its JSON line

before(async () => {
  const bin = process.env.TOKENWASM_FAKES_BIN;
  assert.ok(bin, 'TOKENWASM_FAKES_BIN names the tokenwasm binary (run-tests.sh builds it)');
  fakes = spawn(bin, ['fakes'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: fakes.stdout }).once('line', resolve);
    fakes.once('exit', (code) => reject(new Error(`fakes exited ${code}`)));
  });
  urls = JSON.parse(line);
});

after(() => fakes?.kill('SIGINT'));

const stats = async (name) => (await (await fetch(urls[name].stats_url)).json()).requests;

function requestFor(name, extra = {}) {
  const cfg = urls[name].config;
  return { provider: name, client_id: cfg.client_id, client_secret: cfg.client_secret, token_url: urls[name].token_url, ...extra };
}

test('a token from each provider, then from the cache', async () => {
  const host = await createHost({ wasm: WASM, allowLoopback: true });
  try {
    const desc = urls.candescent.config;
    const cases = [
      ['candid', requestFor('candid')],
      ['pattern', requestFor('pattern')],
      ['candescent', requestFor('candescent', { institution_id: desc.institution_id })],
      ['candescent', requestFor('candescent', { grant_type: 'password', institution_id: desc.institution_id, username: desc.username, password: desc.password })],
      ['nikohealth', requestFor('nikohealth', { scope: 'external' })],
    ];
    for (const [name, req] of cases) {
      const before = await stats(name);
      const first = await host.token(req);
      assert.ok(first.token, `${name}: ${JSON.stringify(first.error)}`);
      assert.equal(first.cached, false);
      assert.equal(first.token.token_type, 'Bearer');
      assert.equal(await stats(name), before + 1, `${name}: one request`);
      const second = await host.token(req);
      assert.equal(second.cached, true, `${name}: second call cached`);
      assert.equal(second.token.access_token, first.token.access_token);
      assert.equal(await stats(name), before + 1, `${name}: no second request`);
    }
    // Units normalized: Pattern answers milliseconds, Candid's JWT exp (5 h) beats its 86400.
    assert.equal((await host.token(requestFor('pattern'))).token.expires_in, 3600);
    const candid = (await host.token(requestFor('candid'))).token.expires_in;
    assert.ok(candid <= 5 * 3600 && candid > 5 * 3600 - 60, `candid expires_in ${candid}`);
  } finally {
    await host.close();
  }
});

test('a token URL outside the policy is refused and reaches nothing', async () => {
  const host = await createHost({ wasm: WASM }); // no loopback
  try {
    const before = await stats('nikohealth');
    const res = await host.token(requestFor('nikohealth'));
    assert.equal(res.error?.kind, 'transport');
    assert.equal(await stats('nikohealth'), before);
  } finally {
    await host.close();
  }
});
