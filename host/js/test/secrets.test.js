// Canary secrets through this host for every provider and grant, against a loopback provider that
// echoes what it was sent (the body, the Authorization header and its decoded value) into its
// error_description (as sent, or re-encoded with spaces as %20), or into an HTML error page; and a
// fetch whose error quotes the request it was given, in several encodings. No secret may appear in
// any encoding it travelled in (raw, form-encoded with + and with %20, percent-encoded, JSON-escaped,
// base64 of id:secret) in the answer, anything the host logs, or the cache's keys and values
// (ABI.md, "Secrets").
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createClient, MemoryCache } from '../src/index.js';
import { WASM } from './support.js';

/** A canary: every character that changes under some encoding, and spaces. */
const canary = (tag) => `${tag}+/=&"\\<>% ${tag} x`;
const ID = 'canary client+id';
const SECRETS = {
  client_secret: canary('cs1'),
  password: canary('pw2'),
  code: canary('ac3'),
  code_verifier: canary('cv4'),
  refresh_token: canary('rt5'),
};

const formPlus = (s) => new URLSearchParams([['', s]]).toString().slice(1); // application/x-www-form-urlencoded
/** encodings lists each form in which a secret may travel, by name. */
function encodings(name, s) {
  const json = JSON.stringify(s).slice(1, -1);
  const forms = {
    raw: s,
    'form (+)': formPlus(s),
    'form (%20)': formPlus(s).replaceAll('+', '%20'),
    'percent-encoded, lower-case hex': encodeURIComponent(s).replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase()),
    'JSON-escaped': json,
    'JSON-escaped, HTML-safe (Go)': json.replaceAll('<', '\\u003c').replaceAll('>', '\\u003e').replaceAll('&', '\\u0026'),
  };
  if (name === 'client_secret') {
    forms['base64(id:secret)'] = Buffer.from(`${ID}:${s}`).toString('base64');
    forms['base64(form(id):form(secret))'] = Buffer.from(`${formPlus(ID)}:${formPlus(s)}`).toString('base64');
  }
  return Object.entries(forms).map(([how, text]) => ({ secret: name, how, text }));
}

/** strings returns every string inside a JSON value, and its JSON text. */
function strings(v) {
  const out = [JSON.stringify(v) ?? ''];
  const walk = (x) => {
    if (typeof x === 'string') out.push(x);
    else if (x && typeof x === 'object') Object.entries(x).forEach(([k, y]) => (out.push(k), walk(y)));
  };
  walk(v);
  return out;
}

/** leaks names each secret encoding (of the secrets the request sent) found in any of texts. */
function leaks(req, texts) {
  const found = new Set();
  for (const [name, s] of Object.entries(SECRETS)) {
    if (req[name] === undefined) continue;
    for (const e of encodings(name, s)) if (texts.some((t) => t.includes(e.text))) found.add(`${e.secret} ${e.how}`);
  }
  return [...found];
}

/**
 * The refresh token the provider returns on success: the caller gets it; the cache holds it only as
 * a one-time grant's lineage (the value of its K/grant key, which the flow sends next instead of a
 * used one; a shared cache seals it, test/redis.test.js), never in a cached token or anywhere else.
 */
const RETURNED_REFRESH = canary('new6');
let issued = 0;
let srv; // the echoing provider
let host;
const logged = []; // everything the host logged, as text
const cacheTexts = []; // every key and value the host gave its cache, but lineage values
const lineageTexts = []; // every value the host stored under a one-time grant's lineage key (K/grant)

before(async () => {
  srv = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const auth = req.headers.authorization ?? '';
      const decoded = auth.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString('utf8') : '';
      let echo = req.headers['x-echo'] === 'auth' ? `authorization=${auth} decoded=${decoded}` : `body=${body}`;
      // A provider that re-encodes what it quotes, spaces as %20.
      if (req.headers['x-echo-spaces'] === '%20') echo = echo.replaceAll('+', '%20');
      if (req.headers['x-echo'] === 'none') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify({ access_token: `at-${++issued}`, token_type: 'bearer', expires_in: 3600, refresh_token: RETURNED_REFRESH }));
      }
      if (req.headers['x-echo-as'] === 'html') {
        res.writeHead(500, { 'Content-Type': 'text/html' });
        return res.end(`<html><body>echo: ${echo}</body></html>`);
      }
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: 'invalid_request', error_description: `echo: ${echo}` }));
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const record = (...xs) => xs.forEach((x) => x !== undefined && cacheTexts.push(String(x)));
  const mem = new MemoryCache();
  const cache = {
    get: (k) => (record(k), mem.get(k)),
    set: (k, v, ttl, nx) => (String(k).endsWith('/grant') ? (record(k), lineageTexts.push(String(v))) : record(k, v), mem.set(k, v, ttl, nx)),
    delete: (k, ifValue) => (record(k, ifValue), mem.delete(k, ifValue)),
  };
  const log = (level) => (msg, attrs) => logged.push(`${level} ${msg} ${JSON.stringify(attrs)}`);
  host = await createClient({ wasm: WASM, allowLoopback: true, cache, logger: { debug: log('debug'), warn: log('warn') } });
});
after(async () => {
  await host?.close();
  await new Promise((resolve) => srv?.close(resolve));
});

const url = () => `http://127.0.0.1:${srv.address().port}/token`;
const grants = {
  client_credentials: {},
  password: { username: 'canary-user', password: SECRETS.password },
  authorization_code: { code: SECRETS.code, redirect_uri: 'https://app.example/cb', code_verifier: SECRETS.code_verifier },
  refresh_token: { refresh_token: SECRETS.refresh_token },
};
/** The cases: every built-in provider and grant, and the custom provider in each client_auth. */
function cases() {
  const base = { client_id: ID, client_secret: SECRETS.client_secret, token_url: url() };
  const out = [
    ['candid json', { provider: 'candid', ...base }],
    ['candid form', { provider: 'candid', body: 'form', ...base }],
    ['pattern', { provider: 'pattern', ...base }],
    ['nikohealth', { provider: 'nikohealth', ...base, scope: 'external' }],
  ];
  for (const [grant, fields] of Object.entries(grants)) {
    out.push([`candescent ${grant}`, { provider: 'candescent', grant_type: grant, institution_id: 'inst-1', ...base, ...fields }]);
    for (const [auth, body] of [['body', 'json'], ['body', 'form'], ['basic', 'form'], ['basic_rfc6749', 'form']]) {
      out.push([`custom ${auth}/${body} ${grant}`, { provider: 'custom', grant_type: grant, profile: { client_auth: auth, body }, ...base, ...fields }]);
    }
  }
  return out;
}

test('canary secrets through every provider and grant: no encoding of a secret anywhere', async (t) => {
  const all = [];
  for (const [name, req0] of cases()) {
    for (const [echo, as, spaces] of [
      ['body', 'json', '+'],
      ['auth', 'json', '+'],
      ['body', 'json', '%20'],
      ['auth', 'json', '%20'],
      ['body', 'html', '+'],
      ['auth', 'html', '+'],
    ]) {
      await t.test(`${name}, echo ${echo} as ${as}, spaces ${spaces}`, async () => {
        const req = { ...req0, headers: { 'X-Echo': echo, 'X-Echo-As': as, 'X-Echo-Spaces': spaces } };
        const logsBefore = logged.length;
        const cacheBefore = cacheTexts.length;
        const res = await host.token(req);
        assert.ok(res.error, JSON.stringify(res));
        if (as === 'json') {
          // The echo reached the answer: otherwise this case would prove nothing.
          assert.equal(res.error.oauth_error, 'invalid_request', JSON.stringify(res));
          assert.match(res.error.description ?? '', /^echo: /, JSON.stringify(res));
        }
        const found = {
          answer: leaks(req, strings(res)),
          logs: leaks(req, logged.slice(logsBefore)),
          cache: leaks(req, cacheTexts.slice(cacheBefore)),
        };
        for (const [where, list] of Object.entries(found)) for (const l of list) all.push(`${where}: ${l}`);
        assert.deepEqual(found, { answer: [], logs: [], cache: [] }, `leaked in ${name} (echo ${echo} as ${as}): ${JSON.stringify(res)}`);
      });
    }
  }
  // One line that says which encodings leak, for the record.
  const summary = [...new Set(all)].sort();
  t.diagnostic(summary.length ? `leaking encodings: ${summary.join('; ')}` : 'no encoding of any secret leaked');
});

test('tokens fetched with canary secrets: no secret in the cache or the logs, the refresh token only in a lineage', async (t) => {
  for (const [name, req0] of cases()) {
    await t.test(name, async () => {
      const req = { ...req0, headers: { 'X-Echo': 'none' } };
      const logsBefore = logged.length;
      const cacheBefore = cacheTexts.length;
      const lineageBefore = lineageTexts.length;
      const first = await host.token(req);
      assert.equal(first.cached, false, JSON.stringify(first));
      assert.equal(first.token.refresh_token, RETURNED_REFRESH, 'the caller gets the refresh token');
      const second = await host.token(req);
      assert.equal(second.cached, true, JSON.stringify(second));
      assert.equal(second.token.access_token, first.token.access_token);
      const stored = cacheTexts.slice(cacheBefore);
      assert.ok(stored.some((v) => v.includes(first.token.access_token)), 'the access token was cached');
      const texts = [...stored, ...logged.slice(logsBefore), ...strings(second)];
      assert.deepEqual(leaks(req, texts), []);
      for (const e of encodings('refresh_token', RETURNED_REFRESH)) assert.ok(!texts.some((x) => x.includes(e.text)), `returned refresh token (${e.how}) in the cache, the logs or a cached answer`);
      // A one-time grant's lineage holds the new refresh token, and nothing the request sent; other
      // grants have none.
      const lineage = lineageTexts.slice(lineageBefore);
      const oneTime = req.grant_type === 'refresh_token' || req.grant_type === 'authorization_code';
      assert.equal(lineage.some((v) => JSON.parse(v).refresh_token === RETURNED_REFRESH), oneTime, `lineage values ${lineage.length}`);
      assert.deepEqual(leaks(req, lineage), []);
    });
  }
});

test('the canaries hold every character the check is about', () => {
  for (const s of [...Object.values(SECRETS), RETURNED_REFRESH]) for (const c of ['+', '/', '=', '&', '"', '\\', '<', '>', '%', ' ']) assert.ok(s.includes(c), `${JSON.stringify(s)} lacks ${c}`);
  // And the encodings differ from each other, so each is a check of its own.
  const forms = encodings('client_secret', SECRETS.client_secret).map((e) => e.text);
  assert.equal(new Set(forms).size, forms.length, forms.join(' | '));
});

/**
 * quotingFetch is a fetch (a wrapper, an agent) whose error quotes the request it was given: the
 * message and its cause hold the headers and the body as sent, decoded, percent-encoded (lower-case
 * hex) and JSON-escaped, and the decoded Basic credentials.
 */
async function quotingFetch(url, init) {
  const headers = Object.fromEntries(new Headers(init.headers));
  const body = String(init.body ?? '');
  const auth = headers.authorization ?? '';
  const basic = auth.startsWith('Basic ') ? Buffer.from(auth.slice(6), 'base64').toString('utf8') : '';
  let decoded = '';
  try {
    decoded = JSON.stringify(body.startsWith('{') ? JSON.parse(body) : Object.fromEntries(new URLSearchParams(body)));
  } catch {}
  const lower = (x) => encodeURIComponent(x).replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase());
  const quote = [
    `quoted-request ${init.method} ${url}`,
    `headers=${JSON.stringify(headers)} authorization=${auth} basic=${basic}`,
    `body=${body} decoded=${decoded} values=${Object.values(JSON.parse(decoded || '{}')).join(' ')}`,
    `percent=${lower(body)} ${lower(basic)}`,
    `json=${JSON.stringify({ body, auth, basic })}`,
  ].join('\n');
  const cause = new Error(quote);
  cause.code = `EQUOTE ${auth}`;
  throw new TypeError(`fetch failed: ${quote}`, { cause });
}

test('a fetch whose error quotes the request: no encoding of a secret in the logs or the answer', async (t) => {
  const records = [];
  const log = (level) => (msg, attrs) => records.push(`${level} ${msg} ${JSON.stringify(attrs)}`);
  const client = await createClient({ wasm: WASM, allowLoopback: true, fetch: quotingFetch, logger: { debug: log('debug'), warn: log('warn') } });
  try {
    for (const [name, req] of cases()) {
      await t.test(name, async () => {
        const before = records.length;
        const res = await client.token({ ...req, headers: { 'X-Api-Key': canary('key7') } });
        assert.equal(res.error?.kind, 'transport', JSON.stringify(res));
        const logs = records.slice(before);
        // The quote reached the log (else this case would prove nothing), its secrets redacted.
        assert.ok(logs.some((l) => l.startsWith('debug tokenwasm: http_send failed') && l.includes('quoted-request') && l.includes('[redacted]')), logs.join('\n'));
        assert.deepEqual({ logs: leaks(req, logs), answer: leaks(req, strings(res)) }, { logs: [], answer: [] }, logs.join('\n'));
        for (const e of encodings('api key', canary('key7'))) assert.ok(!logs.some((l) => l.includes(e.text)), `the extra header's value (${e.how}) in the logs`);
      });
    }
  } finally {
    await client.close();
  }
});
