// The house rules: imports follow the data. `make test` runs these (`make deps-check`); a
// violation fails with the rule's name and the offending import. README's architecture section
// says which rule guards what. No exceptions list: a rule that is wrong gets changed here.
//
// Layers, lowest first (a module imports its own layer or lower ones):
//   config/, model/   the floor: settings and the shared vocabulary; they import nothing of ours
//   runtime/          the component contract and its context, collected metrics, procfs, logging
//   ebpf/, telemt/    collectors, independent of each other
//   pipeline/         bounded queues, batching, retry
//   export/, core/    sinks: Prometheus, OTLP, SSE; the Core node protocol
//   api/              the control API; reads components through interfaces and status contracts
//   top/              the operator's terminal view (`mtlens top`): a client of the control API
//   src/*.ts          the host: builds, wires and runs everything
const OWN_OR_FLOOR = ['^src/(config|model|runtime)/'];

/** A rule forbidding `from` to import anything of ours outside its own folder and `allowed`. */
function onlyBelow(name, comment, from, allowed) {
  return {
    name,
    comment,
    severity: 'error',
    from: { path: `^src/(${from})/` },
    to: { path: '^src/', pathNot: ['^src/$1/', ...allowed] },
  };
}

module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      comment: 'A cycle makes two modules one; split what both need into the lower one.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'floor-imports-nothing',
      comment: 'config/ and model/ are the floor: settings and vocabulary every layer shares, so they import nothing of ours.',
      severity: 'error',
      from: { path: '^src/(config|model)/' },
      to: { path: '^src/', pathNot: ['^src/$1/'] },
    },
    onlyBelow('runtime-on-the-floor', 'runtime/ (component contract, collected metrics, procfs, logging) stands on config/ and model/ only.', 'runtime', ['^src/(config|model)/']),
    onlyBelow(
      'collectors-independent',
      'A collector (ebpf/, telemt/) uses the floor and runtime/ only: never another collector, a sink, the API or the host. Collectors meet through model/ interfaces, connected in wiring.ts.',
      'ebpf|telemt',
      OWN_OR_FLOOR,
    ),
    onlyBelow('pipeline-below-sinks', 'pipeline/ is generic machinery: queues, batching, retry; it knows no collector and no sink.', 'pipeline', OWN_OR_FLOOR),
    onlyBelow(
      'sinks-read-the-model',
      'A sink (export/, core/) receives events and usage through model/ interfaces and may use pipeline/; it never reaches into a collector, another sink, the API or the host.',
      'export|core',
      [...OWN_OR_FLOOR, '^src/pipeline/'],
    ),
    {
      name: 'api-reads-interfaces',
      comment: 'api/ reads components through interfaces and their status contracts (a status.ts beside each component), never their classes.',
      severity: 'error',
      from: { path: '^src/api/' },
      to: { path: '^src/', pathNot: ['^src/api/', ...OWN_OR_FLOOR, '^src/(ebpf|telemt|core)/status\\.ts$', '^src/export/otlp/status\\.ts$'] },
    },
    {
      name: 'terminal-view-is-a-client',
      comment: "top/ (`mtlens top`) is a client of the control API: it reads the agent's answers typed by the status contracts and the model's vocabulary, never a component, the API server or the host (the host hands it the transport).",
      severity: 'error',
      from: { path: '^src/top/' },
      to: { path: '^src/', pathNot: ['^src/top/', '^src/model/', '^src/(ebpf|telemt|core)/status\\.ts$', '^src/export/otlp/status\\.ts$'] },
    },
    {
      name: 'status-contracts-are-leaves',
      comment: 'A status.ts is a contract the API shows: zod schemas and types over model/ vocabulary, nothing of the component behind it.',
      severity: 'error',
      from: { path: '/status\\.ts$', pathNot: '^src/api/' },
      to: { path: '^src/', pathNot: ['^src/model/'] },
    },
    {
      name: 'only-the-host-builds',
      comment: 'agent.ts, wiring.ts and cli.ts build and run everything; nothing inside a folder imports them.',
      severity: 'error',
      from: { path: '^src/[^/]+/' },
      to: { path: '^src/[^/]+\\.ts$' },
    },
    {
      name: 'src-stands-alone',
      comment: 'Product code never imports tests, benchmarks or scripts.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench|scripts)/' },
    },
    {
      name: 'no-dev-dependencies-in-src',
      comment: 'A release ships production dependencies only.',
      severity: 'error',
      from: { path: '^src/' },
      to: { dependencyTypes: ['npm-dev'] },
    },
    {
      name: 'no-dead-modules',
      comment: 'Every module is reachable from the CLI, the one entry point; one that is not is dead code.',
      severity: 'error',
      from: { path: '^src/cli\\.ts$' },
      to: { path: '^src/', reachable: false },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
