import { arch, hostname, platform, release } from 'node:os';

const GO_ARCH: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm' };

export function hostInfo() {
  return { name: hostname(), os: platform(), arch: GO_ARCH[arch()] ?? arch(), kernel: release() };
}

/** Durations the way operators read them in Go tools: `24h15m30s`, `5m0s`, `42s`. */
export function formatDuration(totalSeconds: number): string {
  const s = Math.max(0, Math.floor(totalSeconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (h > 0) return `${h}h${m}m${sec}s`;
  if (m > 0) return `${m}m${sec}s`;
  return `${sec}s`;
}
