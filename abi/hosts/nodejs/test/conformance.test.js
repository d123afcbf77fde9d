// Runs every conformance vector in testdata/ through the plugin in this host, with the same matching
// rules as internal/conformance (exact JSON equality; "<uuid>" matches a UUID v4).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHost } from '../host.js';
import { WASM, TESTDATA } from '../paths.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function match(path, want, got) {
  if (want === '<uuid>' && typeof got === 'string' && UUID.test(got)) return;
  if (want !== null && typeof want === 'object') {
    assert.equal(typeof got, 'object', `${path}: want an object or array`);
    if (Array.isArray(want)) {
      assert.ok(Array.isArray(got) && got.length === want.length, `${path}: array length`);
      want.forEach((w, i) => match(`${path}[${i}]`, w, got[i]));
      return;
    }
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `${path}: fields`);
    for (const k of Object.keys(want)) match(`${path}.${k}`, want[k], got[k]);
    return;
  }
  assert.deepEqual(got, want, path);
}

const vectors = readdirSync(TESTDATA, { withFileTypes: true })
  .filter((d) => d.isDirectory() && d.name !== 'conformance')
  .flatMap((d) => readdirSync(join(TESTDATA, d.name)).filter((f) => f.endsWith('.json')).map((f) => join(TESTDATA, d.name, f)))
  .map((p) => JSON.parse(readFileSync(p, 'utf8')))
  .filter((v) => v.export);

test(`every conformance vector (${vectors.length}) through the Node host`, async (t) => {
  assert.ok(vectors.length > 50, 'vectors found');
  const host = await createHost({ wasm: WASM });
  try {
    for (const v of vectors) {
      await t.test(v.name, async () => {
        const got = await host.call(v.export, JSON.stringify(v.input));
        match('$', v.want, got);
      });
    }
  } finally {
    await host.close();
  }
});
