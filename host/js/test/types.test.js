// The package's types (src/index.d.ts): TokenRequest and Profile list exactly the fields of
// abi/ABI.md's tables (the plugin refuses any other, so TypeScript must see a misspelling), and
// test/types/check.ts compiles with tsc (devDependency typescript), its @ts-expect-error lines
// (a misspelt field, a misspelt profile field, an unknown provider, a wrong type) all errors; and the
// request, answer and error types are the JSON Schemas' of abi/schema (rendered by
// test/types/schema-types.js), member for member and type for type.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ROOT } from './support.js';
import { schemaTypes } from './types/schema-types.js';

const PKG = join(dirname(fileURLToPath(import.meta.url)), '..');
const dts = readFileSync(join(PKG, 'src/index.d.ts'), 'utf8');
const abi = readFileSync(join(ROOT, 'abi/ABI.md'), 'utf8');

/** tableFields lists the field names of the first column of the table under an ABI.md heading. */
function tableFields(heading) {
  const section = abi.slice(abi.indexOf(`\n${heading}\n`));
  const rows = section.split('\n').slice(1);
  const start = rows.findIndex((l) => l.startsWith('|'));
  const names = [];
  for (const row of rows.slice(start + 2)) {
    if (!row.startsWith('|')) break;
    names.push(...[...row.split('|')[1].matchAll(/`([a-z_]+)`/g)].map((m) => m[1]));
  }
  return names.sort();
}

/** interfaceFields lists the member names of an interface of index.d.ts. */
function interfaceFields(name) {
  const body = dts.slice(dts.indexOf(`export interface ${name} {`)).split('\n}')[0];
  return [...body.matchAll(/^ {2}([a-z_]+)\??:/gm)].map((m) => m[1]).sort();
}

test("TokenRequest lists every field of ABI.md's TokenRequest table, and nothing else", () => {
  const want = tableFields('### TokenRequest');
  assert.ok(want.length >= 25, want.join(' '));
  assert.deepEqual(interfaceFields('TokenRequest'), want);
});

test("Profile lists every field of ABI.md's Profile table, and name", () => {
  const want = [...tableFields('### Profile (custom provider)'), 'name'].sort();
  assert.ok(want.length >= 12, want.join(' '));
  assert.deepEqual(interfaceFields('Profile'), want);
});

test('test/types/check.ts compiles: a misspelt field is a compile error', () => {
  const tsc = join(PKG, 'node_modules/.bin/tsc');
  try {
    execFileSync(tsc, ['-p', join(PKG, 'test/types')], { encoding: 'utf8', stdio: 'pipe' });
  } catch (err) {
    assert.fail(`tsc: ${err.stdout}${err.stderr}`);
  }
});

test("the request, answer and error types are abi/schema's: same members, same types, same optionality", () => {
  const dir = mkdtempSync(join(tmpdir(), 'tokenwasm-types-'));
  try {
    writeFileSync(join(dir, 'schema.ts'), schemaTypes(join(ROOT, 'abi/schema')));
    // Each line names what it checks: tsc's error is at the line of the type that drifted.
    writeFileSync(join(dir, 'check.ts'), `
import type { TokenRequest, Profile, Token, TokenwasmError, ErrorKind, TokenAnswer } from ${JSON.stringify(join(PKG, 'src/index.js'))};
import type * as S from './schema.js';
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
type Answered = 'token' | 'cached' | 'refresh_at_ms' | 'stale_at_ms'; // the client fills them all
export const tokenRequest: Equal<TokenRequest, S.TokenRequest> = true;
export const profile: Equal<Profile, S.Profile> = true;
export const token: Equal<Token, S.Token> = true;
export const error: Equal<Omit<TokenwasmError, 'aborted'>, Omit<S.Error, never>> = true; // aborted: this host's
export const errorKind: Equal<ErrorKind, S.Error['kind']> = true;
export const answer: Equal<Pick<Extract<TokenAnswer, { token: Token }>, Answered>, Required<Pick<Extract<S.Result, { token: S.Token }>, Answered>>> = true;
`);
    const options = JSON.parse(readFileSync(join(PKG, 'test/types/tsconfig.json'), 'utf8')).compilerOptions;
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: options, files: ['check.ts'] }));
    try {
      execFileSync(join(PKG, 'node_modules/.bin/tsc'), ['-p', dir], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      assert.fail(`index.d.ts differs from abi/schema:\n${err.stdout}${err.stderr}\n${readFileSync(join(dir, 'schema.ts'), 'utf8')}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
