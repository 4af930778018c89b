// Discovery: listeners from telemt's config file, else from the sockets of the process named
// `telemt` in /proc; DC, middle-proxy and other upstream endpoints from the API.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { symlink, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { DIRECT_DC_ENDPOINTS } from '../src/telemt/discovery.js';
import { readTelemtConfig } from '../src/telemt/telemt-config.js';
import { parseListenTable } from '../src/telemt/proc-listeners.js';
import { TelemtSim } from './fixtures/telemt-sim.js';
import { repoRoot, tempDir } from './helpers/agent.js';
import { withTelemt } from './helpers/telemt.js';

type DiscoveryBody = {
  telemt: { url: string; reachable: boolean; version: string; route_mode: string; listeners: Array<{ address: string; port: number }>; proxy_protocol: boolean | null; api_read_only: boolean | null };
  listeners_source: string;
  excluded_ports: number[];
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
    // telemt's defaults: port 443, both families, API on 9091.
    const defaults = readTelemtConfig('[general]\n');
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

  it('falls back to the listening sockets of the real process named telemt when the config file is unreadable', async () => {
    const dir = await tempDir();
    const telemtBinary = join(dir, 'telemt');
    await symlink(process.execPath, telemtBinary);
    // An external DC, so the simulator process listens only on its proxy and API ports.
    const dc: Server = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => dc.listen(0, '127.0.0.1', () => r()));
    const child: ChildProcess = spawn(telemtBinary, [join(repoRoot, 'dist/test/fixtures/telemt-sim.js'), '--dc', `127.0.0.1:${(dc.address() as AddressInfo).port}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
      const addrs = JSON.parse(line) as { proxy: string; api: string };
      const proxyPort = Number(addrs.proxy.split(':').at(-1));
      const apiPort = Number(new URL(addrs.api).port);
      const sim = { apiUrl: addrs.api } as TelemtSim;
      await withTelemt({ reuseSim: sim, telemtYaml: [`config_path: ${join(dir, 'missing.toml')}`] }, async (h) => {
        const d = await h.json<DiscoveryBody>('/status/discovery');
        assert.equal(d.listeners_source, 'proc');
        // Other processes named telemt (other suites on this machine) may add listeners of their own.
        assert.ok(d.telemt.listeners.some((l) => l.address === '127.0.0.1' && l.port === proxyPort), JSON.stringify(d.telemt.listeners));
        assert.ok(!d.telemt.listeners.some((l) => l.port === apiPort), 'the API port is not a proxy listener');
        assert.deepEqual(d.excluded_ports, [apiPort]);
        assert.match(d.notes.join(' '), /missing\.toml: ENOENT/);
        assert.ok(h.discoveries.at(-1)!.listenerPorts.includes(proxyPort));
      });
    } finally {
      child.kill('SIGTERM');
      await once(child, 'exit');
      await new Promise<void>((r) => dc.close(() => r()));
    }
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
