// `mtlens top` as an operator uses it: typed into a shell in a real terminal (tmux), against a
// running agent that watches the simulated telemt while users send traffic through it from their
// own loopback addresses. The tests read the screen and press keys; they wait on what the screen
// shows, never on time.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { exchange as telemtExchange } from './fixtures/telemt-sim-protocol.js';
import { MTLENS, runCli } from './helpers/cli.js';
import { kernelGate } from './helpers/ebpf.js';
import { startFullAgent, type FullAgent } from './helpers/full-agent.js';
import { BASE_CONFIG, buildAgent } from './helpers/agent.js';
import { productionWiring } from '../src/wiring.js';
import { TmuxPane } from './helpers/tmux.js';

/** The table rows under the header line starting with `header`, up to the first blank line. */
function tableRows(screen: string, header: string): string[] {
  const lines = screen.split('\n');
  const at = lines.findIndex((l) => l.startsWith(`${header} `));
  if (at < 0) return [];
  const end = lines.findIndex((l, i) => i > at && l.trim() === '');
  return lines.slice(at + 1, end < 0 ? undefined : end);
}

const row = (screen: string, name: string) => tableRows(screen, 'USER').find((l) => l.startsWith(`${name} `));
/** The order of the test's users in the table (a shared machine may add ~unknown connections on the same port numbers). */
const order = (screen: string) => tableRows(screen, 'USER').map((l) => l.split(/ +/)[0]!).filter((n) => ['alice', 'bob', 'carol'].includes(n));

/** Users' traffic: alice sends all the time, bob and carol are idle; carol has a second connection. */
async function users(h: FullAgent): Promise<{ carol2: Socket; stop: () => void }> {
  await h.traffic();
  const carol = h.users.find((u) => u.name === 'carol')!;
  const carol2 = (await telemtExchange({ host: '127.0.0.1', port: h.sim.proxyPort, secret: carol.secret, localAddress: '127.0.0.4', bytes: 100, keepOpen: true }))!;
  await h.telemt.pollNow();
  const alice = h.open.telemt.get('alice')!;
  const chunk = Buffer.alloc(4096, 1);
  const pump = setInterval(() => alice.write(chunk), 10);
  return { carol2, stop: () => clearInterval(pump) };
}

async function clientTotal(h: FullAgent): Promise<number> {
  return ((await (await h.t.request('/status/connections?role=client&limit=1')).json()) as { total: number }).total;
}

test('mtlens top in a terminal: users by current rate, DC health, sort, filter, peers, resets as they happen, a narrow terminal, q restores the terminal', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const h = await startFullAgent();
  t.after(() => h.cleanup());
  const traffic = await users(h);
  t.after(() => traffic.stop());
  const pane = await TmuxPane.start(120, 40);
  t.after(() => pane.kill());

  await pane.typeLine(`${MTLENS} top --url ${h.url}; echo "exit=$?"`);
  // alice sends all the time: a rate; bob is idle: none; totals are each live connection's bytes
  // (64 preamble + 4096 payload up, 4096 echoed down); carol has two connections.
  let screen = await pane.waitForScreen('alice with a rate, bob idle, carol with two connections', (s) => {
    const alice = row(s, 'alice');
    return /^alice +1 +\d+(\.\d)?[KM]\/s +\d+(\.\d)?[KM]\/s +\S+ +\S+$/.test(alice ?? '') && /^bob +1 +0B\/s +0B\/s +4\.1K +4\.0K$/.test(row(s, 'bob') ?? '') && /^carol +2 +0B\/s +0B\/s /.test(row(s, 'carol') ?? '');
  });
  assert.match(screen, /^mtlens top {2}\S+ {2}\S+ {2}up \S+ +http:\/\/127\.0\.0\.1:\d+ {2}\d\d:\d\d:\d\d$/m);
  assert.match(screen, /^agent ready {2}ebpf 0 events lost {2}telemt \S+ ready$/m);
  assert.match(screen, /^USERS by rate$/m);
  assert.match(screen, /^USER +CONNS +UP\/s +DOWN\/s +UP +DOWN$/m);
  assert.equal(order(screen)[0], 'alice', 'the busiest user first');
  // The simulator's one middle-proxy DC, with the coverage and availability telemt reports.
  assert.match(screen, /^DC +COVER +AVAIL +RTT +LOAD$/m);
  assert.match(screen, /^2 +\d+% +100% +1\.5ms +\d+$/m);
  const clients = await clientTotal(h);
  await pane.waitForScreen(`client ${clients} in the connections line`, (s) => new RegExp(`^conns client ${clients} {2}upstream_dc \\d+ {2}upstream_other 0 {2}rate up \\S+/s down \\S+/s \\(over 1 s\\)$`, 'm').test(s));
  assert.equal(await pane.format('#{alternate_on} #{cursor_flag}'), '1 0', 'on the alternate screen, cursor hidden');
  assert.match(await pane.screen(true), /\x1b\[/, 'colour and attributes on a terminal');

  // s cycles the sort column: rate, up/s, down/s, conns.
  await pane.press('s', 's', 's');
  screen = await pane.waitForScreen('sorted by connections: carol before alice and bob', (s) => /^USERS by conns$/m.test(s) && order(s)[0] === 'carol');
  // / filters as it is typed, Enter keeps it, Esc clears it.
  await pane.press('/', 'b', 'o');
  screen = await pane.waitForScreen('only bob while typing the filter', (s) => /^USERS by conns {2}filter: bo_$/m.test(s) && /^type to filter {2}Enter keep {2}Esc clear$/m.test(s));
  assert.deepEqual(tableRows(screen, 'USER').filter((l) => l.trim()).map((l) => l.split(/ +/)[0]), ['bob']);
  await pane.press('Enter');
  await pane.waitForScreen('the filter kept', (s) => /^USERS by conns {2}filter: bo$/m.test(s) && /^q quit/m.test(s));
  await pane.press('Escape');
  await pane.waitForScreen('the filter cleared: every user again', (s) => /^USERS by conns$/m.test(s) && ['alice', 'bob', 'carol'].every((u) => row(s, u)));

  // p: peers, with the role and user of their connections.
  await pane.press('p');
  screen = await pane.waitForScreen('peers by connections', (s) => /^PEERS by conns$/m.test(s) && /^127\.0\.0\.4 +client +carol +2 /m.test(s));
  assert.match(screen, /^PEER +ROLE +USER +CONNS +UP\/s +DOWN\/s +UP +DOWN$/m);
  assert.match(screen, /^127\.0\.0\.2 +client +alice +1 +\S+\/s /m);
  assert.match(screen, /^127\.0\.0\.3 +client +bob +1 +0B\/s +0B\/s +4\.1K +4\.0K$/m);

  // A reset shows as it happens, with its user and peer.
  traffic.carol2.resetAndDestroy();
  screen = await pane.waitForScreen('the reset of carol\'s second connection', (s) => /^EVENTS {2}stalls 0 {2}resets 1$/m.test(s) && /^\d\d:\d\d:\d\d reset {2}client carol 127\.0\.0\.4:\d+$/m.test(s));
  await pane.waitForScreen('carol down to one connection', (s) => /^127\.0\.0\.4 +client +carol +1 /m.test(s));
  // A stall too: a connection of bob's that sent its preamble and gets nothing back.
  await h.t.rewrite(h.yaml(10_000).replace('  drain_interval_ms: 10\n', '  drain_interval_ms: 10\n  stall_after_seconds: 1\n'));
  assert.equal(await h.post('/admin/reload'), 200);
  const bob = h.users.find((u) => u.name === 'bob')!;
  const quiet = (await telemtExchange({ host: '127.0.0.1', port: h.sim.proxyPort, secret: bob.secret, localAddress: '127.0.0.3', bytes: 0, keepOpen: true }))!;
  t.after(() => quiet.destroy());
  await h.telemt.pollNow();
  await pane.waitForScreen('the stall of bob\'s quiet connection', (s) => /^EVENTS {2}stalls 1 {2}resets 1$/m.test(s) && /^\d\d:\d\d:\d\d stall {2}client bob 127\.0\.0\.3:\d+$/m.test(s));

  // A narrow terminal: columns dropped, nothing wrapped; every line is one the view draws.
  await pane.press('u');
  await pane.resize(40, 40);
  screen = await pane.waitForScreen('the users table in 40 columns', (s) => /^USER +CONNS +UP\/s +DOWN\/s$/m.test(s) && /^alice +1 +\S+\/s +\S+\/s$/m.test(s));
  const drawn = [/^$/, /^mtlens top /, /^agent /, /^conns /, /^DC /, /^\d+ +\d+% /, /^USERS by /, /^USER /, /^(alice|bob|carol|~\w+) +\d+ /, /^EVENTS /, /^\d\d:\d\d:\d\d (reset|stall|telemt) /, /^q quit /];
  for (const line of screen.split('\n')) {
    assert.ok(line.length <= 40, `a line wider than the terminal: ${JSON.stringify(line)}`);
    assert.ok(drawn.some((re) => re.test(line)), `a line the view does not draw (a wrapped rest?): ${JSON.stringify(line)}\n${screen}`);
  }

  // q: exit status 0, the shell's screen and cursor back.
  await pane.press('q');
  await pane.waitForScreen('the shell after top', (s) => /^exit=0$/m.test(s));
  assert.equal(await pane.format('#{alternate_on} #{cursor_flag}'), '0 1', 'main screen, cursor shown');
});

test('mtlens top without colour (NO_COLOR, TERM=dumb) draws no escape sequences; Ctrl-C quits like q; --once prints one frame for a script', { timeout: 180_000 }, async (t) => {
  if (!kernelGate(t)) return;
  const h = await startFullAgent();
  t.after(() => h.cleanup());
  const traffic = await users(h);
  t.after(() => traffic.stop());
  const pane = await TmuxPane.start(100, 30, { NO_COLOR: '1' });
  t.after(() => pane.kill());
  await pane.typeLine(`${MTLENS} top --url ${h.url}; echo "exit=$?"`);
  await pane.waitForScreen('the users', (s) => ['alice', 'bob', 'carol'].every((u) => row(s, u)) && /^alice +1 +\d/m.test(s));
  const raw = await pane.screen(true);
  assert.doesNotMatch(raw, /\x1b/, 'no escape sequence on the screen');
  await pane.press('C-c');
  await pane.waitForScreen('the shell after top', (s) => /^exit=0$/m.test(s));
  assert.equal(await pane.format('#{alternate_on} #{cursor_flag}'), '0 1');
  // A dumb terminal: no colour either, and q as ever.
  await pane.typeLine(`clear; TERM=dumb NO_COLOR= ${MTLENS} top --url ${h.url}; echo "dumb=$?"`);
  await pane.waitForScreen('the users on a dumb terminal', (s) => ['alice', 'bob', 'carol'].every((u) => row(s, u)));
  assert.doesNotMatch(await pane.screen(true), /\x1b/, 'no escape sequence on a dumb terminal');
  await pane.press('q');
  await pane.waitForScreen('the shell after top', (s) => /^dumb=0$/m.test(s));

  // Not a terminal: one frame, plain, with rates over one window, then exit 0.
  const once = await runCli(['top', '--url', h.url, '--once']);
  assert.equal(once.code, 0, once.stderr);
  assert.doesNotMatch(once.stdout, /\x1b/);
  assert.match(once.stdout, /^mtlens top /);
  assert.match(once.stdout, /^alice +1 +\d+(\.\d)?[KM]\/s /m);
  assert.match(once.stdout, /^bob +1 +0B\/s +0B\/s +4\.1K +4\.0K$/m);
  assert.doesNotMatch(once.stdout, /^q quit/m);
});

test('mtlens top says clearly when the agent is not running (before touching the terminal) or an option is wrong', async (t) => {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const down = await runCli(['top', '--url', `http://127.0.0.1:${port}`]);
  assert.equal(down.code, 1);
  assert.equal(down.stderr, `mtlens top: cannot read the agent at http://127.0.0.1:${port}: connection refused (is the agent running?)\n`);
  assert.equal(down.stdout, '');
  const bad = await runCli(['top', '--url', `http://127.0.0.1:${port}`, '--limit', '0']);
  assert.deepEqual([bad.code, bad.stderr], [2, 'mtlens top: --limit takes an integer between 1 and 10000\n']);

  const pane = await TmuxPane.start(120, 24);
  t.after(() => pane.kill());
  await pane.typeLine(`${MTLENS} top --url http://127.0.0.1:${port}; echo "exit=$?"`);
  const screen = await pane.waitForScreen('the error and the exit status', (s) => /^exit=1$/m.test(s));
  assert.match(screen, /^mtlens top: cannot read the agent at http:\/\/127\.0\.0\.1:\d+: connection refused \(is the agent running\?\)$/m);
  assert.equal(await pane.format('#{alternate_on} #{cursor_flag}'), '0 1');
});

test('mtlens top says so when the agent stops answering while it runs, and still quits cleanly', async (t) => {
  const a = await buildAgent(BASE_CONFIG, { wire: productionWiring });
  let stopped = false;
  t.after(() => (stopped ? undefined : a.cleanup()));
  await a.agent.start();
  const pane = await TmuxPane.start(120, 30);
  t.after(() => pane.kill());
  await pane.typeLine(`${MTLENS} top --url ${a.url}; echo "exit=$?"`);
  // No eBPF and no telemt in this agent: those parts say so.
  const screen = await pane.waitForScreen('the view of an agent without collectors', (s) => /^USERS by rate$/m.test(s));
  assert.match(screen, /^agent ready {2}ebpf off: \S.* {2}telemt not watched$/m);
  assert.match(screen, /^DCs {3}telemt not watched$/m);
  await a.cleanup();
  stopped = true;
  await pane.waitForScreen('the agent gone', (s) => /^agent: cannot read http:\/\/127\.0\.0\.1:\d+: connection refused \(is the agent running\?\); showing the last good data$/m.test(s) && /^USERS by rate$/m.test(s));
  await pane.press('q');
  await pane.waitForScreen('the shell after top', (s) => /^exit=0$/m.test(s));
  assert.equal(await pane.format('#{alternate_on} #{cursor_flag}'), '0 1');
});
