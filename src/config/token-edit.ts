// Writes a new token hash into a config file's text, keeping everything else as it was: the
// yaml document API locates the keys, and only their characters are replaced, so comments,
// blank lines, quoting and flow collections elsewhere stay byte for byte. Only when the file's
// shape leaves no clean place to splice (no `auth` block yet, a flow mapping to remove a key
// from) is the document re-serialized, which keeps comments but may re-space a line or two.
import { isMap, isPair, isScalar, parseDocument, type Document, type Node, type Pair, type YAMLMap } from 'yaml';

const AUTH = ['self_telemetry', 'auth'] as const;
const TOKEN = 'bearer_token';
const HASH = 'bearer_token_sha256';

export type TokenEdit =
  | { ok: true; text: string; removedPlainToken: boolean; authEnabled: boolean }
  | { ok: false; reason: string };

/** `${NAME}` or `${NAME:-default}` (not the escaped `$${`). */
const REFERENCE = /(?:^|[^$])\$\{([^}:]*)/;

function pairOf(map: YAMLMap, key: string): Pair<Node, Node> | undefined {
  return (map.items as Array<Pair<Node, Node>>).find((p) => isPair(p) && isScalar(p.key) && p.key.value === key);
}

function lineStart(text: string, at: number): number {
  return text.lastIndexOf('\n', at - 1) + 1;
}

function lineEnd(text: string, at: number): number {
  const nl = text.indexOf('\n', at);
  return nl === -1 ? text.length : nl;
}

function splice(text: string, start: number, end: number, insert: string): string {
  return text.slice(0, start) + insert + text.slice(end);
}

function authMap(doc: Document): YAMLMap | undefined | null {
  const node = doc.getIn(AUTH, true);
  if (node === undefined) return undefined;
  return isMap(node) ? node : null;
}

/** The text of `bearer_token_sha256: "<hash>"` written where it belongs, or why it cannot be. */
export function setTokenHash(text: string, hash: string): TokenEdit {
  const doc = parseDocument(text, { keepSourceTokens: true });
  if (doc.errors.length > 0) return { ok: false, reason: `the file is not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}` };
  const auth = authMap(doc);
  if (auth === null) return { ok: false, reason: 'self_telemetry.auth is not a mapping' };

  const tokenPair = auth ? pairOf(auth, TOKEN) : undefined;
  const hashPair = auth ? pairOf(auth, HASH) : undefined;
  for (const [key, pair] of [[TOKEN, tokenPair], [HASH, hashPair]] as const) {
    const value = pair?.value;
    if (value === undefined || value === null) continue;
    if (!isScalar(value)) return { ok: false, reason: `self_telemetry.auth.${key} is not a plain value` };
    const ref = typeof value.value === 'string' ? REFERENCE.exec(value.value) : null;
    if (ref) {
      return {
        ok: false,
        reason:
          `self_telemetry.auth.${key} comes from the environment variable ${ref[1]}: rotate the token in the secret store ` +
          `that sets it (then reload the agent), or remove the key from the file to let \`mtlens token rotate\` manage ` +
          `self_telemetry.auth.${HASH} in it`,
      };
    }
  }
  const plainToken = tokenPair?.value !== undefined && tokenPair.value !== null && isScalar(tokenPair.value) && tokenPair.value.value !== null && tokenPair.value.value !== '';
  const authEnabled = auth?.get('enabled') === true || String(auth?.get('enabled')).trim().toLowerCase() === 'true';
  const quoted = JSON.stringify(hash);

  let out = auth ? spliced(text, auth, tokenPair, hashPair, quoted) : undefined;
  // No self_telemetry section at all: one is appended.
  if (!auth && !doc.has('self_telemetry') && isMap(doc.contents) && !doc.contents.flow) {
    out = `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}self_telemetry:\n  auth:\n    ${HASH}: ${quoted}\n`;
  }
  if (out === undefined || !verify(out, hash)) {
    try {
      if (doc.hasIn([...AUTH, TOKEN])) doc.deleteIn([...AUTH, TOKEN]);
      doc.setIn([...AUTH, HASH], hash);
      out = doc.toString();
    } catch {
      out = undefined;
    }
    if (out === undefined || !verify(out, hash)) return { ok: false, reason: 'could not write self_telemetry.auth.bearer_token_sha256 into this file (is self_telemetry a mapping?)' };
  }
  return { ok: true, text: out, removedPlainToken: plainToken, authEnabled };
}

interface Edit {
  start: number;
  end: number;
  insert: string;
}

const keyStart = (p: Pair<Node, Node>) => (isScalar(p.key) ? p.key.range?.[0] : undefined);
const valueEnd = (p: Pair<Node, Node>) => p.value?.range?.[1] ?? (isScalar(p.key) ? p.key.range?.[1] : undefined);

/** The file with only the needed characters changed; undefined when its shape asks for re-serializing. */
function spliced(text: string, auth: YAMLMap, tokenPair: Pair<Node, Node> | undefined, hashPair: Pair<Node, Node> | undefined, quoted: string): string | undefined {
  const edits: Edit[] = [];
  const items = auth.items as Array<Pair<Node, Node>>;
  if (hashPair) {
    const range = isScalar(hashPair.value) ? hashPair.value.range : undefined;
    if (!range || range[1] <= range[0]) return undefined;
    edits.push({ start: range[0], end: range[1], insert: quoted });
    if (tokenPair) {
      // The old token goes (it must stop working): its whole line, or its entry in a flow mapping.
      const start = keyStart(tokenPair);
      const end = valueEnd(tokenPair);
      if (start === undefined || end === undefined) return undefined;
      if (!auth.flow) {
        const from = lineStart(text, start);
        if (text.slice(from, start).trim() !== '') return undefined;
        edits.push({ start: from, end: Math.min(text.length, lineEnd(text, Math.max(end, (tokenPair.value?.range?.[2] ?? end) - 1)) + 1), insert: '' });
      } else {
        const i = items.indexOf(tokenPair);
        const next = items[i + 1];
        const prev = items[i - 1];
        if (next && keyStart(next) !== undefined) edits.push({ start, end: keyStart(next)!, insert: '' });
        else if (prev && valueEnd(prev) !== undefined) edits.push({ start: valueEnd(prev)!, end, insert: '' });
        else return undefined;
      }
    }
  } else if (tokenPair) {
    // The hash takes the old token's place (its line, its trailing comment).
    const start = keyStart(tokenPair);
    const end = valueEnd(tokenPair);
    if (start === undefined || end === undefined) return undefined;
    edits.push({ start, end, insert: `${HASH}: ${quoted}` });
  } else {
    const first = items[0];
    const last = items[items.length - 1];
    if (!first || !last) return undefined;
    const firstKey = keyStart(first);
    const lastEnd = valueEnd(last);
    if (firstKey === undefined || lastEnd === undefined) return undefined;
    if (auth.flow) edits.push({ start: lastEnd, end: lastEnd, insert: `, ${HASH}: ${quoted}` });
    else {
      // After the last entry's line (and its comment), at the entries' indentation.
      let end = last.value?.range?.[2] ?? lastEnd;
      while (end > lastEnd && /\s/.test(text[end - 1]!)) end--;
      const at = lineEnd(text, end - 1);
      edits.push({ start: at, end: at, insert: `\n${text.slice(lineStart(text, firstKey), firstKey)}${HASH}: ${quoted}` });
    }
  }
  // Back to front, so every range stays valid.
  let out = text;
  for (const e of edits.sort((a, b) => b.start - a.start)) out = splice(out, e.start, e.end, e.insert);
  return out;
}

/** The edited text says what it should: the new hash, no plain token, nothing else broken. */
function verify(text: string, hash: string): boolean {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return false;
  return doc.getIn([...AUTH, HASH]) === hash && doc.getIn([...AUTH, TOKEN]) === undefined;
}
