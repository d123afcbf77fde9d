// @extism/extism 1.0.3 never frees memory blocks between calls (TOOLCHAIN.md): the host resets the
// plugin after each call. 50,000 calls prove it stays healthy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHost } from '../host.js';
import { WASM } from '../paths.js';

test('50,000 calls stay correct and bounded', async () => {
  const host = await createHost({ wasm: WASM });
  const req = { provider: 'nikohealth', client_id: 'c', client_secret: 'niko-secret', domain: 'acme' };
  try {
    const start = Date.now();
    let rssAfterWarmup = 0;
    for (let i = 0; i < 50000; i++) {
      const res = await host.call('encode', req);
      if (!res.request || res.request.url !== 'https://acme.nikohealth.com/api/identity/connect/token') {
        assert.fail(`call ${i}: ${JSON.stringify(res)}`);
      }
      if (i === 1000) rssAfterWarmup = process.memoryUsage().rss;
    }
    const grown = process.memoryUsage().rss - rssAfterWarmup;
    console.log(`50000 calls in ${Date.now() - start} ms; RSS grew ${(grown / 1048576).toFixed(1)} MiB after warm-up`);
    assert.ok(grown < 64 * 1048576, `RSS grew ${grown} bytes`);
  } finally {
    await host.close();
  }
});
