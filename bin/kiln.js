#!/usr/bin/env node
// The kiln command. The implementation is compiled TypeScript in dist/,
// bundled into one CommonJS file, dist/kiln.cjs (scripts/bundle.mjs), which
// this loader compiles with a V8 code cache: loading ~116 ES modules one by
// one cost a fully cached build more than its own work. Without the bundle
// (or with one older than the modules), or with KILN_NO_BUNDLE=1, it runs the
// ES modules, dist/src/cli/main.js.
//
// This file is CommonJS (bin/package.json says so): an ES module entry point
// makes node set up its ES module loader before the first line runs, which
// cost every start a few per cent of a cached build.
'use strict';
const { readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const bundlePath = path.join(__dirname, '..', 'dist', 'kiln.cjs');
const mainPath = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
const bundle = process.env.KILN_NO_BUNDLE === '1' ? undefined : readBundle();
// (A failure to load the modules is an unhandled rejection: node prints it and exits 1.)
if (bundle === undefined) import('../dist/src/cli/main.js');
else runBundle(bundle);

/**
 * The bundle's bytes, or undefined when it was not built, or is older than
 * the modules: a plain `tsc` rewrites every one of them and leaves the
 * bundle as it was, and the CLI must run the code just compiled.
 */
function readBundle() {
  const stat = statSync(bundlePath, { throwIfNoEntry: false, bigint: true });
  if (stat === undefined || stat.mtimeMs < (statSync(mainPath, { throwIfNoEntry: false, bigint: true })?.mtimeMs ?? 0n)) return undefined;
  return { bytes: readFileSync(bundlePath), id: `${stat.size.toString(16)}-${stat.mtimeNs.toString(16)}` };
}

/** Compiles the bundle, with the code cached for this build of it if there is one, and runs it as a CommonJS module. */
function runBundle({ bytes, id }) {
  const dir = path.dirname(bundlePath);
  // V8 checks only the source's length before it uses cached code, so the
  // file is named for this build of the bundle: its size and its mtime in
  // nanoseconds, which every rebuild changes, so a rebuilt bundle of the
  // same length never runs the old one's code. (Hashing the 1.5 MB instead
  // cost every start a few milliseconds.)
  const cacheName = `.kiln.cjs.${id}.v8cache`;
  const cachedData = readCache(path.join(dir, cacheName));
  // The bundle is ASCII (scripts/bundle.mjs checks), so latin1 decodes it
  // exactly, and faster than utf8 into a one-byte string.
  const script = new vm.Script(Module.wrap(bytes.toString('latin1')), {
    filename: bundlePath,
    ...(cachedData === undefined ? {} : { cachedData }),
    // The bundle has no import() (scripts/bundle.mjs checks); should one
    // appear, it loads as in any module instead of failing.
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  if (process.env.KILN_V8CACHE_DEBUG === '1') {
    process.stderr.write(`v8cache: ${cachedData === undefined ? 'miss' : script.cachedDataRejected ? 'rejected' : 'hit'}\n`);
  }
  if (cachedData === undefined || script.cachedDataRejected) {
    // At exit, so the cache holds the functions this run compiled, not only
    // the top level.
    process.on('exit', () => writeCache(dir, cacheName, script));
  }
  const module = { exports: {} };
  script.runInThisContext().call(module.exports, module.exports, Module.createRequire(bundlePath), module, bundlePath, dir);
}

/** The cached code, or undefined when there is none or it cannot be read. */
function readCache(cachePath) {
  try {
    return readFileSync(cachePath);
  } catch {
    return undefined;
  }
}

/**
 * Writes the code cache through a temp file and a rename, so a concurrent
 * kiln never reads half of one, then removes those of other bundles. Any
 * failure (a read-only install, a full disk) only means no cache. There is
 * no fallback directory: code in a shared one such as /tmp could be planted
 * there for kiln, often root, to run.
 */
function writeCache(dir, cacheName, script) {
  const temp = path.join(dir, `${cacheName}.${process.pid}.tmp`);
  try {
    writeFileSync(temp, script.createCachedData());
    renameSync(temp, path.join(dir, cacheName));
    for (const name of readdirSync(dir)) {
      if (name !== cacheName && /^\.kiln\.cjs\.[0-9a-f]+-[0-9a-f]+\.v8cache$|^\.kiln\.cjs\.[0-9a-f]{16}\.v8cache$/.test(name)) rmSync(path.join(dir, name), { force: true });
    }
  } catch {
    try {
      rmSync(temp, { force: true });
    } catch {
      // Nothing more to undo, and an exit handler must not throw.
    }
  }
}
