/**
 * The datapath events one TCP_CRR connection makes on a node (policy verdict, SYN, SYN-ACK, ACK,
 * RST: what bench/cluster counted per connection), for `connections` client ports, each as a
 * record of the kernel ring (its 8-byte header, then the event): the input of the in-process
 * agent benches (agent-events.ts, bench/hubble/ring-retention.ts). `encodeEvent` is the codec of
 * the tree under test (an A/B may load another tree's).
 */
export function crrEventRecords(encodeEvent: (e: never) => Buffer, connections = 1000): Buffer[] {
  const base = { timeNs: 1000n, endpointId: 101, ifindex: 7, srcIdentity: 50001, dstIdentity: 50002, ipVersion: 4, srcIp: '10.244.1.10', dstIp: '10.244.2.10', proto: 6, srcPort: 0, dstPort: 7002, tcpFlags: 2, icmpType: 0, icmpCode: 0, ctReason: 1, verdict: 0, matchType: 0, authType: 0, length: 60, subType: 0, direction: 'egress' };
  const reply = { srcIp: '10.244.2.10', dstIp: '10.244.1.10', srcIdentity: 50002, dstIdentity: 50001, srcPort: 7002, direction: 'ingress', subType: 1 };
  const records: Buffer[] = [];
  for (let i = 0; i < connections; i++) {
    const port = 32768 + i;
    for (const e of [
      { ...base, srcPort: port, type: 5, matchType: 3 },
      { ...base, srcPort: port, type: 4 },
      { ...base, ...reply, dstPort: port, type: 4, ctReason: 3, tcpFlags: 18 },
      { ...base, srcPort: port, type: 4, ctReason: 2, tcpFlags: 16 },
      { ...base, srcPort: port, type: 4, ctReason: 2, tcpFlags: 20 },
    ]) {
      const b = encodeEvent(e as never);
      const rec = Buffer.alloc(b.length + 8);
      b.copy(rec, 8);
      records.push(rec);
    }
  }
  return records;
}
