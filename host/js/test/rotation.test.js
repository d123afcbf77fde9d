// One-time grants against the Candescent fake, in Node (test/rotation.js; test/suite.js runs the
// same cases, shorter, in every runtime): 12 calls over about 12 s with 4 s access tokens, all valid,
// no refresh token or code ever sent twice (the fake counts replays); an authorization code sent
// once; a forced fetch joining the flight in progress; onRefreshToken once per new refresh token; a
// lineage the cache cannot read sends nothing; a flow's then actions never cut short.
import { test, before, after } from 'node:test';
import { readFileSync } from 'node:fs';
import { WASM, startFakes } from './support.js';
import { manyCalls, codeOnce, forcedJoins, lineageUnreadable, thenNotCutShort } from './rotation.js';

const env = { wasm: readFileSync(WASM) };
let stopFakes;
before(async () => {
  ({ fakes: env.fakes, stop: stopFakes } = await startFakes());
});
after(() => stopFakes?.());

test('a refresh_token client: 12 calls over about 12 s with 4 s access tokens, no refresh token sent twice', () =>
  manyCalls(env, { lifetimeMs: 4000, calls: 12, everyMs: 1000 }));
test('an authorization_code client sends its code once, then its lineage', () => codeOnce(env, { lifetimeMs: 2000, calls: 8, everyMs: 500 }));
test('a forced fetch of a one-time grant joins the flight in progress', () => forcedJoins(env));
test('a lineage the cache cannot read: nothing sent, the held token served until it expires', () => lineageUnreadable(env));
test("a flow's then actions are not cut short by an abort or a cache being skipped", () => thenNotCutShort(env));
