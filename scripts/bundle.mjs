// Bundles the compiled CLI (dist/src/cli/main.js) and the packages it uses
// into one CommonJS file, dist/kiln.cjs, that bin/kiln.js compiles with a V8
// code cache: loading ~116 ES modules one by one costs most of a fully
// cached build's time; one script with its code cached costs a fraction.
// Run after tsc (`npm run build`); fails on any esbuild error or warning.
import { readFileSync, realpathSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outfile = path.join(root, 'dist', 'kiln.cjs');

// Packages left in node_modules and require()d at run time: native addons
// (lmdb, fs-xattr, msgpackr-extract) and packages that read files relative
// to themselves (pino's worker threads, grpc-js and proto-loader reading
// protobufjs's .proto files). lmdb and pino are already loaded through
// createRequire(import.meta.url), which esbuild leaves alone. undici is
// large and loaded only for registries with their own TLS settings.
const EXTERNAL = ['fs-xattr', 'msgpackr-extract', 'node-gyp-build-optional-packages', '@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs', 'pino', 'undici'];

// lmdb's JavaScript (its CommonJS build, msgpackr, ordered-binary,
// weak-lru-cache: ~8,000 lines that node would compile on every start, with
// no code cache for node_modules before Node 22) is bundled, so it is in
// the code cache with the rest. Only its native addon stays outside: lmdb
// finds it from its own file's path, which is given back to it here, and
// node-gyp-build-optional-packages (external) loads it.
const LMDB_CJS = path.join(root, 'node_modules', 'lmdb', 'dist', 'index.cjs');
/** Where that file is in lmdb's package (what node's require.resolve('lmdb') gives, under the package's folder). */
const LMDB_IN_PACKAGE = 'dist/index.cjs';
if (createRequire(import.meta.url).resolve('lmdb') !== realpathSync(LMDB_CJS)) fail([{ text: `require.resolve('lmdb') is no longer ${LMDB_CJS}: update LMDB_CJS and LMDB_IN_PACKAGE` }]);
const lmdbInBundle = {
  name: 'lmdb-in-bundle',
  setup(b) {
    // src/store/store.ts requires lmdb through createRequire, which esbuild leaves alone.
    b.onLoad({ filter: /[\\/]dist[\\/]src[\\/]store[\\/]store\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      const replaced = text.replace("createRequire(import.meta.url)('lmdb')", "require('lmdb')");
      if (replaced === text) throw new Error(`${args.path}: no createRequire(import.meta.url)('lmdb') to bundle`);
      return { contents: replaced, loader: 'js' };
    });
    b.onResolve({ filter: /^lmdb$/ }, () => ({ path: LMDB_CJS }));
    b.onLoad({ filter: /[\\/]node_modules[\\/]lmdb[\\/]dist[\\/]index\.cjs$/ }, (args) => ({
      // Its own path, as node would have given it: where it looks for its addon and its dictionary.
      // (Found by the banner's helper: esbuild refuses require.resolve of a package it bundles.)
      contents: `var __filename = __kiln_package_file('lmdb', ${JSON.stringify(LMDB_IN_PACKAGE)});\n${readFileSync(args.path, 'utf8')}`,
      loader: 'js',
    }));
  },
};

const result = await build({
  entryPoints: [path.join(root, 'dist', 'src', 'cli', 'main.js')],
  outfile,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  external: EXTERNAL,
  plugins: [lmdbInBundle],
  // Readable `--debug` stacks; the map leads back to the TypeScript sources.
  minify: false,
  keepNames: true,
  sourcemap: 'linked',
  // import.meta.url keeps meaning "this file": createRequire() resolves lmdb
  // and pino from it, the containerd client finds its .proto files from it.
  // The banner comes first in the file, so it repeats esbuild's "use strict"
  // (the ES modules were strict code; a directive after a statement is not one).
  //
  // __kiln_package_file(id, file): `file` of package `id`, looked for first
  // where node's search starts for this package, the node_modules beside
  // dist/: require.resolve of a package with an "exports" map loads node's
  // ES module resolver, which cost every start ~1.5 ms. Elsewhere (kiln
  // installed with its dependencies hoisted), node resolves it. Its real
  // path, as node gives it: lmdb finds its addon package from there (under
  // pnpm, a sibling of the real folder, not of the link).
  banner: {
    js: [
      '"use strict";',
      'const __kiln_import_meta_url = require("node:url").pathToFileURL(__filename).href;',
      'const __kiln_package_file = (id, file) => {',
      '  try {',
      '    return require("node:fs").realpathSync(require("node:path").join(__dirname, "..", "node_modules", id, file));',
      '  } catch {',
      '    return require.resolve(id);',
      '  }',
      '};',
    ].join('\n'),
  },
  define: { 'import.meta.url': '__kiln_import_meta_url' },
  // A vm.Script has no module loader of its own, so import() of an external
  // package (fs-xattr) becomes require(), which loads ES modules on Node >= 20.19.
  supported: { 'dynamic-import': false },
  // bin/kiln.js decodes the bundle as latin1, which is exact only for ASCII.
  charset: 'ascii',
  logLevel: 'silent',
}).catch((err) => {
  // esbuild's error lists every message; make them the build's failure.
  fail(err.errors ?? [], err);
});
if (result.warnings.length > 0) fail(result.warnings);

// The safety net of the rule above: a dynamic import() of a package would
// only fail at run time, on the path that reaches it.
const bundled = readFileSync(outfile, 'utf8');
const nonAscii = /[^\x00-\x7f]/.exec(bundled);
if (nonAscii !== null) {
  fail([{ text: `dist/kiln.cjs has a non-ASCII character at offset ${nonAscii.index}; bin/kiln.js reads it as latin1` }]);
}
const dynamicImport = /\bimport\(\s*["'`]/.exec(bundled);
if (dynamicImport !== null) {
  fail([{ text: `dist/kiln.cjs has a dynamic import() at offset ${dynamicImport.index}; it must be a require()` }]);
}

/**
 * Prints esbuild's messages (or a plain one), removes the bundle, so that
 * bin/kiln.js runs the ES modules rather than an old or broken bundle, and
 * exits non-zero.
 */
function fail(messages, cause) {
  console.error(`scripts/bundle.mjs: bundling dist/src/cli/main.js into dist/kiln.cjs failed`);
  for (const m of messages) {
    const where = m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ` : '';
    console.error(`  ${where}${m.text}`);
  }
  if (messages.length === 0 && cause !== undefined) console.error(cause);
  rmSync(outfile, { force: true });
  rmSync(`${outfile}.map`, { force: true });
  process.exit(1);
}
