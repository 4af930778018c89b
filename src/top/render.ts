// Renders the `mtlens top` screen model into lines of a given width and height. Every line fits
// the width (columns are dropped by priority, names shortened, then the line cut), so a narrow
// terminal never wraps; colour is applied after fitting, and only when asked for. ASCII only, so
// any terminal and locale shows the same characters.
import type { Role } from '../model/events.js';
import type { Notice, Row, TopModel } from './model.js';

type Style = 'title' | 'head' | 'bad' | 'warn' | 'good' | 'dim';
type Seg = readonly [text: string, style?: Style];
type Line = Seg[];

const SGR: Record<Style, string> = { title: '7', head: '1', bad: '31', warn: '33', good: '32', dim: '2' };

export interface Frame {
  width: number;
  /** Lines available; undefined: as many as the content needs (one frame for a script). */
  height?: number;
  colour: boolean;
  url: string;
  now: number;
  /** One frame for a script: no key help. */
  once?: boolean;
}

/** 1536 -> 1.5K: binary units, one decimal below 100. */
export function bytes(n: number): string {
  if (n < 1024) return `${Math.round(n)}B`;
  const units = ['K', 'M', 'G', 'T', 'P'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 100 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

const rate = (n: number | undefined) => (n === undefined ? '-' : `${bytes(n)}/s`);
const clock = (ms: number) => new Date(ms).toTimeString().slice(0, 8);

/** Cuts a line to `width` visible characters, then styles it. */
function fit(line: Line, width: number, colour: boolean): string {
  let left = width;
  let out = '';
  for (const [text, style] of line) {
    if (left <= 0) break;
    const t = text.length > left ? text.slice(0, left) : text;
    left -= t.length;
    out += colour && style ? `\x1b[${SGR[style]}m${t}\x1b[0m` : t;
  }
  return out;
}

interface Column {
  title: string;
  width: number;
  /** Lower goes first when the terminal is too narrow. */
  keep: number;
  right?: boolean;
  cell(r: Row): string;
}

const ROLE_SHORT: Record<Role, string> = { client: 'client', upstream_dc: 'dc', upstream_other: 'other' };

function columns(mode: TopModel['mode']): { name: { title: string; min: number; max: number }; rest: Column[] } {
  const rest: Column[] = [
    { title: 'CONNS', width: 5, keep: 3, right: true, cell: (r) => String(r.conns) },
    { title: 'UP/s', width: 9, keep: 6, right: true, cell: (r) => rate(r.rate?.rx) },
    { title: 'DOWN/s', width: 9, keep: 5, right: true, cell: (r) => rate(r.rate?.tx) },
    { title: 'UP', width: 7, keep: 1, right: true, cell: (r) => bytes(r.up) },
    { title: 'DOWN', width: 7, keep: 0, right: true, cell: (r) => bytes(r.down) },
  ];
  if (mode === 'users') return { name: { title: 'USER', min: 8, max: 24 }, rest };
  return {
    name: { title: 'PEER', min: 15, max: 39 },
    rest: [
      { title: 'ROLE', width: 12, keep: 2, cell: (r) => r.roles.map((x) => ROLE_SHORT[x]).join(',') },
      { title: 'USER', width: 12, keep: 4, cell: (r) => r.user ?? '' },
      ...rest,
    ],
  };
}

/** The table: the name column takes what the others leave, within its bounds; columns that do not fit are dropped, least needed first. */
function table(model: TopModel, rows: Row[], width: number): { header: Line; body: Line[] } {
  const { name, rest } = columns(model.mode);
  let shown = [...rest];
  const need = () => name.min + shown.reduce((n, c) => n + 1 + c.width, 0);
  while (shown.length && need() > width) {
    const least = shown.reduce((a, b) => (b.keep < a.keep ? b : a));
    shown = shown.filter((c) => c !== least);
  }
  const nameWidth = Math.max(name.min, Math.min(name.max, width - (need() - name.min), Math.max(name.title.length, ...rows.map((r) => r.name.length))));
  const cut = (s: string, w: number) => (s.length > w ? `${s.slice(0, w - 1)}~` : s);
  const cell = (c: Column, text: string) => {
    const t = cut(text, c.width);
    return c.right ? t.padStart(c.width) : t.padEnd(c.width);
  };
  const header: Line = [[name.title.padEnd(nameWidth), 'head'], ...shown.map((c): Seg => [` ${cell(c, c.title)}`, 'head'])];
  const body = rows.map((r): Line => [[cut(r.name, nameWidth).padEnd(nameWidth)], ...shown.map((c): Seg => [` ${cell(c, c.cell(r))}`])]);
  return { header, body };
}

function healthOf(pct: number): Style {
  return pct >= 100 ? 'good' : pct > 0 ? 'warn' : 'bad';
}

function topLines(model: TopModel, f: Frame): Line[] {
  const s = model.sample!;
  const lines: Line[] = [];
  // The clock and the address go first when the terminal is narrow.
  const title = `mtlens top  ${s.node}  ${s.version}  up ${s.uptime}`;
  const right = [`${f.url}  ${clock(f.now)}`, clock(f.now), ''].find((r) => title.length + 2 + r.length <= f.width) ?? '';
  lines.push([[right ? `${title}${' '.repeat(f.width - title.length - right.length)}${right}` : title, 'title']]);
  if (model.error) lines.push([[`agent: ${model.error}; showing the last good data`, 'bad']]);
  lines.push([
    ['agent '],
    s.ready ? ['ready', 'good'] : [`NOT READY (${s.failedChecks.join(', ')})`, 'bad'],
    ['  ebpf '],
    s.ebpf.enabled ? [`${s.ebpf.eventsLost} events lost`, s.ebpf.eventsLost ? 'warn' : undefined] : [`off: ${s.ebpf.reason ?? ''}`, 'bad'],
    ['  telemt '],
    !s.telemt.enabled ? ['not watched'] : !s.telemt.reachable ? ['unreachable', 'bad'] : [`${s.telemt.version ?? '?'} ${s.telemt.ready === false ? 'not ready' : 'ready'}`, s.telemt.ready === false ? 'bad' : 'good'],
  ]);
  const total = model.rates.rate('*');
  lines.push([
    ['conns '],
    [Object.entries(s.roles).map(([role, r]) => `${role} ${r.total}`).join('  ')],
    [`  rate up ${rate(total?.rx)} down ${rate(total?.tx)} (over ${model.rates.windowMs / 1000} s)`],
  ]);
  if (typeof s.dcs === 'string') lines.push([['DCs   '], [s.dcs, 'dim']]);
  else {
    lines.push([['DC    COVER   AVAIL      RTT   LOAD', 'head']]);
    for (const d of s.dcs) {
      lines.push([
        [`${String(d.dc).padEnd(4)}`],
        [`${`${Math.round(d.coverage_pct)}%`.padStart(7)}`, healthOf(d.coverage_pct)],
        [`${`${Math.round(d.available_pct)}%`.padStart(8)}`, healthOf(d.available_pct)],
        [`${(d.rtt_ms === null ? '-' : `${d.rtt_ms.toFixed(1)}ms`).padStart(9)}${String(d.load).padStart(7)}`],
      ]);
    }
  }
  return lines;
}

function noticeLine(n: Notice): Line {
  return [[`${clock(n.at)} `], [n.kind.padEnd(6), n.kind === 'telemt' ? 'warn' : 'bad'], [` ${n.text}`]];
}

/** The screen: status lines, DC health, the users or peers table, recent stalls and resets, key help. */
export function render(model: TopModel, f: Frame): string[] {
  if (!model.sample) return [fit([[`mtlens top: reading ${f.url} ...`]], f.width, f.colour)];
  const top = topLines(model, f);
  const filter = model.activeFilter();
  const events: Line = [[`EVENTS  stalls ${model.stalls}  resets ${model.resets}`, 'head'], [model.eventsError ? `  (${model.eventsError})` : '', 'bad']];
  const help: Line = model.draft !== undefined ? [['type to filter  Enter keep  Esc clear', 'dim']] : [['q quit  s sort  u users  p peers  / filter  Esc clear filter', 'dim']];
  const rows = model.rows();
  const t = table(model, rows, f.width);
  const bottomFixed = f.once ? 1 : 2; // the events caption, and the key help
  let noticeCount = Math.min(model.notices.length, 5);
  let topShown = top;
  let bodyRows = rows.length;
  if (f.height !== undefined) {
    // The table keeps at least three rows: events go first, then the DC lines.
    const room = () => f.height! - topShown.length - 2 - bottomFixed - noticeCount;
    while (room() < 3 && noticeCount > 0) noticeCount--;
    if (room() < 3) topShown = top.slice(0, Math.max(1, top.length - Math.max(0, 3 - room())));
    bodyRows = Math.max(0, Math.min(rows.length, room()));
  }
  const caption: Line = [
    [`${model.mode.toUpperCase()} by ${model.sort}`, 'head'],
    [filter || model.draft !== undefined ? `  filter: ${filter}${model.draft !== undefined ? '_' : ''}` : ''],
    [bodyRows < rows.length ? `  (${bodyRows} of ${rows.length})` : '', 'dim'],
  ];
  const lines: Line[] = [...topShown, caption, t.header, ...t.body.slice(0, bodyRows)];
  if (f.height !== undefined) while (lines.length < f.height - bottomFixed - noticeCount) lines.push([]);
  lines.push(events, ...model.notices.slice(0, noticeCount).map(noticeLine));
  if (!f.once) lines.push(help);
  const out = lines.map((l) => fit(l, f.width, f.colour));
  return f.height === undefined ? out : out.slice(0, f.height);
}
