// Config errors go to the terminal, the reload response and the log: they must never carry a
// credential, whichever check produced them and however it quoted the value it refused.
import type { ConfigError } from './errors.js';
import { REDACTED } from './redact.js';

const SCHEME = /[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/**
 * Replaces the userinfo of URL-ish values: `ftp://admin:pw@host` keeps its scheme,
 * `admin:pw@host:4317` (no scheme) keeps what leads it (a quote). A run without a scheme and
 * without a colon (`name@host`) holds no password and stays.
 */
export function redactUserinfo(text: string): string {
  // Greedy up to the last `@` of a whitespace-free run: a password may itself contain `@` or `/`.
  return text.replace(/\S+@/g, (run) => {
    const scheme = SCHEME.exec(run);
    if (scheme) return `${run.slice(0, scheme.index + scheme[0].length)}${REDACTED}@`;
    if (!run.includes(':')) return run;
    return `${/^[^A-Za-z0-9]*/.exec(run)![0]}${REDACTED}@`;
  });
}

// Shorter values would blank out ordinary words of the message; values at a secret key are never
// quoted by the checks themselves, this is the net for a check that quotes one anyway.
const MIN_SCRUBBED = 4;

/** `errors` with userinfo and every one of `secrets` replaced by the redaction marker. */
export function redactErrors(errors: readonly ConfigError[], secrets: readonly string[]): ConfigError[] {
  const scrub = [...new Set(secrets)].filter((s) => s.length >= MIN_SCRUBBED).sort((a, b) => b.length - a.length);
  const clean = (text: string) => redactUserinfo(scrub.reduce((t, s) => t.split(s).join(REDACTED), text));
  return errors.map((e) => ({ path: clean(e.path), message: clean(e.message) }));
}
