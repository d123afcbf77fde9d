// The vector matcher of internal/conformance, in plain JavaScript (every runtime's suite uses it).

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * match reports how got differs from want (parsed JSON), or null when it matches: exact JSON equality
 * (no missing and no extra fields), except that the string "<uuid>" in want matches any UUID v4.
 * The same rules, in the same order, as Match in internal/conformance/conformance.go.
 */
export function match(want, got, path = '$') {
  if (isObject(want)) {
    if (!isObject(got)) return `${path}: want an object, got ${JSON.stringify(got)}`;
    for (const k of Object.keys(got)) if (!Object.hasOwn(want, k)) return `${path}.${k}: unexpected field`;
    for (const k of Object.keys(want).sort()) {
      if (!Object.hasOwn(got, k)) return `${path}.${k}: missing`;
      const err = match(want[k], got[k], `${path}.${k}`);
      if (err) return err;
    }
    return null;
  }
  if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length !== want.length) return `${path}: want ${JSON.stringify(want)}, got ${JSON.stringify(got)}`;
    for (let i = 0; i < want.length; i++) {
      const err = match(want[i], got[i], `${path}[${i}]`);
      if (err) return err;
    }
    return null;
  }
  if (want === '<uuid>' && typeof got === 'string' && UUID.test(got)) return null;
  const w = JSON.stringify(want);
  const g = JSON.stringify(got);
  return w === g ? null : `${path}: want ${w}, got ${g}`;
}

