// The host's redaction (src/redact.js, plugin/core/redact.go's matcher in JavaScript): the request's
// secrets found in every spelling an encoder writes, what is kept, when a text is withheld whole.
// The same cases as plugin/core/redact_test.go, with the secrets read from an HttpRequest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redact, requestSecrets, REDACTED } from '../src/redact.js';

// Canaries hold every character that an encoding changes: + / = & " \ < > % and spaces.
const canaryID = 'client id+1';
const canarySecret = 'CANARY-secret +/=&"\\<>% end';
const canaryPassword = 'CANARY-pass word&"<>/=+%';
const canaryRefresh = 'CANARY-refresh\\"+ /=%25&<>';

/** queryEscape is Go's url.QueryEscape. */
const queryEscape = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`).replace(/%20/g, '+');
const minimalJSON = (s) => s.replaceAll('\\', '\\\\').replaceAll('"', '\\"');
const goJSON = (s) => JSON.stringify(s).slice(1, -1).replaceAll('<', '\\u003c').replaceAll('>', '\\u003e').replaceAll('&', '\\u0026');
const dotnetJSON = (s) =>
  s.replaceAll('\\', '\\\\').replaceAll('"', '\\u0022').replaceAll('<', '\\u003C').replaceAll('>', '\\u003E').replaceAll('&', '\\u0026').replaceAll('+', '\\u002B').replaceAll("'", '\\u0027');
const html = (s) => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&#34;').replaceAll("'", '&#39;');
const lowerHex = (s) => s.replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase());
const b64 = (s) => Buffer.from(s).toString('base64');
const b64raw = (s) => b64(s).replace(/=+$/, '');
const b64url = (s) => b64(s).replaceAll('+', '-').replaceAll('/', '_');

/** spellings lists the ways a secret can travel: as sent, and as encoders write it. */
function spellings(id, secret) {
  const form = queryEscape(secret);
  const out = {
    raw: secret,
    'form +': form,
    'form %20': form.replaceAll('+', '%20'),
    'percent (encodeURIComponent)': encodeURIComponent(secret),
    'form lower hex': lowerHex(form),
    'json (Go)': goJSON(secret),
    'json (minimal)': minimalJSON(secret),
    'json (slash)': minimalJSON(secret).replaceAll('/', '\\/'),
    'json (.NET)': dotnetJSON(secret),
    html: html(secret),
    'json of form': dotnetJSON(form),
    'form of json': queryEscape(minimalJSON(secret)),
  };
  if (id !== undefined) {
    Object.assign(out, { 'base64(secret)': b64(secret), 'base64url(secret)': b64url(secret).replace(/=+$/, '') });
    for (const [name, cred] of [
      ['id:secret', `${id}:${secret}`],
      ['rfc6749 id:secret', `${queryEscape(id)}:${queryEscape(secret)}`],
    ]) {
      Object.assign(out, { [`base64 ${name}`]: b64(cred), [`base64 raw ${name}`]: b64raw(cred), [`base64url ${name}`]: b64url(cred) });
    }
  }
  return out;
}

/** The HttpRequests a client secret travels in: the body (form, JSON), Basic as given and form-encoded first. */
const requests = {
  'form body': {
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: canaryID, client_secret: canarySecret, password: canaryPassword, refresh_token: canaryRefresh }).toString(),
  },
  'json body': { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ client_id: canaryID, client_secret: canarySecret, password: canaryPassword, refresh_token: canaryRefresh }) },
  basic: {
    headers: { Authorization: `Basic ${b64(`${canaryID}:${canarySecret}`)}` },
    body: new URLSearchParams({ grant_type: 'password', password: canaryPassword, refresh_token: canaryRefresh }).toString(),
  },
  basic_rfc6749: {
    headers: { Authorization: `Basic ${b64(`${queryEscape(canaryID)}:${queryEscape(canarySecret)}`)}` },
    body: new URLSearchParams({ grant_type: 'password', password: canaryPassword, refresh_token: canaryRefresh }).toString(),
  },
};

test('every spelling of every secret of a request is redacted, and the text around it kept', () => {
  for (const [where, req] of Object.entries(requests)) {
    const secrets = requestSecrets(req);
    for (const [secret, id] of [
      [canarySecret, canaryID],
      [canaryPassword, undefined],
      [canaryRefresh, undefined],
    ]) {
      for (const [how, sp] of Object.entries(spellings(id, secret))) {
        const got = redact(`before ${sp} after`, secrets);
        assert.ok(got.startsWith('before ') && got.endsWith(' after') && got.includes(REDACTED), `${where}: ${how} of ${JSON.stringify(secret)}: ${got}`);
        assert.ok(!got.includes(sp), `${where}: ${how} of ${JSON.stringify(secret)} kept: ${got}`);
      }
    }
    // The request as a fetch error would quote it, whole and JSON-escaped.
    const quote = `${JSON.stringify(req.headers)} ${req.body} ${JSON.stringify(req)}`;
    const got = redact(quote, secrets);
    for (const secret of [canarySecret, canaryPassword, canaryRefresh]) {
      for (const [how, sp] of Object.entries(spellings(secret === canarySecret ? canaryID : undefined, secret))) assert.ok(!got.includes(sp), `${where}: ${how} in the quote: ${got}`);
    }
  }
});

test('the rules: what is kept, what is replaced, when the whole text is withheld', () => {
  for (const [name, secret, text, want] of [
    ['no secret in text', 's3cret-value', 'bad client', 'bad client'],
    ['raw', 's3cret-value', 'got s3cret-value here', 'got [redacted] here'],
    ['form-encoded', 's3 cret&v', 'got s3+cret%26v here', 'got [redacted] here'],
    ['form-encoded %20 lower hex', 's3 cret&v', 'got s3%20cret%26v here', 'got [redacted] here'],
    ['json escaped upper hex', 'a"b<c', 'got a\\u0022b\\u003Cc here', 'got [redacted] here'],
    ['json in form', 'a"bc', 'got a%5C%22bc here', 'got [redacted] here'],
    ['html', 'a"b<c', 'got a&quot;b&lt;c here', 'got [redacted] here'],
    ['non-ascii as \\u', 's3crét-x', 'got s3cr\\u00e9t-x here', 'got [redacted] here'],
    ['non-ascii percent-encoded', 's3crét-x', 'got s3cr%C3%A9t-x here', 'got [redacted] here'],
    ['past U+FFFF as a \\u surrogate pair', 's3cr\u{1F511}-x', 'got s3cr\\ud83d\\udd11-x here', 'got [redacted] here'],
    ['surrogate pair, upper hex', 's3cr\u{1F511}-x', 'got s3cr\\uD83D\\uDD11-x here', 'got [redacted] here'],
    ['raw backslashes', 'a\\\\b\\c', 'got a\\\\b\\c here', 'got [redacted] here'],
    ['escaped backslashes', 'a\\\\b\\c', 'got a\\\\\\\\b\\\\c here', 'got [redacted] here'],
    ['short secret withholds all', 'abc', 'code abc was wrong', '[redacted]'],
    ['short secret absent', 'abc', 'nothing here', 'nothing here'],
    ['near miss kept', 's3cret-value', 's3cret-valu', 's3cret-valu'],
    ['non-ascii text kept', 's3cret-value', 'déjà vu ✓ 🔑', 'déjà vu ✓ 🔑'],
  ]) {
    const secrets = requestSecrets({ body: new URLSearchParams({ client_id: 'id', client_secret: secret }).toString() });
    assert.equal(redact(text, secrets), want, name);
  }
});

test("a caller's params and headers of 8 bytes or more are secrets; shorter ones, and plain headers, are not", () => {
  const secrets = requestSecrets({
    headers: { 'X-Api-Key': 'key 0123456789', 'Content-Type': 'application/x-www-form-urlencoded', 'X-Short': 'abc' },
    body: new URLSearchParams({ client_id: 'id', client_secret: 's3cret-value', client_assertion: 'eyJhbGciOi.assertion+/=', audience: 'api' }).toString(),
  });
  for (const [text, want] of [
    ['bad assertion eyJhbGciOi.assertion%2B%2F%3D', 'bad assertion [redacted]'],
    ['key "key 0123456789" refused', 'key "[redacted]" refused'],
    ['unknown api audience abc', 'unknown api audience abc'],
    ['sent as application/x-www-form-urlencoded', 'sent as application/x-www-form-urlencoded'],
  ]) {
    assert.equal(redact(text, secrets), want);
  }
});

test('a text built to make the matcher slow is withheld, not scanned for ever', () => {
  const secrets = requestSecrets({ body: new URLSearchParams({ client_secret: `${'a'.repeat(4000)}b` }).toString() });
  const started = performance.now();
  const got = redact(`${'a'.repeat(1 << 20)}+`, secrets); // the "+" (an escape) makes the matcher read it all
  assert.ok(got === REDACTED, `${got.length} characters, want the text withheld`);
  assert.ok(performance.now() - started < 10_000, `${Math.round(performance.now() - started)} ms`);
});

test("every secret field of ABI.md's Secrets is a secret at any length (the field table, as ABI.md lists it)", async () => {
  const { readFileSync } = await import('node:fs');
  const abi = readFileSync(new URL('../../../abi/ABI.md', import.meta.url), 'utf8');
  const sentence = abi.split('### Secrets\n')[1]?.split(' never appear')[0] ?? '';
  const fields = [...sentence.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]);
  assert.ok(fields.includes('client_secret') && fields.includes('access_token'), `ABI.md's Secrets sentence not found: ${sentence}`);
  for (const field of fields) {
    // 5 bytes: shorter than EXTRA_SECRET_MIN, so only a field known to be a secret is one.
    for (const body of [`${field}=s3crt`, JSON.stringify({ [field]: 's3crt' })]) {
      assert.ok(requestSecrets({ method: 'POST', url: 'https://p.example/t', headers: {}, body }).includes('s3crt'), `${field} in ${body}`);
    }
  }
});
