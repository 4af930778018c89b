// telemt's per-user byte split, read from its Prometheus endpoint: the Control API has only
// `total_octets` (both directions summed), the only place telemt counts a user's bytes by
// direction is `telemt_user_octets_from_client{user}` (upload) and `telemt_user_octets_to_client{user}`
// (download) in src/metrics.rs. telemt prints them without `_total`, only while
// `[general.telemetry] user_enabled`, for at most 4096 users, label values unescaped (user names
// are `[A-Za-z0-9_.-]`). Both count relayed payload, as `total_octets` does.

/** Users read from one scrape at most (telemt itself prints at most 4096). */
export const MAX_SCRAPED_USERS = 100_000;

const SAMPLE = /^telemt_user_octets_(from|to)_client\{user="([^"]*)"\} (\S+)/;

/** user -> [from_client, to_client]; a user with only one of the two lines is left out. */
export function parseUserOctets(text: string): Map<string, [number, number]> {
  const partial = new Map<string, [number, number]>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('telemt_user_octets_')) continue;
    const m = SAMPLE.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value) || value < 0) continue;
    let pair = partial.get(m[2]!);
    if (pair === undefined) {
      if (partial.size >= MAX_SCRAPED_USERS) continue;
      pair = [Number.NaN, Number.NaN];
      partial.set(m[2]!, pair);
    }
    pair[m[1] === 'from' ? 0 : 1] = value;
  }
  for (const [user, pair] of partial) if (Number.isNaN(pair[0]) || Number.isNaN(pair[1])) partial.delete(user);
  return partial;
}
