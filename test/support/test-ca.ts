/**
 * A throwaway certificate authority for tests of TLS: a CA and a server
 * certificate it signed for 127.0.0.1 and localhost, made with the openssl
 * command line, valid for a day.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** PEM files in one directory. */
export interface TestCertificates {
  /** The CA's certificate: what a client trusts. */
  readonly ca: string;
  /** The server's certificate and key. */
  readonly cert: string;
  readonly key: string;
}

/** Makes a CA and a server certificate for 127.0.0.1, ::1 and localhost under `dir`. */
export async function makeTestCertificates(dir: string): Promise<TestCertificates> {
  const file = (name: string): string => path.join(dir, name);
  const openssl = (args: readonly string[]): Promise<unknown> => run('openssl', [...args]);
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=kiln test CA', '-keyout', file('ca.key'), '-out', file('ca.pem')]);
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', file('server.key'), '-out', file('server.csr')]);
  await writeFile(file('server.ext'), 'subjectAltName = IP:127.0.0.1, IP:::1, DNS:localhost\nextendedKeyUsage = serverAuth\n');
  await openssl([
    'x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-days', '1', '-extfile', file('server.ext'), '-out', file('server.pem'),
  ]);
  return { ca: file('ca.pem'), cert: file('server.pem'), key: file('server.key') };
}
