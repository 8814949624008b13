// The layering of src/ (docs/architecture.md, "Folders and their imports"),
// checked on every `npm run lint`. Each folder lists the folders it may
// import; everything else is forbidden, type-only imports included. The
// files directly in src/ (errors, digest, log, owner, bytes) are the base
// every folder may use; src/index.ts is the public API and may use all.
const BASE = [];
const MAY_IMPORT = {
  llb: [],
  progress: [],
  store: [],
  solver: ['progress'],
  fs: [],
  snapshot: ['store', 'fs'],
  cache: ['store', 'snapshot', 'fs'],
  content: ['store', 'snapshot', 'fs', 'cache'],
  executor: ['snapshot', 'fs', 'llb'],
  network: [],
  history: ['store', 'progress'],
  source: ['store', 'snapshot', 'fs', 'cache', 'content', 'llb', 'progress'],
  worker: ['cache', 'executor', 'network', 'snapshot', 'llb'],
  exporter: ['store', 'snapshot', 'fs', 'cache', 'content', 'llb', 'progress'],
  ops: ['store', 'snapshot', 'fs', 'cache', 'content', 'executor', 'network', 'source', 'worker', 'llb', 'solver', 'progress'],
  client: ['store', 'snapshot', 'fs', 'cache', 'content', 'executor', 'network', 'source', 'worker', 'exporter', 'ops', 'history', 'llb', 'solver', 'progress'],
  cli: ['store', 'snapshot', 'fs', 'cache', 'content', 'executor', 'network', 'source', 'worker', 'exporter', 'ops', 'history', 'client', 'llb', 'solver', 'progress'],
};
const FOLDERS = Object.keys(MAY_IMPORT);

module.exports = {
  forbidden: [
    ...FOLDERS.map((folder) => {
      const others = FOLDERS.filter((f) => f !== folder && !MAY_IMPORT[folder].includes(f) && !BASE.includes(f));
      return {
        name: `layering-${folder}`,
        comment: `src/${folder} may import only ${MAY_IMPORT[folder].join(', ') || 'the base files'} (see docs/architecture.md)`,
        severity: 'error',
        from: { path: `^src/${folder}/` },
        to: { path: `^src/(${others.join('|')})/` },
      };
    }),
    {
      name: 'base-imports-no-folder',
      comment: 'the base files in src/ import no folder of src/',
      severity: 'error',
      from: { path: '^src/[^/]+\\.ts$', pathNot: '^src/index\\.ts$' },
      to: { path: '^src/[^/]+/' },
    },
    {
      name: 'no-circular',
      comment: 'no import cycles between files',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'src-imports-no-tests',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
