/**
 * The copy action of a file op on trees of many small files and on a
 * rootfs-sized tree: kiln's `copy` (src/ops/file/copy.ts, in this process,
 * as the file op calls it) against `cp -a` of the same tree on the same
 * filesystem, alternated turn by turn. Target: kiln <= 1.2x `cp -a`.
 *
 * Trees (generated from a fixed seed):
 * - small-5k: 5,000 files of 50 B to 4 KB in 50 folders of 100;
 * - small-100k: 100,000 such files in 1,000 folders of 100 (`--quick` leaves it out);
 * - rootfs: about 9,400 entries and 364 MB, like a Debian rootfs with a
 *   compiler: file sizes log-uniform from 20 B to 4 MB plus a few of 20 MB,
 *   one in 8 entries a symlink, a few hard links, setuid files and xattrs.
 */
import { createCipheriv } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { link, mkdir, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setAttribute } from 'fs-xattr';
import { copy } from '../src/ops/file/copy.js';
import type { CopyAction } from '../src/llb/types.js';
import { median, megabytes, mulberry32, printContext, printFigure, printHeader, printReproduce, sum, tempDir } from './harness.js';

const TURNS = 5;
const TARGET_RATIO = 1.2;

/** Incompressible bytes from a seeded stream cipher (fast, and the same every run). */
function bytesOf(size: number, seed: number): Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt32LE(seed);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** `files` small files in folders of 100; returns their bytes. */
async function smallFiles(dir: string, files: number): Promise<number> {
  const random = mulberry32(5);
  let total = 0;
  for (let d = 0; d * 100 < files; d++) {
    const folder = path.join(dir, `pkg-${d}`, 'lib');
    await mkdir(folder, { recursive: true });
    await Promise.all(
      Array.from({ length: Math.min(100, files - d * 100) }, (_, f) => {
        const size = Math.floor(Math.exp(Math.log(50) + random() * Math.log(80)));
        total += size;
        return writeFile(path.join(folder, `file-${f}.js`), bytesOf(size, d * 100 + f));
      }),
    );
  }
  return total;
}

const ROOTFS_FILES = 8_000;
const ROOTFS_BYTES = 364 * 1000 * 1000;

/** A rootfs-like tree (see the module comment); returns its bytes. */
async function rootfs(dir: string): Promise<number> {
  const random = mulberry32(11);
  const big = 6;
  const bigBytes = 20 * 1000 * 1000;
  const weights = Array.from({ length: ROOTFS_FILES - big }, () => Math.exp(Math.log(20) + random() * Math.log(200_000)));
  const scale = (ROOTFS_BYTES - big * bigBytes) / sum(weights);
  const tops = ['usr/bin', 'usr/lib/x86_64-linux-gnu', 'usr/share/doc', 'usr/share/locale', 'usr/include', 'etc', 'var/lib/dpkg/info', 'usr/lib/gcc/x86_64-linux-gnu/12'];
  let total = 0;
  const paths: string[] = [];
  for (let i = 0; i < ROOTFS_FILES; i++) {
    const top = tops[i % tops.length]!;
    const folder = path.join(dir, top, i % 3 === 0 ? '' : `sub-${i % 37}`);
    await mkdir(folder, { recursive: true });
    const size = i < big ? bigBytes : Math.max(1, Math.floor(weights[i - big]! * scale));
    const file = path.join(folder, `f-${i}`);
    await writeFile(file, bytesOf(size, i));
    total += size;
    paths.push(file);
    if (i % 8 === 0) await symlink(`f-${i}`, path.join(folder, `l-${i}`));
    if (i % 500 === 0) await link(file, path.join(folder, `h-${i}`));
    if (i % 700 === 0) await chmod(file, 0o4755);
    if (i % 300 === 0) await setAttribute(file, 'user.bench', `value ${i}`);
  }
  return total;
}

/** Seconds `cp -a SRC DEST` takes, as a process. */
function timeCp(src: string, dest: string): number {
  const started = performance.now();
  const child = spawnSync('cp', ['-a', '--', src, dest], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (child.status !== 0) throw new Error(`cp -a exited with ${child.status ?? child.signal}`);
  return (performance.now() - started) / 1000;
}

/** Seconds kiln's copy of the whole source root into `/out` of an empty target takes (with a pattern: entry by entry). */
async function timeKiln(source: string, target: string, withPattern = false): Promise<number> {
  await mkdir(target);
  const action: CopyAction = {
    src: '/',
    dest: '/out',
    followSymlink: false,
    dirCopyContents: true,
    createDestPath: true,
    allowWildcard: false,
    allowEmptyWildcard: false,
    alwaysReplaceExistingDestPaths: false,
    includePatterns: [],
    // A pattern that excludes nothing still makes the copy go entry by entry, not to cp -a whole.
    excludePatterns: withPattern ? ['kiln-bench-excludes-nothing'] : [],
  };
  const started = performance.now();
  await copy({ source, target }, action, undefined);
  return (performance.now() - started) / 1000;
}

/** Entries under `dir`, counted by find. */
function countEntries(dir: string): number {
  const child = spawnSync('find', [dir], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return child.stdout.split('\n').filter((l) => l !== '').length;
}

async function measure(name: string, tree: string, bytes: number, scratch: string, entryByEntry: boolean): Promise<boolean> {
  const cp: number[] = [];
  const kiln: number[] = [];
  const patterned: number[] = [];
  const cpDest = path.join(scratch, 'cp-dest');
  const kilnTarget = path.join(scratch, 'kiln-target');
  for (let turn = 0; turn < TURNS; turn++) {
    await rm(cpDest, { recursive: true, force: true });
    await rm(kilnTarget, { recursive: true, force: true });
    spawnSync('sync');
    // Alternate which side goes first, so neither always meets the other's writeback.
    if (turn % 2 === 0) {
      cp.push(timeCp(tree, cpDest));
      kiln.push(await timeKiln(tree, kilnTarget));
    } else {
      kiln.push(await timeKiln(tree, kilnTarget));
      cp.push(timeCp(tree, cpDest));
    }
    if (entryByEntry) {
      const patternTarget = path.join(scratch, 'pattern-target');
      await rm(patternTarget, { recursive: true, force: true });
      spawnSync('sync');
      patterned.push(await timeKiln(tree, patternTarget, true));
      await rm(patternTarget, { recursive: true, force: true });
    }
  }
  const entries = countEntries(cpDest);
  const kilnEntries = countEntries(path.join(kilnTarget, 'out'));
  if (entries !== kilnEntries) throw new Error(`${name}: cp -a made ${entries} entries, kiln ${kilnEntries}`);
  await rm(cpDest, { recursive: true, force: true });
  await rm(kilnTarget, { recursive: true, force: true });
  console.log(`  ${name}: ${entries} entries, ${megabytes(bytes).toFixed(1)} MB`);
  console.log(`    cp -a: ${cp.map((s) => s.toFixed(3)).join(', ')} s; kiln: ${kiln.map((s) => s.toFixed(3)).join(', ')} s`);
  printContext(`  cp -a, median of ${TURNS}`, median(cp), 's');
  printContext(`  kiln copy, median of ${TURNS}`, median(kiln), 's');
  if (entryByEntry) {
    console.log(`    kiln with a pattern (entry by entry): ${patterned.map((s) => s.toFixed(3)).join(', ')} s`);
    printContext(`  entry by entry / cp -a`, median(patterned) / median(cp), 'x');
  }
  return printFigure({ label: `  ${name}: kiln / cp -a`, value: median(kiln) / median(cp), target: TARGET_RATIO, unit: 'x', digits: 2 });
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const entryByEntry = process.argv.includes('--entry-by-entry');
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
  printHeader(`file-copy: the copy action against cp -a of the same tree, median of ${TURNS} alternated turns`, { runsProcesses: false });
  await using dir = await tempDir('file-copy');
  const trees: [string, (d: string) => Promise<number>][] = [
    ['small-5k', (d) => smallFiles(d, 5_000)],
    ...(quick ? [] : [['small-100k', (d: string) => smallFiles(d, 100_000)] as [string, (d: string) => Promise<number>]]),
    ['rootfs', rootfs],
  ];
  let met = true;
  for (const [name, generate] of trees) {
    if (only !== undefined && only !== name) continue;
    const tree = path.join(dir.path, name);
    const bytes = await generate(tree);
    // Both sides read the tree from the page cache.
    spawnSync('sh', ['-c', `tar -c -C '${tree}' . > /dev/null`]);
    met = (await measure(name, tree, bytes, dir.path, entryByEntry)) && met;
    await rm(tree, { recursive: true, force: true });
  }
  printReproduce('file-copy.js [--quick] [--entry-by-entry] [--only=small-5k|small-100k|rootfs]');
  if (!met) process.exitCode = 1;
}

await main();
