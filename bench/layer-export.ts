/**
 * Exporting a 500 MB, 20,000-file snapshot as a gzip layer (level 6), the
 * changes of a layer with no lower: kiln's exportLayer (walk, tar, gzip,
 * hash, stored in a content store with fsync) against the floor
 * `tar -c DIR | gzip -6 > /dev/null` on the same tree in the same run.
 * Target: kiln's throughput >= 0.8x the floor's, i.e. its time <= 1.25x.
 *
 * The tree is generated from a fixed seed: mostly text-like files (words
 * from a small vocabulary, which gzip shrinks about as much as source code)
 * of log-uniform sizes, about 15% incompressible ones, a few big files, in
 * folders up to 13 deep.
 */
import { createCipheriv } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { DEFAULT_GZIP_LEVEL, exportLayer, treeLayerChanges } from '../src/content/layer/export.js';
import { ContentStore } from '../src/content/store.js';
import { median, megabytes, mulberry32, printContext, printFigure, printHeader, printReproduce, sum, tempDir } from './harness.js';

const FILES = 20_000;
const TOTAL_BYTES = 500 * 1000 * 1000;
/** Files of 5 MB each (half text, half binary), like the odd big binary or data file of an image. */
const BIG_FILES = 10;
const BIG_BYTES = 5 * 1000 * 1000;
const BINARY_SHARE = 0.15;
const RUNS = 3;
/** kiln at >= 0.8x the floor's throughput. */
const TARGET_TIME_RATIO = 1 / 0.8;
/** The layer of many small files: 20,000 files of 20 to 400 bytes, medians of 5 alternated turns. */
const SMALL_FILES = 20_000;
const SMALL_RUNS = 5;
const SMALL_TARGET_RATIO = 1.2;

/** 8 MB of text-like bytes: lines of words drawn from a 2,000-word vocabulary. */
function textCorpus(random: () => number): Buffer {
  const letters = 'abcdefghijklmnopqrstuvwxyz_';
  const words = Array.from({ length: 2000 }, () => Array.from({ length: 2 + Math.floor(random() * 10) }, () => letters[Math.floor(random() * letters.length)]).join(''));
  const parts: string[] = [];
  let size = 0;
  while (size < 8 * 1024 * 1024) {
    const indent = '  '.repeat(Math.floor(random() * 4));
    const line = `${indent}${Array.from({ length: 3 + Math.floor(random() * 9) }, () => words[Math.floor(random() ** 2 * words.length)]).join(' ')};\n`;
    parts.push(line);
    size += line.length;
  }
  return Buffer.from(parts.join(''));
}

/** Incompressible bytes from a seeded stream cipher (fast, and the same every run). */
function binaryBytes(size: number, seed: number): Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt32LE(seed);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** The folder of file `i`: 20 top folders of 10 of 5, and every 50th file at the end of a 13-deep chain. */
function folderOf(i: number): string {
  if (i % 50 === 0) return path.join(`deep-${i % 7}`, ...Array.from({ length: 12 }, (_, d) => `level-${d}`));
  return path.join(`pkg-${i % 20}`, `mod-${Math.floor(i / 20) % 10}`, `part-${Math.floor(i / 200) % 5}`);
}

/** Writes the tree; returns its bytes. */
async function generateTree(dir: string): Promise<number> {
  const random = mulberry32(7);
  const corpus = textCorpus(random);
  const small = FILES - BIG_FILES;
  const weights = Array.from({ length: small }, () => Math.exp(random() * Math.log(4000)));
  const scale = (TOTAL_BYTES - BIG_FILES * BIG_BYTES) / sum(weights);
  let total = 0;
  const contentOf = (size: number, binary: boolean, seed: number): Buffer => {
    if (binary) return binaryBytes(size, seed);
    const start = Math.floor(random() * (corpus.length - size));
    return corpus.subarray(start, start + size);
  };
  for (let i = 0; i < FILES; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, FILES - i) }, async (_, j) => {
        const index = i + j;
        const big = index >= small;
        const size = big ? BIG_BYTES : Math.max(1, Math.floor((weights[index] as number) * scale));
        const binary = big ? index % 2 === 0 : random() < BINARY_SHARE;
        const folder = path.join(dir, folderOf(index));
        await mkdir(folder, { recursive: true });
        total += size;
        await writeFile(path.join(folder, `file-${index}.${binary ? 'bin' : 'txt'}`), contentOf(size, binary, index));
      }),
    );
  }
  return total;
}

/** Writes the small-file tree: 200 folders of 100 files of 20 to 400 bytes. */
async function generateSmallTree(dir: string): Promise<void> {
  const random = mulberry32(3);
  for (let d = 0; d < SMALL_FILES / 100; d++) {
    const folder = path.join(dir, `pkg-${d % 20}`, `mod-${d}`);
    await mkdir(folder, { recursive: true });
    await Promise.all(
      Array.from({ length: 100 }, (_, f) => writeFile(path.join(folder, `file-${f}.txt`), `${d} ${f} `.repeat(2 + Math.floor(random() * 60)))),
    );
  }
}

/** Bytes of `tar -c` (GNU tar's default format) of the tree's entries, with no record padding. */
function gnuTarBytes(tree: string): number {
  const child = spawnSync('sh', ['-c', `tar -c --record-size=512 -C '${tree}' . | wc -c`], { encoding: 'utf8' });
  if (child.status !== 0) throw new Error(`tar exited with ${child.status ?? child.signal}`);
  return Number(child.stdout.trim());
}

/** The layer of many small files: time against the floor, and the tar's size against GNU tar's. */
async function measureSmallFiles(root: string): Promise<boolean> {
  const tree = path.join(root, 'small-tree');
  await generateSmallTree(tree);
  timeShell(`tar -c -C '${tree}' . > /dev/null`);
  const floor: number[] = [];
  const kiln: number[] = [];
  for (let run = 0; run < SMALL_RUNS; run++) {
    floor.push(timeShell(`tar -c -C '${tree}' . | gzip -${DEFAULT_GZIP_LEVEL} > /dev/null`));
    kiln.push((await timeExport(tree, path.join(root, 'kiln-root'))).seconds);
  }
  const store = new ContentStore(path.join(root, 'kiln-root'));
  const plain = await exportLayer(treeLayerChanges(tree), store, { compression: 'uncompressed' });
  await rm(store.path(plain.blob.digest));
  const gnu = gnuTarBytes(tree);
  console.log(`  ${SMALL_FILES} small files: floor ${floor.map((s) => s.toFixed(3)).join(', ')} s; kiln ${kiln.map((s) => s.toFixed(3)).join(', ')} s`);
  printContext(`  floor: tar | gzip -${DEFAULT_GZIP_LEVEL}, median of ${SMALL_RUNS}`, median(floor), 's');
  printContext(`  kiln exportLayer, median of ${SMALL_RUNS}`, median(kiln), 's');
  printContext('  GNU tar of the same entries', megabytes(gnu), 'MB');
  const timeMet = printFigure({ label: '  small files: kiln time / floor time', value: median(kiln) / median(floor), target: SMALL_TARGET_RATIO, unit: 'x', digits: 2 });
  const sizeMet = printFigure({ label: '  small files: kiln tar / GNU tar', value: plain.blob.size / gnu, target: 1, unit: 'x', digits: 2 });
  await rm(tree, { recursive: true, force: true });
  return timeMet && sizeMet;
}

/** Seconds `sh -c COMMAND` takes. */
function timeShell(command: string): number {
  const started = performance.now();
  const child = spawnSync('sh', ['-c', command], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (child.status !== 0) throw new Error(`${command} exited with ${child.status ?? child.signal}`);
  return (performance.now() - started) / 1000;
}

/** Seconds one exportLayer of the whole tree takes (listing the changes included); the blob is removed after. */
async function timeExport(tree: string, root: string): Promise<{ seconds: number; blobBytes: number; digest: string }> {
  const store = new ContentStore(root);
  const started = performance.now();
  const exported = await exportLayer(treeLayerChanges(tree), store, { compression: 'gzip', level: DEFAULT_GZIP_LEVEL });
  const seconds = (performance.now() - started) / 1000;
  await rm(store.path(exported.blob.digest));
  return { seconds, blobBytes: exported.blob.size, digest: exported.blob.digest };
}

async function main(): Promise<void> {
  printHeader(`layer-export: a ${TOTAL_BYTES / 1e6} MB, ${FILES}-file tree as a gzip layer, against tar | gzip -${DEFAULT_GZIP_LEVEL}`, { runsProcesses: false });
  await using dir = await tempDir('layer-export');
  const smallMet = await measureSmallFiles(dir.path);
  if (process.argv.includes('--small')) {
    printReproduce('layer-export.js --small');
    if (!smallMet) process.exitCode = 1;
    return;
  }
  const tree = path.join(dir.path, 'tree');
  const started = performance.now();
  const bytes = await generateTree(tree);
  printContext('generating the tree', (performance.now() - started) / 1000, 's', 1);
  // Both sides read from the page cache: one untimed pass first.
  timeShell(`tar -c -C '${tree}' . > /dev/null`);

  const floor: number[] = [];
  const kiln: number[] = [];
  const digests = new Set<string>();
  let blobBytes = 0;
  for (let run = 0; run < RUNS; run++) {
    floor.push(timeShell(`tar -c -C '${tree}' . | gzip -${DEFAULT_GZIP_LEVEL} > /dev/null`));
    const exported = await timeExport(tree, path.join(dir.path, 'kiln-root'));
    kiln.push(exported.seconds);
    digests.add(exported.digest);
    blobBytes = exported.blobBytes;
  }
  if (digests.size !== 1) throw new Error(`the same tree gave ${digests.size} different blobs`);
  const floorSeconds = median(floor);
  const kilnSeconds = median(kiln);
  const mb = megabytes(bytes);
  printContext(`floor: tar | gzip -${DEFAULT_GZIP_LEVEL}, median of ${RUNS}`, floorSeconds, 's', 2);
  printContext('floor throughput', mb / floorSeconds, 'MB/s', 1);
  printContext(`kiln exportLayer, median of ${RUNS}`, kilnSeconds, 's', 2);
  printContext('kiln throughput', mb / kilnSeconds, 'MB/s', 1);
  printContext('layer blob size', megabytes(blobBytes), 'MB', 1);
  const met = printFigure({ label: 'kiln time / floor time', value: kilnSeconds / floorSeconds, target: TARGET_TIME_RATIO, unit: 'x', digits: 2 });
  printReproduce('layer-export.js [--small]');
  if (!met || !smallMet) process.exitCode = 1;
}

await main();
