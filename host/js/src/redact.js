// Redaction of a request's secrets from what the host says itself: the {"error"} of an http_send
// and every logger record. The plugin redacts the texts it puts in an Error (abi/ABI.md, "Secrets");
// what the host logs never reaches the plugin, so the host redacts it, with the same rules: this is
// plugin/core/redact.go's matcher in JavaScript.
//
// A fetch whose error quotes the request gives a secret back in whatever encoding it travelled in,
// or in its own: form-encoded ("+" or "%20" for a space, hex of either case), JSON-escaped ("\u003c",
// "\u002B", "\/"), HTML-escaped, or one inside another (a form body quoted in a JSON string). The
// matcher reads the text as it goes: at each position it accepts, for the next character of a
// secret, that character or any escape that decodes to it, up to two layers deep. Base64 and hex have
// no such per-character form, so the Basic credentials and the client secret's base64 and hex are
// secrets of their own. Text and secrets are compared as UTF-8 bytes, as the plugin does.

export const REDACTED = '[redacted]';
const LAYERS = 2; // how many encodings deep a secret is recognized
const BUDGET = 1 << 20; // the matcher's work on one text; a text that exhausts it is withheld whole
const SHORT_SECRET = 4; // a text holding a shorter secret is withheld whole
const EXTRA_SECRET_MIN = 8; // the shortest value of another field or header treated as a secret
const MAX_STATES = 16;
const MAX_UNITS = 32;

/** Body fields whose value is a secret whatever its length (the ABI's secrets, a client assertion, RFC 7009's token). */
const SECRET_FIELDS = new Set(['client_secret', 'password', 'refresh_token', 'code', 'code_verifier', 'access_token', 'client_assertion', 'assertion', 'token']);
/** Headers whose values are never secrets; any other of EXTRA_SECRET_MIN bytes or more is one (an API key). */
const PLAIN_HEADERS = new Set(['content-type', 'accept', 'user-agent', 'content-length']);

const encoder = new TextEncoder();
const fromUTF8 = new TextDecoder();
/** utf8 is s as UTF-8 bytes (ASCII without TextEncoder, which costs about 1 us a call). */
function utf8(s) {
  if (!/^[\x00-\x7f]*$/.test(s)) return encoder.encode(s);
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
  return b;
}
const REDACTED_BYTES = utf8(REDACTED);
/** The characters an escape starts with: percent, form, JSON, HTML. A text without any holds a secret only as it is. */
const ESCAPES = /[%+\\&]/;

/**
 * requestSecrets lists the secrets of an HttpRequest (abi/ABI.md): what a fetch error could quote of
 * it. The body's secret fields (any length) and its other values and header values of 8 bytes or
 * more (a caller's extra params and headers may be credentials); the Authorization header's
 * credentials, and for Basic the client secret decoded (form-decoded too, basic_rfc6749); for each
 * client secret the base64 of id:secret (as given and form-encoded, standard and URL-safe) and of
 * the secret, and its hex.
 */
export function requestSecrets(req) {
  const out = new Set();
  const body = typeof req?.body === 'string' ? req.body : '';
  let fields = [];
  if (/^\s*\{/.test(body)) {
    try {
      walkJSON(JSON.parse(body), '', fields);
    } catch {
      fields = [];
    }
  } else if (body !== '') {
    fields = [...new URLSearchParams(body)];
  }
  let bodyID = '';
  for (const [name, value] of fields) {
    if (name === 'client_id') bodyID = value;
    else addField(out, name, value);
  }
  for (const [name, value] of fields) if (name === 'client_secret') addClientSecret(out, bodyID, value);

  const headers = req?.headers && typeof req.headers === 'object' ? req.headers : {};
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (typeof value !== 'string') continue;
    const lower = name.toLowerCase();
    if (lower !== 'authorization') {
      if (!PLAIN_HEADERS.has(lower)) addField(out, lower, value);
      continue;
    }
    const space = value.trim().search(/\s/);
    const creds = space < 0 ? value.trim() : value.trim().slice(space).trim();
    if (creds !== '') out.add(creds);
    if (space < 0 || value.trim().slice(0, space).toLowerCase() !== 'basic') continue;
    let bin;
    try {
      bin = atob(creds.replace(/-/g, '+').replace(/_/g, '/'));
    } catch {
      continue;
    }
    out.add(base64(bin, true));
    const text = /^[\x00-\x7f]*$/.test(bin) ? bin : fromUTF8.decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
    const colon = text.indexOf(':');
    if (colon < 0) continue;
    const id = text.slice(0, colon);
    const secret = text.slice(colon + 1);
    addClientSecret(out, id, secret);
    const [id2, secret2] = [formDecode(id), formDecode(secret)];
    if (secret2 !== secret || id2 !== id) addClientSecret(out, id2, secret2); // basic_rfc6749 form-encodes them first
  }
  out.delete('');
  return [...out];
}

/** walkJSON adds [name, string] to fields for every string in a JSON value (name: its member's). */
function walkJSON(v, name, fields) {
  if (typeof v === 'string') fields.push([name, v]);
  else if (v && typeof v === 'object') for (const k of Object.keys(v)) walkJSON(v[k], k, fields);
}

/** addField adds a body field's or header's value: a secret field's whatever its length, another's from 8 bytes. */
function addField(out, name, value) {
  if (SECRET_FIELDS.has(name) || value.length >= EXTRA_SECRET_MIN) out.add(value); // UTF-16 length: at most the UTF-8 one
}

/** addClientSecret adds a client secret and the forms it takes that have no per-character escape: base64 and hex. */
function addClientSecret(out, id, secret) {
  out.add(secret);
  for (const c of [`${id}:${secret}`, `${queryEscape(id)}:${queryEscape(secret)}`, secret]) {
    const bin = binary(c);
    out.add(base64(bin, false));
    out.add(base64(bin, true));
  }
  let hex = '';
  const bin = binary(secret);
  for (let i = 0; i < bin.length; i++) hex += HEX[bin.charCodeAt(i)];
  out.add(hex);
  out.add(hex.toUpperCase());
}

/** formDecode is s form-decoded ("+" a space), or s when it is not valid. */
function formDecode(s) {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/** binary is s as a binary string of its UTF-8 bytes (what btoa reads). */
function binary(s) {
  if (/^[\x00-\x7f]*$/.test(s)) return s;
  let bin = '';
  for (const b of encoder.encode(s)) bin += String.fromCharCode(b);
  return bin;
}

/** base64 encodes a binary string without padding (a padded form starts with the unpadded one), standard or URL-safe. */
function base64(bin, urlSafe) {
  const s = btoa(bin).replace(/=+$/, '');
  return urlSafe ? s.replace(/\+/g, '-').replace(/\//g, '_') : s;
}

/** QUERY_ESCAPE[b]: byte b as Go's url.QueryEscape (the plugin's form encoding) writes it: A-Za-z0-9-_.~ kept, space as +. */
const QUERY_ESCAPE = Array.from({ length: 256 }, (_, b) => {
  const c = String.fromCharCode(b);
  if (/[A-Za-z0-9\-_.~]/.test(c)) return c;
  return c === ' ' ? '+' : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
});
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));

function queryEscape(s) {
  const bin = binary(s);
  let out = '';
  for (let i = 0; i < bin.length; i++) out += QUERY_ESCAPE[bin.charCodeAt(i)];
  return out;
}

/**
 * redact returns text with every secret (requestSecrets' answer), in any encoding, replaced by
 * [redacted]. A text holding a secret shorter than 4 bytes, or built to make the matcher slow, is
 * withheld whole: [redacted].
 */
export function redact(text, secretTexts) {
  if (typeof text !== 'string' || text === '' || secretTexts.length === 0) return text;
  if (!ESCAPES.test(text) && !secretTexts.some((sec) => text.includes(sec))) return text; // no escape, no secret as it is
  const secrets = secretTexts.map(utf8);
  const s = utf8(text);
  const first = new Uint8Array(256); // the bytes a spelling of a secret may start with
  for (const c of '%+\\&') first[c.charCodeAt(0)] = 1;
  for (const sec of secrets) first[sec[0]] = 1;
  const m = new Matcher(s);
  const out = [];
  let changed = false;
  for (let i = 0; i < s.length; ) {
    if (first[s[i]]) {
      const [end, short] = m.longest(i, secrets);
      if (m.budget < 0 || short) return REDACTED;
      if (end > i) {
        out.push(...REDACTED_BYTES);
        changed = true;
        i = end;
        continue;
      }
    }
    out.push(s[i]);
    i++;
  }
  return changed ? fromUTF8.decode(Uint8Array.from(out)) : text;
}

/** Matcher finds secrets in a text (UTF-8 bytes), spelled in any mix of the encodings it knows. */
class Matcher {
  budget = BUDGET;
  #memo = new Map(); // j -> units(j, LAYERS): every secret reads the same positions
  constructor(text) {
    this.t = text;
  }

  /** readings is units(j, LAYERS), computed once per position. */
  readings(j) {
    let us = this.#memo.get(j);
    if (us === undefined) this.#memo.set(j, (us = this.units(j, LAYERS)));
    return us;
  }

  /** longest answers [the end of the longest spelling of a secret that starts at i (i: none), whether a short secret matched]. */
  longest(i, secrets) {
    let best = i;
    let short = false;
    for (const sec of secrets) {
      const end = this.spell(i, sec);
      if (end > i) {
        short ||= sec.length < SHORT_SECRET;
        best = Math.max(best, end);
      }
    }
    return [best, short];
  }

  /**
   * spell answers where the longest spelling of secret that starts at i ends, else -1. It follows
   * every reading of the text at once (breadth first), since one encoding's escape can be another's
   * literal: `\\` is two backslashes escaped once, or one escaped twice.
   */
  spell(i, secret) {
    let cur = [[i, 0]];
    let end = -1;
    while (cur.length > 0) {
      const next = [];
      for (const [j, k] of cur) {
        if (k === secret.length) {
          end = Math.max(end, j);
          continue;
        }
        if (--this.budget < 0) return -1;
        for (const u of this.readings(j)) {
          const kk = matches(u, secret, k);
          if (kk >= 0 && next.length < MAX_STATES && !next.some(([a, b]) => a === u.end && b === kk)) next.push([u.end, kk]);
        }
      }
      cur = next;
    }
    return end;
  }

  /**
   * units answers every reading of the character at j with up to `layers` encodings: the byte
   * itself, or an escape (percent, "+" for a space, JSON, HTML) whose own characters are read one
   * layer less deep. A unit is {val, end, rune}: rune when val is a code point (\uXXXX, &#N;).
   */
  units(j, layers) {
    const out = [];
    if (j >= this.t.length) return out;
    addUnit(out, this.t[j], j + 1, false);
    if (layers === 0) return out;
    for (const c of this.units(j, layers - 1)) {
      switch (c.val) {
        case 0x2b: // +
          addUnit(out, 0x20, c.end, false);
          break;
        case 0x25: // %
          this.hex(out, c.end, 2, layers - 1, 0, false);
          break;
        case 0x5c: // \
          for (const e of this.units(c.end, layers - 1)) {
            const v = jsonEscape(e.val);
            if (v >= 0) addUnit(out, v, e.end, false);
            else if (e.val === 0x75) this.hex(out, e.end, 4, layers - 1, 0, true); // \u
          }
          break;
        case 0x26: // &
          this.entity(out, c.end);
          break;
      }
    }
    return out;
  }

  /** hex reads `digits` more hex digits at j (each read `layers` deep) onto acc and adds the value. */
  hex(out, j, digits, layers, acc, isRune) {
    if (digits === 0) {
      if (isRune && acc >= 0xd800 && acc < 0xdc00) return this.lowSurrogate(out, j, layers, acc); // JSON spells a code point past U+FFFF as a pair
      addUnit(out, acc, j, isRune);
      return;
    }
    if (--this.budget < 0) return;
    for (const d of this.units(j, layers)) {
      const v = hexDigit(d.val);
      if (v >= 0) this.hex(out, d.end, digits - 1, layers, (acc << 4) | v, isRune);
    }
  }

  /** lowSurrogate reads the "\uDC00"-"\uDFFF" that completes the high surrogate hi at j and adds the code point. */
  lowSurrogate(out, j, layers, hi) {
    for (const b of this.units(j, layers)) {
      if (b.val !== 0x5c) continue;
      for (const u of this.units(b.end, layers)) {
        if (u.val !== 0x75) continue;
        const lows = [];
        this.hex(lows, u.end, 4, layers, 0, false);
        for (const lo of lows) {
          if (lo.val >= 0xdc00 && lo.val < 0xe000) addUnit(out, 0x10000 + ((hi - 0xd800) << 10) + (lo.val - 0xdc00), lo.end, true);
        }
      }
    }
  }

  /** entity reads an HTML character reference after its "&" at j: one of the five named escapes, or a numeric one. */
  entity(out, j) {
    const t = this.t;
    for (const [name, val] of ENTITIES) {
      if (name.every((c, x) => t[j + x] === c)) {
        addUnit(out, val, j + name.length, true);
        return;
      }
    }
    if (t.length - j < 3 || t[j] !== 0x23) return; // #
    let base = 10;
    let i = 1;
    if (t[j + 1] === 0x78 || t[j + 1] === 0x58) [base, i] = [16, 2]; // x X
    let v = 0;
    const start = i;
    for (; j + i < t.length && i < start + 7; i++) {
      const d = hexDigit(t[j + i]);
      if (d < 0 || (base === 10 && d > 9)) break;
      v = v * base + d;
    }
    if (i > start && j + i < t.length && t[j + i] === 0x3b) addUnit(out, v, j + i + 1, true); // ;
  }
}

const ENTITIES = [
  ['lt;', 0x3c],
  ['gt;', 0x3e],
  ['amp;', 0x26],
  ['quot;', 0x22],
  ['apos;', 0x27],
].map(([n, v]) => [Array.from(n, (c) => c.charCodeAt(0)), v]);

/** addUnit adds a reading unless it is there already, or the set is full (it keeps its first). */
function addUnit(out, val, end, rune) {
  if (out.length >= MAX_UNITS || out.some((u) => u.val === val && u.end === end && u.rune === rune)) return;
  out.push({ val, end, rune });
}

/** matches answers where secret (bytes) continues after unit u stands for its character at k, or -1. */
function matches(u, secret, k) {
  if (u.rune && u.val >= 0x80) {
    const [r, size] = decodeRune(secret, k);
    return r === u.val && r !== 0xfffd ? k + size : -1;
  }
  return u.val === secret[k] ? k + 1 : -1;
}

/** decodeRune answers [the code point of the UTF-8 sequence at k, its length]; [0xfffd, 1] when invalid. */
function decodeRune(b, k) {
  const c = b[k];
  const size = c < 0x80 ? 1 : c >= 0xf0 && c < 0xf8 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
  if (size === 0 || k + size > b.length) return [0xfffd, 1];
  if (size === 1) return [c, 1];
  let r = c & (0xff >> (size + 1));
  for (let x = 1; x < size; x++) {
    if ((b[k + x] & 0xc0) !== 0x80) return [0xfffd, 1];
    r = (r << 6) | (b[k + x] & 0x3f);
  }
  return [r, size];
}

function jsonEscape(c) {
  switch (c) {
    case 0x22: // "
    case 0x5c: // \
    case 0x2f: // /
      return c;
    case 0x62: // b
      return 0x08;
    case 0x66: // f
      return 0x0c;
    case 0x6e: // n
      return 0x0a;
    case 0x72: // r
      return 0x0d;
    case 0x74: // t
      return 0x09;
  }
  return -1;
}

function hexDigit(c) {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}
