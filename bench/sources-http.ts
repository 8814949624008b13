/**
 * An HTTP source fetching a 200 MiB file from a loopback server, against
 * `curl -o` of the same URL.
 *
 * The server is scripts/example-http-server.mjs in its own process (the
 * bench runs the measured processes synchronously), serving the file from
 * the page cache. Timed, alternately, RUNS times each:
 * - curl: `curl -sS -o FILE URL`, the whole process;
 * - kiln: a whole `kiln build` process of a definition whose result is the
 *   `http://` source, on a fresh root (so it always downloads), with
 *   `--progress rawjson`. Its download time is the `downloading` counter's
 *   span (from before the request is sent to the last byte hashed and
 *   written); the whole process (start, store, snapshot, exit) is printed too.
 *
 * `--server=sendfile` serves the file with bench/sendfile-server.py instead
 * (python3, os.sendfile: the kernel sends the page cache, the server
 * copies nothing), to check that the node server is not what limits either.
 *
 * Targets: kiln's download throughput >= 0.9x curl's (medians), i.e. its
 * time <= 1/0.9 of curl's; peak RSS of the kiln process flat, far below the
 * file's size (the body is streamed and hashed on the way, never held).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { median, megabytes, printContext, printFigure, printHeader, printReproduce, runKiln, summarizeProgress, tempDir } from './harness.js';

const FILE_BYTES = 200 * 1024 * 1024;
const RUNS = 5;
const TARGET_THROUGHPUT_RATIO = 0.9;
const TARGET_RSS_MB = 150;
const SERVER = fileURLToPath(new URL('../../scripts/example-http-server.mjs', import.meta.url));
const SENDFILE_SERVER = fileURLToPath(new URL('../../bench/sendfile-server.py', import.meta.url));
const SERVER_KIND = process.argv.slice(2).includes('--server=sendfile') ? 'sendfile' : 'node';

/** Writes `bytes` of random data to `file`, 8 MiB at a time. */
async function writeRandom(file: string, bytes: number): Promise<void> {
  const handle = await open(file, 'w');
  try {
    for (let written = 0; written < bytes; written += 8 * 1024 * 1024) await handle.write(randomBytes(Math.min(8 * 1024 * 1024, bytes - written)));
  } finally {
    await handle.close();
  }
}

/**
 * Time to sha256 `file` from the page cache on this thread, 256 KiB reads:
 * the least time any source that must digest the content can take, however
 * fast its transfer is.
 */
function sha256Ms(file: string): number {
  const buffer = Buffer.allocUnsafe(256 * 1024);
  const fd = openSync(file, 'r');
  try {
    const started = performance.now();
    const hash = createHash('sha256');
    for (let n = readSync(fd, buffer); n > 0; n = readSync(fd, buffer)) hash.update(n === buffer.length ? buffer : buffer.subarray(0, n));
    hash.digest();
    return performance.now() - started;
  } finally {
    closeSync(fd);
  }
}

/** Starts the file server on a free port; resolves with its base URL and a stop function. */
async function startServer(dir: string): Promise<{ readonly url: string; stop(): void }> {
  const child =
    SERVER_KIND === 'sendfile'
      ? spawn('python3', [SENDFILE_SERVER, dir, '0'], { stdio: ['ignore', 'pipe', 'inherit'] })
      : spawn(process.execPath, [SERVER, dir, '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the file server exited with ${code}`)));
  });
  return { url, stop: () => child.kill('SIGTERM') };
}

/** The span of the `downloading` counter in a rawjson stream, in ms. */
function downloadMs(stderr: string): number {
  for (const line of stderr.split('\n')) {
    if (!line.includes('"id":"downloading"') || !line.includes('"completed"')) continue;
    const event = JSON.parse(line) as { started: string; completed: string };
    return Date.parse(event.completed) - Date.parse(event.started);
  }
  throw new Error('no completed downloading counter in the progress');
}

async function main(): Promise<void> {
  printHeader(`sources-http: a ${FILE_BYTES / 2 ** 20} MiB file from a loopback ${SERVER_KIND} server, kiln's http source vs curl -o`, { runsProcesses: true });
  await using work = await tempDir('sources-http');
  const served = path.join(work.path, 'served');
  await mkdir(served);
  await writeRandom(path.join(served, 'big.bin'), FILE_BYTES);
  const server = await startServer(served);
  try {
    const url = `${server.url}/big.bin`;
    const def = path.join(work.path, 'fetch.json');
    await writeFile(def, JSON.stringify({ version: 1, ops: { fetch: { source: { identifier: url } } }, result: 'fetch' }));
    // Once each first: the page cache holds the file for every measured run.
    spawnSync('curl', ['-sS', '-o', path.join(work.path, 'warm'), url]);

    const curlMs: number[] = [];
    const kilnDownloadMs: number[] = [];
    const kilnWallMs: number[] = [];
    const kilnRss: number[] = [];
    const hashMs: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const target = path.join(work.path, `curl${run}`);
      const started = performance.now();
      const curl = spawnSync('curl', ['-sS', '-o', target, url], { encoding: 'utf8' });
      curlMs.push(performance.now() - started);
      if (curl.status !== 0) throw new Error(`curl failed: ${curl.stderr}`);
      if ((await stat(target)).size !== FILE_BYTES) throw new Error('curl wrote a short file');
      await rm(target);

      hashMs.push(sha256Ms(path.join(served, 'big.bin')));

      const root = path.join(work.path, `root${run}`);
      const kiln = await runKiln(['build', def, '--root', root, '--progress', 'rawjson'], work.path);
      if (summarizeProgress(kiln.stderr).ran.length !== 1) throw new Error('the http source did not run');
      kilnDownloadMs.push(downloadMs(kiln.stderr));
      kilnWallMs.push(kiln.wallMs);
      kilnRss.push(kiln.peakRssBytes);
      await rm(root, { recursive: true, force: true });
      const [c, k] = [curlMs.at(-1) ?? 0, kilnDownloadMs.at(-1) ?? 0];
      const h = hashMs.at(-1) ?? 0;
      console.log(`  run ${run + 1}: curl ${(c / 1000).toFixed(2)} s, sha256 alone ${(h / 1000).toFixed(2)} s, kiln download ${(k / 1000).toFixed(2)} s (${(k / c).toFixed(2)}x)`);
    }
    const mib = FILE_BYTES / 2 ** 20;
    const curlMedian = median(curlMs);
    const kilnMedian = median(kilnDownloadMs);
    printContext('curl -o, whole process, median', curlMedian / 1000, 's');
    printContext('curl throughput', mib / (curlMedian / 1000), 'MiB/s', 0);
    printContext('kiln download (counter span), median', kilnMedian / 1000, 's');
    printContext('kiln throughput', mib / (kilnMedian / 1000), 'MiB/s', 0);
    printContext('kiln build, whole process, median', median(kilnWallMs) / 1000, 's');
    printContext('throughput kiln / curl', curlMedian / kilnMedian, 'x', 2);
    // The content digest is the cache key, so the body must be hashed: where
    // sha256 on one core is slower than curl's whole transfer, that is a
    // floor no digesting source can pass.
    const hashMedian = median(hashMs);
    printContext('sha256 of the same file alone, one core, median', hashMedian / 1000, 's');
    printContext('sha256 alone / curl time', hashMedian / curlMedian, 'x', 2);
    printContext('kiln download / max(curl, sha256 alone)', kilnMedian / Math.max(curlMedian, hashMedian), 'x', 2);
    const timeOk = printFigure({ label: 'kiln download time / curl time', value: kilnMedian / curlMedian, target: 1 / TARGET_THROUGHPUT_RATIO, unit: 'x', digits: 2 });
    const rssOk = printFigure({ label: 'kiln peak RSS, largest of the runs', value: megabytes(Math.max(...kilnRss)), target: TARGET_RSS_MB, unit: 'MB', digits: 0 });
    printReproduce('sources-http.js');
    if (!timeOk || !rssOk) process.exitCode = 1;
  } finally {
    server.stop();
  }
}

await main();
