// Discovery: listeners from telemt's config file, else from the sockets of the process named
// `telemt` in /proc; DC, middle-proxy and other upstream endpoints from the API.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { DIRECT_DC_ENDPOINTS } from '../src/telemt/discovery.js';
import { readTelemtConfig } from '../src/telemt/telemt-config.js';
import { parseListenTable } from '../src/runtime/procfs.js';
import { TelemtSim } from './fixtures/telemt-sim.js';
import { repoRoot, tempDir } from './helpers/agent.js';
import { withTelemt } from './helpers/telemt.js';

type DiscoveryBody = {
  telemt: { url: string; reachable: boolean; version: string; route_mode: string; listeners: Array<{ address: string; port: number }>; proxy_protocol: boolean | null; api_read_only: boolean | null };
  listeners_source: string;
  excluded_ports: number[];
  metrics: { url: string | null; source: string };
  notes: string[];
  dcs: Array<{ dc: number; endpoints: string[] }>;
  middle_proxy: { enabled: boolean; endpoints: string[] } | null;
  upstreams: Array<{ kind: string; address: string }>;
  users: string[];
  feed: { listenerPorts: number[]; telegramEndpoints: string[]; otherUpstreams: string[] };
};

describe('telemt discovery', () => {
  it('reads listeners from telemt.config_path and feeds the eBPF side with listeners, Telegram endpoints and other upstreams', async () => {
    const dir = await tempDir();
    const configPath = join(dir, 'telemt.toml');
    await withTelemt({ sim: { configPath, upstreams: [{ kind: 'socks5', address: '127.0.0.1:1080' }] }, telemtYaml: [`config_path: ${configPath}`] }, async (h) => {
      const d = await h.json<DiscoveryBody>('/status/discovery');
      assert.equal(d.listeners_source, 'config');
      assert.deepEqual(d.telemt.listeners, [{ address: '127.0.0.1', port: h.sim.proxyPort }]);
      assert.deepEqual(d.excluded_ports, [h.sim.apiPort]);
      assert.deepEqual([d.telemt.reachable, d.telemt.version, d.telemt.route_mode, d.telemt.proxy_protocol, d.telemt.api_read_only], [true, '3.4.25', 'middle', false, false]);
      assert.deepEqual(d.dcs, [{ dc: 2, endpoints: [h.sim.dcAddress] }]);
      assert.deepEqual(d.users, ['alice', 'bob', 'carol', 'dave']);
      assert.deepEqual(d.upstreams.map((u) => [u.kind, u.address]), [['direct', 'direct'], ['socks5', '127.0.0.1:1080']]);
      const last = h.discoveries.at(-1)!;
      assert.deepEqual(h.telemt.lastDiscovery, last);
      assert.deepEqual(d.feed.listenerPorts, last.listenerPorts);
      assert.deepEqual(last.listenerPorts, [h.sim.proxyPort]);
      assert.ok(last.telegramEndpoints.includes(h.sim.dcAddress));
      for (const e of DIRECT_DC_ENDPOINTS) assert.ok(last.telegramEndpoints.includes(e), e);
      assert.deepEqual(last.otherUpstreams, ['127.0.0.1:1080']);
      // Unchanged discovery is not sent again; a new upstream is.
      const sent = h.discoveries.length;
      await h.telemt.pollNow();
      assert.equal(h.discoveries.length, sent);
      h.sim.configure({ upstreams: [{ kind: 'socks5', address: '127.0.0.1:1080' }, { kind: 'shadowsocks', address: '[::1]:8388' }] });
      await h.telemt.pollNow();
      assert.deepEqual(h.discoveries.at(-1)!.otherUpstreams, ['127.0.0.1:1080', '[::1]:8388']);
      assert.ok(h.t.log.lines.some((l) => l.msg === 'telemt discovery changed'));
    });
  });

  it('parses telemt\'s TOML as telemt does: explicit listeners, API and metrics ports excluded, dc_overrides, mask host', () => {
    const facts = readTelemtConfig(`
[server]
port = 8443
metrics_listen = "0.0.0.0:9090"
proxy_protocol = false

[server.api]
listen = "127.0.0.1:9091"

[[server.listeners]]
ip = "0.0.0.0"

[[server.listeners]]
ip = "::"
port = 9443
proxy_protocol = true

[[server.listeners]]
ip = "127.0.0.1"
port = 9090

[censorship]
tls_domain = "example.com"
mask_host = "203.0.113.7"

[dc_overrides]
"2" = "149.154.167.99:443"
"203" = ["91.105.192.110:443"]
`);
    assert.deepEqual(facts.listeners, [
      { address: '0.0.0.0', port: 8443 },
      { address: '::', port: 9443 },
    ]);
    assert.deepEqual(facts.excludedPorts, [9091, 9090]);
    assert.equal(facts.proxyProtocol, true);
    assert.deepEqual(facts.dcOverrides, ['149.154.167.99:443', '91.105.192.110:443']);
    assert.equal(facts.maskEndpoint, '203.0.113.7:443');
    // Where this host reaches telemt's metrics: an all-interfaces address on loopback.
    assert.equal(facts.metricsEndpoint, '127.0.0.1:9090');
    assert.equal(readTelemtConfig('[server]\nmetrics_port = 9100\n').metricsEndpoint, '127.0.0.1:9100', 'metrics_port alone: telemt binds loopback');
    assert.equal(readTelemtConfig('[server]\nmetrics_port = 9100\nmetrics_listen = "[::]:9200"\n').metricsEndpoint, '[::1]:9200', 'metrics_listen wins');
    assert.equal(readTelemtConfig('[server]\nmetrics_listen = "10.0.0.5:9300"\n').metricsEndpoint, '10.0.0.5:9300');
    // telemt's defaults: port 443, both families, API on 9091.
    const defaults = readTelemtConfig('[general]\n');
    assert.equal(defaults.metricsEndpoint, undefined, 'telemt serves no metrics by default');
    assert.deepEqual(defaults.listeners, [
      { address: '0.0.0.0', port: 443 },
      { address: '::', port: 443 },
    ]);
    assert.deepEqual(defaults.excludedPorts, [9091]);
    assert.throws(() => readTelemtConfig('[server\nport = 1'), /line 1/i);
  });

  it('decodes LISTEN rows of /proc/net/tcp and tcp6', () => {
    const tcp = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 100 0 0 10 0`;
    assert.deepEqual([...parseListenTable(tcp)], [['12345', { address: '127.0.0.1', port: 8080 }]]);
    const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1 0000000000000000 100 0 0 10 0`;
    assert.deepEqual([...parseListenTable(tcp6)], [
      ['777', { address: '::1', port: 443 }],
      ['778', { address: '::', port: 80 }],
    ]);
  });

  it('falls back to the listening sockets of the real process named telemt when the config file is unreadable, minus its API and metrics ports', async () => {
    const dir = await tempDir();
    const telemtBinary = join(dir, 'telemt');
    await symlink(process.execPath, telemtBinary);
    // An external DC, so the simulator process listens only on its proxy and API ports.
    const dc: Server = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => dc.listen(0, '127.0.0.1', () => r()));
    // telemt's own config (as /v1/system/info reports it) has the metrics port; the agent's telemt.config_path is missing.
    const ownConfig = join(dir, 'own.toml');
    const args = [join(repoRoot, 'dist/test/fixtures/telemt-sim.js'), '--dc', `127.0.0.1:${(dc.address() as AddressInfo).port}`, '--config-out', ownConfig, '--metrics', '0'];
    const child: ChildProcess = spawn(telemtBinary, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
      const addrs = JSON.parse(line) as { proxy: string; api: string; metrics: string };
      const proxyPort = Number(addrs.proxy.split(':').at(-1));
      const apiPort = Number(new URL(addrs.api).port);
      const metricsPort = Number(addrs.metrics.split(':').at(-1));
      const sim = { apiUrl: addrs.api } as TelemtSim;
      await withTelemt({ reuseSim: sim, telemtYaml: [`config_path: ${join(dir, 'missing.toml')}`] }, async (h) => {
        const d = await h.json<DiscoveryBody>('/status/discovery');
        assert.equal(d.listeners_source, 'proc');
        // Other processes named telemt (other suites on this machine) may add listeners of their own.
        assert.ok(d.telemt.listeners.some((l) => l.address === '127.0.0.1' && l.port === proxyPort), JSON.stringify(d.telemt.listeners));
        assert.ok(!d.telemt.listeners.some((l) => l.port === apiPort), 'the API port is not a proxy listener');
        assert.ok(!d.telemt.listeners.some((l) => l.port === metricsPort), 'the metrics port is not a proxy listener');
        assert.deepEqual(d.excluded_ports, [apiPort, metricsPort]);
        assert.deepEqual(d.metrics, { url: `http://127.0.0.1:${metricsPort}/metrics`, source: 'discovered' }, "the metrics endpoint telemt's own config declares");
        assert.match(d.notes.join(' '), /missing\.toml: ENOENT/);
        assert.ok(h.discoveries.at(-1)!.listenerPorts.includes(proxyPort));
      });
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      await new Promise<void>((r) => dc.close(() => r()));
    }
  });

  it('finds telemt\'s listeners in its own network namespace (a container), minus the API and metrics ports of its own config', async () => {
    const proc = await tempDir();
    const pid = join(proc, '4242');
    await mkdir(join(pid, 'fd'), { recursive: true });
    await mkdir(join(pid, 'net'));
    await mkdir(join(pid, 'root', 'etc', 'telemt'), { recursive: true });
    await mkdir(join(proc, 'net'));
    await writeFile(join(pid, 'comm'), 'telemt\n');
    const header = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
    const row = (addr: string, port: number, inode: number) =>
      `   0: ${addr}:${port.toString(16).toUpperCase().padStart(4, '0')} ${'0'.repeat(addr.length)}:0000 0A 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 100 0 0 10 0\n`;
    const any4 = '00000000';
    const any6 = '0'.repeat(32);
    // telemt's namespace: the proxy on 8443 (both families), its API on 9091, its metrics on 9090 (loopback).
    await writeFile(join(pid, 'net', 'tcp'), header + row(any4, 8443, 9001) + row(any4, 9091, 9003) + row('0100007F', 9090, 9004));
    await writeFile(join(pid, 'net', 'tcp6'), header + row(any6, 8443, 9002) + row('00000000000000000000000001000000', 9090, 9005));
    // The agent's namespace has none of them.
    await writeFile(join(proc, 'net', 'tcp'), header);
    for (const [fd, inode] of [[3, 9001], [4, 9002], [5, 9003], [6, 9004], [7, 9005]] as const) await symlink(`socket:[${inode}]`, join(pid, 'fd', String(fd)));
    await symlink('/dev/null', join(pid, 'fd', '8'));
    // The simulator's /v1/system/info says telemt reads /etc/telemt/telemt.toml (inside the container).
    await writeFile(join(pid, 'root', 'etc', 'telemt', 'telemt.toml'), '[server]\nport = 8443\nmetrics_port = 9090\n\n[server.api]\nlisten = "0.0.0.0:9091"\n');
    await withTelemt({ procRoot: proc }, async (h) => {
      const d = await h.json<DiscoveryBody>('/status/discovery');
      assert.equal(d.listeners_source, 'proc', d.notes.join(' | '));
      assert.deepEqual(d.telemt.listeners, [
        { address: '0.0.0.0', port: 8443 },
        { address: '::', port: 8443 },
      ]);
      assert.deepEqual(d.excluded_ports, [h.sim.apiPort, 9091, 9090]);
      assert.deepEqual(h.discoveries.at(-1)!.listenerPorts, [8443]);
      // Without telemt's own config file the metrics port cannot be told from a proxy listener: said so.
      await rm(join(pid, 'root'), { recursive: true });
      await h.telemt.pollNow();
      const after = await h.json<DiscoveryBody>('/status/discovery');
      assert.match(after.notes.join(' | '), /telemt's own config .*4242\/root\/etc\/telemt\/telemt\.toml: ENOENT; its metrics port is not excluded/);
    });
  });

  it('reports none, with the reason, when neither the config file nor a telemt process is there', async () => {
    const proc = await tempDir();
    await writeFile(join(proc, 'placeholder'), '');
    await withTelemt({ procRoot: proc }, async (h) => {
      const d = await h.json<DiscoveryBody>('/status/discovery');
      assert.equal(d.listeners_source, 'none');
      assert.deepEqual(d.telemt.listeners, []);
      assert.match(d.notes.join(' | '), /ENOENT.*\| no listening socket of a process named "telemt"/);
    });
  });
});
