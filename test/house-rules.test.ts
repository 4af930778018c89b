// The dependency rules (.dependency-cruiser.cjs) hold on the real tree, and each one fires, by
// name and naming the offending import, on a small tree that breaks it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { repoRoot, tempDir } from './helpers/agent.js';

const CONFIG = join(repoRoot, '.dependency-cruiser.cjs');
const DEPCRUISE = join(repoRoot, 'node_modules', '.bin', 'depcruise');

function cruise(cwd: string): { status: number | null; output: string } {
  const r = spawnSync(DEPCRUISE, ['src', '--config', CONFIG, '--output-type', 'err'], { cwd, encoding: 'utf8' });
  assert.equal(r.error, undefined);
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('the tree follows the house rules', () => {
  const r = cruise(repoRoot);
  assert.equal(r.status, 0, r.output);
  assert.match(r.output, /no dependency violations found/);
});

/** Each file of the broken tree and the rule its import breaks (none: the file is only imported). */
const BROKEN: Record<string, { source: string; breaks?: string; import?: string }> = {
  'src/cli.ts': { source: "import './agent.js';\nimport './wiring.js';\nimport './ebpf/component.js';\nimport './telemt/component.js';\nimport './api/routes/status.js';\nimport './pipeline/queue.js';\nimport './export/sink.js';\nimport './core/node.js';\nimport './runtime/context.js';\nimport './config/schema.js';\nimport './model/events.js';\nimport './ebpf/status.js';\nimport './api/a.js';\nimport './top/view.js';\n" },
  'src/agent.ts': { source: 'export const agent = 1;\n' },
  'src/wiring.ts': { source: 'export const wiring = 1;\n' },
  'src/config/schema.ts': { source: "import { x } from '../runtime/context.js';\nexport const schema = x;\n", breaks: 'floor-imports-nothing', import: 'src/runtime/context.ts' },
  'src/model/events.ts': { source: "import { schema } from '../config/schema.js';\nexport const events = schema;\n", breaks: 'floor-imports-nothing', import: 'src/config/schema.ts' },
  'src/runtime/context.ts': { source: "import { q } from '../pipeline/queue.js';\nexport const x = q;\n", breaks: 'runtime-on-the-floor', import: 'src/pipeline/queue.ts' },
  'src/ebpf/component.ts': { source: "import { users } from '../telemt/component.js';\nexport const ebpf = users;\n", breaks: 'collectors-independent', import: 'src/telemt/component.ts' },
  'src/telemt/component.ts': { source: "import { sink } from '../export/sink.js';\nexport const users = sink;\n", breaks: 'collectors-independent', import: 'src/export/sink.ts' },
  'src/pipeline/queue.ts': { source: "import { core } from '../core/node.js';\nexport const q = core;\n", breaks: 'pipeline-below-sinks', import: 'src/core/node.ts' },
  'src/export/sink.ts': { source: "import { ebpf } from '../ebpf/component.js';\nexport const sink = ebpf;\n", breaks: 'sinks-read-the-model', import: 'src/ebpf/component.ts' },
  'src/core/node.ts': { source: "import { agent } from '../agent.js';\nexport const core = agent;\n", breaks: 'only-the-host-builds', import: 'src/agent.ts' },
  'src/api/routes/status.ts': { source: "import { ebpf } from '../../ebpf/component.js';\nexport const status = ebpf;\n", breaks: 'api-reads-interfaces', import: 'src/ebpf/component.ts' },
  'src/ebpf/status.ts': { source: "import { ebpf } from './component.js';\nexport const contract = ebpf;\n", breaks: 'status-contracts-are-leaves', import: 'src/ebpf/component.ts' },
  'src/top/view.ts': { source: "import { ebpf } from '../ebpf/component.js';\nexport const view = ebpf;\n", breaks: 'terminal-view-is-a-client', import: 'src/ebpf/component.ts' },
  'src/api/a.ts': { source: "import { b } from './b.js';\nexport const a = b;\n", breaks: 'no-cycles', import: 'src/api/b.ts' },
  'src/api/b.ts': { source: "import { a } from './a.js';\nexport const b = a;\n" },
  'src/api/forgotten.ts': { source: "import ts from 'typescript';\nimport { t } from '../../test/x.js';\nexport const forgotten = [ts, t];\n" },
  'test/x.ts': { source: 'export const t = 1;\n' },
};

test('each rule fires on an import that breaks it, naming the rule and the import', async () => {
  const dir = await tempDir('mtlens-house-');
  for (const [path, { source }] of Object.entries(BROKEN)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), source);
  }
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true }, include: ['src', 'test'] }));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'broken', type: 'module', devDependencies: { typescript: '*' } }));
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
  const r = cruise(dir);
  assert.notEqual(r.status, 0, 'a broken tree fails');
  for (const [path, { breaks, import: target }] of Object.entries(BROKEN)) {
    if (!breaks) continue;
    const line = new RegExp(`error ${breaks}: ${path.replace(/[./]/g, '\\$&')}${target ? ` →\\s*${target.replace(/[./]/g, '\\$&')}` : ''}`);
    assert.match(r.output, line, `${path} breaks ${breaks}\n${r.output}`);
  }
  assert.match(r.output, /error no-dead-modules: src\/api\/forgotten\.ts/);
  assert.match(r.output, /error src-stands-alone: src\/api\/forgotten\.ts → test\/x\.ts/);
  assert.match(r.output, /error no-dev-dependencies-in-src: src\/api\/forgotten\.ts → .*typescript/);
});
