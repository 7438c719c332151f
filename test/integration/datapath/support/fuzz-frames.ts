// The datapath fuzz test's frames (fuzz.test.ts): a seeded fast-check arbitrary of what an
// attacker in a pod would send, valid, odd and broken.
import fc from 'fast-check';
import type { Pod, World } from './topo.ts';
import { eth, ipv4, tcp, udp, icmp, icmpError, ETH_IP, ETH_ARP, ETH_IPV6, TPID_8021Q, TPID_8021AD, TCP, UDP, ICMP, SYN, ACK } from '../../support/frames.ts';

export interface Peers { A: Pod; B: Pod; C: Pod; world: World; gw: string; node: string }

/** true with probability 1/n */
export const oneIn = (n: number) => fc.integer({ min: 1, max: n }).map((x) => x === 1);
/** a value of `arb` with probability 1/n, else null */
export const rarely = <T>(arb: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | null> =>
  fc.oneof({ arbitrary: fc.constant(null), weight: n - 1 }, { arbitrary: arb, weight: 1 });

/** One frame as the attacker would craft it: a seeded mix of the valid, the odd and the broken. */
export function frameArb(p: Peers): fc.Arbitrary<Buffer> {
  const addr = fc.constantFrom(p.A.ip, p.A.ip, p.A.ip, p.B.ip, p.C.ip, p.world.ip, p.node, '255.255.255.255', '224.0.0.5', '10.250.3.99');
  const dst = fc.constantFrom(p.B.ip, p.B.ip, p.C.ip, p.C.ip, p.world.ip, p.world.ip, p.node, '255.255.255.255', '224.0.0.1', '8.8.8.8');
  const port = fc.oneof(fc.constantFrom(8080, 5353, 80, 443, 53, 7777, 8081, 0), fc.integer({ min: 0, max: 65535 }));
  const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
  const l4 = fc.record({ proto: fc.constantFrom(TCP, TCP, UDP, UDP, ICMP, ICMP, 47, 132, 2, 0, 255), sport: port, dport: port, flags: fc.constantFrom(SYN, SYN | ACK, ACK, 0, 0xff), doff: fc.constantFrom(5, 5, 5, 0, 4, 15), ulen: rarely(fc.integer({ min: 0, max: 2000 }), 3), icmpType: fc.constantFrom(8, 0, 3, 3, 11, 12, 5, 4, 13, 255), icmpCode: fc.integer({ min: 0, max: 15 }), payload: bytes(64) });
  const inner = fc.record({ src: addr, dst: addr, proto: fc.constantFrom(TCP, UDP, ICMP, 99), sport: port, dport: port, ihl: fc.constantFrom(5, 5, 5, 4, 6, 15), truncate: fc.boolean() });
  const ip = fc.record({
    src: addr, dst, id: fc.integer({ min: 0, max: 0xffff }), ttl: fc.constantFrom(64, 1, 0, 255),
    df: fc.boolean(), mf: oneIn(6), fragOffset: fc.constantFrom(0, 0, 0, 0, 0, 0, 8, 16, 1480, 65528),
    options: fc.oneof(
      { arbitrary: fc.constant(Buffer.alloc(0)), weight: 6 },
      { arbitrary: fc.constantFrom(Buffer.from([0x83, 7, 4, 10, 250, 9, 2, 0]), Buffer.from([0x89, 7, 4, 10, 250, 9, 2, 0]), Buffer.from([0x94, 4, 0, 0]), Buffer.from([1, 1, 1, 1])), weight: 2 },
      { arbitrary: bytes(40).map((b) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)])), weight: 1 },
    ),
    badChecksum: oneIn(8), totalLength: rarely(fc.integer({ min: 0, max: 2000 }), 10), version: rarely(fc.constantFrom(0, 5, 6, 15), 15),
    ihl: rarely(fc.integer({ min: 0, max: 15 }), 15), reservedBit: oneIn(15),
  });
  const l2 = fc.record({
    type: fc.constantFrom(ETH_IP, ETH_IP, ETH_IP, ETH_IP, ETH_IP, ETH_IP, ETH_ARP, ETH_IPV6, 0x88cc, 0x0100, 0x9100, 0xffff),
    tags: fc.oneof(
      { arbitrary: fc.constant([] as { tpid: number; vid: number }[]), weight: 5 },
      // the stacks the kernel takes apart after tc (priority tags, VID 0)
      { arbitrary: fc.constantFrom<{ tpid: number; vid: number }[]>([{ tpid: TPID_8021Q, vid: 0 }, { tpid: TPID_8021Q, vid: 0 }], [{ tpid: TPID_8021AD, vid: 0 }, { tpid: TPID_8021Q, vid: 0 }], [{ tpid: TPID_8021Q, vid: 0 }]), weight: 1 },
      { arbitrary: fc.array(fc.record({ tpid: fc.constantFrom(TPID_8021Q, TPID_8021AD, 0x9100), vid: fc.constantFrom(0, 0, 1, 4095) }), { minLength: 1, maxLength: 3 }), weight: 2 },
    ),
    broadcast: oneIn(10), truncateTo: rarely(fc.integer({ min: 0, max: 120 }), 10),
  });
  return fc.tuple(l2, ip, l4, inner, fc.boolean()).map(([e, h, x, q, fragPayload]) => {
    let seg: Buffer;
    if (h.fragOffset && fragPayload) seg = x.payload;
    else if (x.proto === TCP) seg = tcp({ src: h.src, dst: h.dst, sport: x.sport, dport: x.dport, flags: x.flags, doff: x.doff }, x.payload);
    else if (x.proto === UDP) seg = udp({ src: h.src, dst: h.dst, sport: x.sport, dport: x.dport, ...(x.ulen !== null ? { length: x.ulen } : {}) }, x.payload);
    else if (x.proto === ICMP) {
      if (x.icmpType === 3 || x.icmpType === 11 || x.icmpType === 12) {
        const q4 = q.proto === TCP ? tcp({ src: q.src, dst: q.dst, sport: q.sport, dport: q.dport, flags: ACK }) : q.proto === UDP ? udp({ src: q.src, dst: q.dst, sport: q.sport, dport: q.dport }, Buffer.alloc(4)) : Buffer.from([8, 0, 0, 0, 0, 1, 0, 1]);
        let quoted = ipv4({ src: q.src, dst: q.dst, proto: q.proto, ihl: q.ihl }, q4);
        if (q.truncate) quoted = quoted.subarray(0, 24);
        seg = icmpError(Buffer.concat([quoted, Buffer.alloc(8)]), x.icmpType, x.icmpCode, x.payload);
      } else {
        seg = icmp(x.icmpType, x.icmpCode, Buffer.from([0, 7, 0, 1]), x.payload);
      }
    } else seg = x.payload;
    const l3 = ipv4({
      src: h.src, dst: h.dst, proto: x.proto, id: h.id, ttl: h.ttl, df: h.df, mf: h.mf, fragOffset: h.fragOffset, options: h.options,
      badChecksum: h.badChecksum, reservedBit: h.reservedBit,
      ...(h.totalLength !== null ? { totalLength: h.totalLength } : {}), ...(h.version !== null ? { version: h.version } : {}), ...(h.ihl !== null ? { ihl: h.ihl } : {}),
    }, seg);
    const body = e.type === ETH_IP ? l3 : e.type === ETH_ARP ? Buffer.alloc(28, 1) : Buffer.concat([Buffer.alloc(8), l3]);
    const f = eth({ dst: e.broadcast ? 'ff:ff:ff:ff:ff:ff' : p.gw, src: p.A.mac, type: e.type, tags: e.tags }, body);
    return e.truncateTo !== null ? f.subarray(0, Math.max(14, e.truncateTo)) : f;
  });
}


/** A live, allowed TCP connection of A to B (A's source port), for crafted errors to quote. */
export interface Live { sport: number; dport: number }

/**
 * Frames aimed at the state the datapath keeps: ICMP errors of every type quoting A's live
 * connection (in either orientation) or a stranger's tuple, sent to the peer, to others and to the
 * node; and fragment trains (first and later fragments in order, later first, later alone, a
 * later fragment re-addressed to another host) to allowed and forbidden destinations. Each element
 * is one or more frames sent in order.
 */
export function targetedArb(p: Peers, live: Live): fc.Arbitrary<Buffer[]> {
  const out = (l3: Buffer) => eth({ dst: p.gw, src: p.A.mac, type: ETH_IP }, l3);
  const to = fc.constantFrom(p.B.ip, p.B.ip, p.C.ip, p.world.ip, p.node, '10.250.3.99');
  const icmpErr = fc.record({
    to, type: fc.constantFrom(3, 3, 11, 12, 4, 5), code: fc.integer({ min: 0, max: 15 }),
    inner: fc.constantFrom('live-from-peer', 'live-to-peer', 'live-wrong-port', 'stranger'), innerProto: fc.constantFrom(TCP, UDP), extra: fc.uint8Array({ maxLength: 48 }),
  }).map((r) => {
    const peerToA = { src: p.B.ip, dst: p.A.ip, sport: live.dport, dport: live.sport };
    const q = r.inner === 'live-from-peer' ? { ...peerToA, proto: TCP }
      : r.inner === 'live-to-peer' ? { src: p.A.ip, dst: p.B.ip, sport: live.sport, dport: live.dport, proto: TCP }
        : r.inner === 'live-wrong-port' ? { ...peerToA, dport: (live.sport + 1) & 0xffff, proto: TCP }
          : { src: p.C.ip, dst: p.A.ip, sport: 8080, dport: live.sport, proto: r.innerProto };
    const seg = q.proto === TCP ? tcp({ ...q, flags: ACK }) : udp(q, Buffer.alloc(4));
    const quoted = ipv4({ src: q.src, dst: q.dst, proto: q.proto }, seg);
    return [out(ipv4({ src: p.A.ip, dst: r.to, proto: ICMP }, icmpError(quoted, r.type, r.code, Buffer.concat([Buffer.from('fz-icmp'), Buffer.from(r.extra)]))))];
  });
  const train = fc.record({
    dst: fc.constantFrom(p.B.ip, p.B.ip, p.C.ip, p.world.ip), dport: fc.constantFrom(5353, 5353, 5454, 8080), proto: fc.constantFrom(UDP, UDP, TCP),
    id: fc.integer({ min: 1, max: 0xffff }), order: fc.constantFrom('in', 'later-first', 'later-only', 'later-elsewhere'),
  }).map((r) => {
    const data = Buffer.alloc(1600, 0x66);
    const seg = r.proto === UDP ? udp({ src: p.A.ip, dst: r.dst, sport: 40000, dport: r.dport }, data) : tcp({ src: p.A.ip, dst: r.dst, sport: 40000, dport: r.dport, flags: SYN }, data);
    const first = out(ipv4({ src: p.A.ip, dst: r.dst, proto: r.proto, id: r.id, mf: true }, seg.subarray(0, 1480)));
    const later = (dst: string) => out(ipv4({ src: p.A.ip, dst, proto: r.proto, id: r.id, fragOffset: 1480 }, seg.subarray(1480)));
    return r.order === 'in' ? [first, later(r.dst)] : r.order === 'later-first' ? [later(r.dst), first]
      : r.order === 'later-only' ? [later(r.dst)] : [first, later(r.dst === p.B.ip ? p.C.ip : p.B.ip)];
  });
  return fc.oneof(icmpErr, train);
}
