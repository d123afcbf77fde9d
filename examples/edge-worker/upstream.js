// Where the edge gateway forwards a request: to the configured upstream and nowhere else.

// Spellings an upstream (or a proxy before it) may read as another path than the one checked here:
// encoded slashes, backslashes and dots, a raw backslash, a double encoding (%25), a NUL or any
// other control byte, IIS's %u escapes, and escaped bytes of 0x80 and above (overlong UTF-8 such as
// %c0%ae, which lenient decoders read as a dot).
const AMBIGUOUS = /%2f|%5c|%2e|%25|%0|%1|%7f|%u|%[89a-f][0-9a-f]|\\/i;

/** dotSegment: a segment an upstream may read as . or .. (Tomcat and Spring cut ";params" first). */
const dotSegment = (s) => {
  const name = s.split(';', 1)[0];
  return name === '.' || name === '..';
};

/**
 * upstreamURL maps a request's URL onto the configured upstream, or returns null. The request's path
 * is appended to UPSTREAM's path as a path, never resolved as a URL reference: resolving it would
 * let `/http://other/x`, `///other/x` or `/\\other/x` name another host, which would then receive the
 * provider token. The result is checked to stay on UPSTREAM's origin and under its path, and a path
 * with dot segments or encoded separators is refused outright.
 */
export function upstreamURL(requestURL, upstream) {
  try {
    return mapped(requestURL, upstream);
  } catch {
    return null; // a request URL that does not parse (GET *): refused, never a crash
  }
}

function mapped(requestURL, upstream) {
  const base = new URL(upstream);
  // The raw path as sent: the URL parser has already removed dot segments and turned backslashes
  // into slashes, so read the request line's spelling from the string itself too.
  const raw = requestURL.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '').split(/[?#]/, 1)[0];
  if (AMBIGUOUS.test(raw) || raw.split('/').some(dotSegment)) return null;
  const url = new URL(requestURL);
  const prefix = base.pathname.replace(/\/+$/, '');
  const target = new URL(base.origin);
  target.pathname = prefix + url.pathname;
  target.search = url.search;
  if (target.origin !== base.origin || !target.pathname.startsWith(`${prefix}/`)) return null;
  return target;
}
