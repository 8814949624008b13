/**
 * A tiny DNS responder for tests: answers A queries for the names it is
 * given, NXDOMAIN for the rest, on a UDP address of the test's choosing
 * (port 53 on the bridge's gateway, so that a container's resolv.conf can
 * point at it). Nothing is forwarded anywhere: no name is ever resolved off
 * this machine.
 */
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';

export interface TestDnsServer {
  /** The names asked for, in order. */
  readonly queries: string[];
  close(): Promise<void>;
}

/** Starts the responder on `address`:`port` with `records` (name → IPv4 address). */
export async function startDnsServer(options: { address: string; port?: number; records: Readonly<Record<string, string>> }): Promise<TestDnsServer> {
  const socket = createSocket('udp4');
  const queries: string[] = [];
  socket.on('message', (message, remote) => {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(message);
    } catch {
      return;
    }
    const question = query.questions?.[0];
    if (question === undefined) return;
    const name = question.name.toLowerCase();
    queries.push(name);
    const address = options.records[name];
    const answers: dnsPacket.Answer[] = address !== undefined && question.type === 'A' ? [{ type: 'A', name: question.name, ttl: 5, data: address }] : [];
    const response = dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (address === undefined ? 3 : 0),
      questions: [question],
      answers,
    });
    socket.send(response, remote.port, remote.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(options.port ?? 53, options.address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return {
    queries,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
