// A strict parser of the Prometheus text format 0.0.4 and OpenMetrics 1.0, as the agent and
// prom-client write them: every family opens with `# HELP` then `# TYPE`, a family appears
// once, every sample belongs to the family above it (its name is the family's name plus a
// suffix its type allows), no series twice, escapes and values as the formats define them.
// Stricter than the formats where mtlens never needs their latitude (comments, timestamps,
// exemplars, trailing commas), so anything unusual in a scrape fails loudly.
export type ExpositionFormat = 'prometheus' | 'openmetrics';

export interface Family {
  name: string;
  type: string;
  help: string;
  /** Value by series key (`sample{label="value",...}`, labels sorted by name). */
  samples: Map<string, number>;
  /** Sample name and sorted label names of each series, for families compared by shape. */
  shapes: Set<string>;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
// NaN in any case, as Prometheus reads it (Go's ParseFloat; prom-client writes `Nan`).
const VALUE = /^(?:[nN][aA][nN]|[+-]Inf|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)$/;
const HELP_LINE = new RegExp(`^# HELP (${NAME})(?: (.*))?$`);
const TYPE_LINE = new RegExp(`^# TYPE (${NAME}) (\\S+)$`);
const SAMPLE_NAME = new RegExp(`^${NAME}`);

const TYPES: Record<ExpositionFormat, Record<string, readonly string[]>> = {
  prometheus: {
    counter: [''],
    gauge: [''],
    untyped: [''],
    histogram: ['_bucket', '_sum', '_count'],
    summary: ['', '_sum', '_count'],
  },
  openmetrics: {
    counter: ['_total', '_created'],
    gauge: [''],
    unknown: [''],
    stateset: [''],
    info: ['_info'],
    histogram: ['_bucket', '_sum', '_count', '_created'],
    gaugehistogram: ['_bucket', '_gsum', '_gcount'],
    summary: ['', '_sum', '_count', '_created'],
  },
};

function unescape(s: string, allowed: string, where: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => {
    if (!allowed.includes(c)) throw new Error(`${where}: invalid escape \\${c}`);
    return c === 'n' ? '\n' : c;
  });
}

function parseValue(s: string, where: string): number {
  if (!VALUE.test(s)) throw new Error(`${where}: invalid value ${JSON.stringify(s)}`);
  return /^nan$/i.test(s) ? NaN : s === '+Inf' ? Infinity : s === '-Inf' ? -Infinity : Number(s);
}

/** Label pairs of `{...}` starting at `text[start]`; returns them and the index after `}`. */
function parseLabels(text: string, start: number, where: string): { labels: Array<[string, string]>; end: number } {
  const labels: Array<[string, string]> = [];
  let i = start + 1;
  if (text[i] === '}') return { labels, end: i + 1 };
  for (;;) {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: label without '='`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: invalid label name ${JSON.stringify(name)}`);
    if (labels.some(([n]) => n === name)) throw new Error(`${where}: label ${name} twice`);
    if (text[eq + 1] !== '"') throw new Error(`${where}: label ${name} value not quoted`);
    let j = eq + 2;
    let raw = '';
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') raw += text[j++]!;
      raw += text[j] ?? '';
    }
    if (j >= text.length) throw new Error(`${where}: unterminated label value`);
    labels.push([name, unescape(raw, '\\"n', where)]);
    i = j + 1;
    if (text[i] === '}') return { labels, end: i + 1 };
    if (text[i] !== ',' || text[i + 1] === '}') throw new Error(`${where}: expected ',' or '}' after label ${name}`);
    i++;
  }
}

export interface ParseOptions {
  /** Accept a bare `"` in OpenMetrics HELP text, which prom-client writes (the format escapes it). */
  bareQuotesInHelp?: boolean;
}

export function parseExposition(text: string, format: ExpositionFormat, opts: ParseOptions = {}): Map<string, Family> {
  const om = format === 'openmetrics';
  const families = new Map<string, Family>();
  if (!text.endsWith('\n')) throw new Error('the exposition does not end with a newline');
  const lines = text.slice(0, -1).split('\n');
  if (om && lines.pop() !== '# EOF') throw new Error('OpenMetrics exposition does not end with "# EOF"');
  let current: Family | undefined;
  let pendingHelp: { name: string; help: string } | undefined;
  lines.forEach((line, n) => {
    const where = `line ${n + 1} ${JSON.stringify(line)}`;
    if (pendingHelp) {
      const type = TYPE_LINE.exec(line);
      if (!type || type[1] !== pendingHelp.name) throw new Error(`${where}: # HELP ${pendingHelp.name} is not followed by its # TYPE`);
      if (!TYPES[format][type[2]!]) throw new Error(`${where}: unknown type ${type[2]} in ${format}`);
      current = { name: pendingHelp.name, type: type[2]!, help: pendingHelp.help, samples: new Map(), shapes: new Set() };
      families.set(current.name, current);
      pendingHelp = undefined;
      return;
    }
    if (line === '') {
      if (om) throw new Error(`${where}: empty line in OpenMetrics`);
      return;
    }
    if (line.startsWith('#')) {
      const help = HELP_LINE.exec(line);
      if (!help) throw new Error(`${where}: ${TYPE_LINE.test(line) ? 'TYPE line without a HELP line before it' : 'unexpected comment'}`);
      if (families.has(help[1]!)) throw new Error(`${where}: second HELP/TYPE for family ${help[1]}`);
      pendingHelp = { name: help[1]!, help: unescape(help[2] ?? '', om ? '\\"n' : '\\n', where) };
      if (om && !opts.bareQuotesInHelp && /(^|[^\\])(\\\\)*"/.test(help[2] ?? '')) throw new Error(`${where}: unescaped '"' in OpenMetrics HELP`);
      return;
    }
    if (!current) throw new Error(`${where}: sample before any # TYPE`);
    const name = SAMPLE_NAME.exec(line)?.[0];
    if (!name) throw new Error(`${where}: no metric name`);
    const suffix = name.startsWith(current.name) ? name.slice(current.name.length) : undefined;
    if (suffix === undefined || !TYPES[format][current.type]!.includes(suffix)) {
      throw new Error(`${where}: sample ${name} does not belong to the ${current.type} family ${current.name} above it`);
    }
    let i = name.length;
    let labels: Array<[string, string]> = [];
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i, where));
    if (line[i] !== ' ') throw new Error(`${where}: expected one space before the value`);
    const value = parseValue(line.slice(i + 1), where);
    if (suffix === '_bucket' && !labels.some(([k]) => k === 'le')) throw new Error(`${where}: bucket without le`);
    labels.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const key = `${name}{${labels.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
    if (current.samples.has(key)) throw new Error(`${where}: series ${key} twice`);
    current.samples.set(key, value);
    current.shapes.add(`${name}{${labels.map(([k]) => k).join(',')}}`);
  });
  if (pendingHelp) throw new Error(`# HELP ${pendingHelp.name} is the last line`);
  return families;
}
