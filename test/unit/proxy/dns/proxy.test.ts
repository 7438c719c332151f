/**
 * The DNS proxy over loopback with a fake upstream: decisions (allowed / REFUSED / NXDOMAIN
 * option), the answer hold until the datapath has the IPs, FORMERR for bad packets, SERVFAIL on
 * an upstream timeout, unknown sources dropped, and the flows it emits. No kernel parts: the
 * "original destination" is a second loopback address the replies come from.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { createDNSProxy, DNSHoldFailed, type DNSProxyDeps } from '../../../../src/proxy/dns/proxy.ts';
import { Verdict, type Flow } from '../../../../src/hubble/gen/flow/flow_pb.js';
import { createL7Parser } from '../../../../src/hubble/l7-parser.ts';
import { RecvBatch, dgramFd } from '../../../../src/sys/udp-batch.ts';

// the proxy's access records as the agent turns them into flows
const parse = createL7Parser({ nodeName: 'n1', resolver: { byIp: () => undefined, identityLabels: () => undefined } });

const EP = { id: 7, identity: 300, namespace: 'default', pod: 'client', labels: ['k8s:app=client'] };

async function upstreamServer(answer: (q: dnsPacket.Packet) => dnsPacket.Packet | null): Promise<{ s: Socket; port: number }> {
  const s = createSocket('udp4');
  s.on('message', (m, r) => {
    const q = dnsPacket.decode(m);
    const a = answer(q);
    if (a) s.send(dnsPacket.encode({ ...a, id: q.id }), r.port, r.address);
  });
  await new Promise<void>((res) => s.bind(0, '127.0.0.1', res));
  return { s, port: s.address().port };
}

/**
 * A proxy on loopback for the client pod EP, its upstream `answer`ing (or `upstream`, a server of
 * the test's own); `over` replaces any of its deps. close() stops both.
 */
async function setup(over: Partial<DNSProxyDeps> = {}, answer = (q: dnsPacket.Packet): dnsPacket.Packet | null => ({
  type: 'response', flags: 0, questions: q.questions,
  answers: q.questions![0]!.name === 'api.openai.com' ? [{ name: 'api.openai.com', type: 'A', ttl: 30, data: '198.51.100.20' }] : [],
}), upstream?: { s: Socket; port: number }) {
  const up = upstream ?? await upstreamServer(answer);
  const flows: Flow[] = [];
  const proxy = createDNSProxy({
    nodeName: 'n1', port: 0, host: '127.0.0.1', dnsPort: up.port,
    endpointByIp: (ip) => (ip === '127.0.0.1' ? EP : undefined),
    originalDestination: () => '127.0.0.3',
    upstreamFor: () => '127.0.0.1',
    peerOf: () => ({ identity: 256 }),
    decide: (_ep, _id, _p, _port, qname) => qname === 'api.openai.com.' || qname === 'slow.example.',
    onAnswer: () => null,
    emit: (r) => flows.push(parse(r)),
    upstreamTimeoutMs: 300,
    ...over,
  });
  await proxy.start();
  return { proxy, flows, up, close: async () => { await proxy.stop(); up.s.close(); } };
}

function ask(port: number, msg: Buffer, waitMs = 1500): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => { s.close(); resolve(null); }, waitMs);
    s.once('message', (m, r) => { clearTimeout(t); s.close(); assert.equal(r.address, '127.0.0.3', 'answers come from the original destination'); resolve(m); });
    s.send(msg, port, '127.0.0.1');
  });
}
/** a dgram socket's fd (Node keeps it in its internal state) */
function clientFd(s: Socket): number {
  const fd = dgramFd(s);
  if (fd < 0) throw new Error('no fd');
  return fd;
}
const query = (name: string, id = 42) => dnsPacket.encode({ id, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A' }] });
const rcode = (b: Buffer | null) => (b ? ((dnsPacket.decode(b) as { rcode?: string }).rcode ?? '') : 'none');

test('allowed: forwarded, answer back with the client id; request and response flows', async () => {
  const x = await setup();
  try {
    const r = await ask(x.proxy.boundPort(), query('api.openai.com', 4242));
    assert.ok(r);
    const d = dnsPacket.decode(r);
    assert.equal(d.id, 4242);
    assert.deepEqual(d.answers?.map((a) => (a as { data: string }).data), ['198.51.100.20']);
    await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(x.flows.map((f) => `${f.isReply ? 'res' : 'req'} ${f.verdict}`), ['req 1', 'res 1']);
    const dns = x.flows[1]!.l7!.record.value as { ips: string[]; ttl: number; query: string };
    assert.deepEqual([dns.query, dns.ips, dns.ttl], ['api.openai.com.', ['198.51.100.20'], 30]);
  } finally { await x.close(); }
});

test('denied: REFUSED (default) or NXDOMAIN (nameError), DROPPED flow, nothing sent upstream', async () => {
  let upstreamSeen = 0;
  const x = await setup({}, (q) => { upstreamSeen++; return { type: 'response', questions: q.questions, answers: [] }; });
  const y = await setup({ rejectResponseCode: 'nameError' });
  try {
    assert.equal(rcode(await ask(x.proxy.boundPort(), query('evil.example'))), 'REFUSED');
    assert.equal(rcode(await ask(y.proxy.boundPort(), query('evil.example'))), 'NXDOMAIN');
    assert.equal(upstreamSeen, 0);
    assert.equal(x.flows[0]!.verdict, 2 /* DROPPED */);
    assert.equal(x.proxy.stats().denied, 1);
  } finally { await x.close(); await y.close(); }
});

test('the answer is held until onAnswer resolves (the datapath has the IPs)', async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const x = await setup({ onAnswer: () => held });
  try {
    const t0 = Date.now();
    const p = ask(x.proxy.boundPort(), query('api.openai.com'));
    setTimeout(release, 200);
    const r = await p;
    assert.ok(r);
    assert.ok(Date.now() - t0 >= 190, `released after the datapath update (${Date.now() - t0} ms)`);
    assert.equal(x.proxy.stats().holdsMs.length, 1);
  } finally { await x.close(); }
});

test('a hold never exceeds maxHoldMs', async () => {
  const x = await setup({ onAnswer: () => new Promise<void>(() => {}), maxHoldMs: 100 });
  try {
    const r = await ask(x.proxy.boundPort(), query('api.openai.com'));
    assert.ok(r);
    assert.equal(x.proxy.stats().holdTimeouts, 1);
  } finally { await x.close(); }
});

test('attacker: a hold that fails (the standalone proxy\'s agent stayed away) answers SERVFAIL: the answer\'s IPs never reach the client', async () => {
  const x = await setup({ onAnswer: () => new Promise<void>((_, rej) => setTimeout(() => rej(new DNSHoldFailed('away')), 50)) });
  try {
    const r = await ask(x.proxy.boundPort(), query('api.openai.com'));
    assert.ok(r);
    assert.equal(rcode(r), 'SERVFAIL');
    assert.deepEqual(dnsPacket.decode(r).answers ?? [], []);
    assert.equal(x.proxy.stats().holdTimeouts, 1);
    // the response flow says SERVFAIL, no IPs
    const resp = x.flows.find((f) => f.l7?.type === 2 /* RESPONSE */);
    assert.ok(resp);
    assert.equal(resp.l7?.record.case, 'dns');
    assert.deepEqual((resp.l7?.record.value as { ips: string[] }).ips, []);
    assert.equal((resp.l7?.record.value as { rcode: number }).rcode, 2);
  } finally { await x.close(); }
});

test('bad packets: FORMERR with the id, or dropped (no header); unknown sources dropped; upstream silence → SERVFAIL', async () => {
  const x = await setup({}, (q) => (q.questions![0]!.name === 'slow.example' ? null : { type: 'response', questions: q.questions, answers: [] }));
  try {
    const port = x.proxy.boundPort();
    assert.equal(await ask(port, Buffer.from([1, 2, 3]), 300), null);
    const r = await ask(port, Buffer.from('123401000001000000000000c00c00010001', 'hex'));
    assert.equal(rcode(r), 'FORMERR');
    assert.equal(dnsPacket.decode(r!).id, 0x1234);
    assert.equal(rcode(await ask(port, Buffer.concat([query('api.openai.com'), Buffer.alloc(600)]))), 'FORMERR');
    // the SERVFAIL is made from what the proxy kept of the query (no copy of it): the client's id, RD, the question
    const sf = await ask(port, query('slow.example', 0x0abc));
    assert.equal(rcode(sf), 'SERVFAIL');
    const sfd = dnsPacket.decode(sf!);
    assert.equal(sfd.id, 0x0abc);
    assert.equal(sfd.flags! & dnsPacket.RECURSION_DESIRED, dnsPacket.RECURSION_DESIRED);
    assert.deepEqual(sfd.questions, [{ name: 'slow.example', type: 'A', class: 'IN' }]);
    assert.equal(x.proxy.stats().upstreamTimeouts, 1);
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'NOERROR', 'still serving');
  } finally { await x.close(); }
  const y = await setup({ endpointByIp: () => undefined });
  try {
    assert.equal(await ask(y.proxy.boundPort(), query('api.openai.com'), 300), null);
    assert.equal(y.proxy.stats().dropped, 1);
  } finally { await y.close(); }
});

test('with a revision (the proxy process), a peer is asked again once the revision moves: a changed identity is judged and recorded at once', async () => {
  let rev = 1;
  let serverIdentity = 256;
  const asked: number[] = [];
  const x = await setup({
    revision: () => rev,
    peerOf: (ip) => ({ identity: ip === '127.0.0.3' ? serverIdentity : 300 }),
    decide: (_ep, id, _p, _port, qname) => { asked.push(id); return id === 256 && qname === 'api.openai.com.'; },
  });
  try {
    const port = x.proxy.boundPort();
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'NOERROR');
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'NOERROR');
    // the server's identity changes with a new snapshot (the revision moves): no longer allowed
    serverIdentity = 999;
    rev++;
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'REFUSED');
    // the second query's verdict was the question's kept one (same revision, endpoint and server)
    assert.deepEqual(asked, [256, 999]);
    await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(x.flows.map((f) => `${f.isReply ? 'res' : 'req'} ${f.verdict} ${(f.isReply ? f.source : f.destination)?.identity}`), ['req 1 256', 'res 1 256', 'req 1 256', 'res 1 256', 'req 2 999']);
  } finally { await x.close(); }
});

test('with a revision, a question\'s verdict is kept only while the revision, the endpoint and the server identity stay: a policy that turns to deny is obeyed by the next query', async () => {
  let rev = 1;
  let allow = true;
  let throwNext = false;
  let serverIdentity = 256;
  const asked: string[] = [];
  const x = await setup({
    revision: () => rev,
    peerOf: (ip) => ({ identity: ip === '127.0.0.3' ? serverIdentity : 300 }),
    decide: (_ep, id, _p, _port, qname) => {
      asked.push(`${id} ${qname}`);
      if (throwNext) { throwNext = false; throw new Error('view torn'); }
      return allow && id === 256 && qname === 'api.openai.com.';
    },
  });
  try {
    const port = x.proxy.boundPort();
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'NOERROR');
    assert.equal(rcode(await ask(port, query('api.openai.com', 7))), 'NOERROR');
    // another question (the same name, another type: other question bytes) is judged on its own
    const aaaa = dnsPacket.encode({ id: 9, type: 'query', flags: dnsPacket.RECURSION_DESIRED, questions: [{ name: 'api.openai.com', type: 'AAAA' }] });
    assert.equal(rcode(await ask(port, aaaa)), 'NOERROR');
    assert.equal(rcode(await ask(port, query('evil.example'))), 'REFUSED');
    assert.equal(rcode(await ask(port, query('evil.example'))), 'REFUSED');
    assert.deepEqual(asked, ['256 api.openai.com.', '256 api.openai.com.', '256 evil.example.']);
    // the policy now denies the name: the snapshot that says so moves the revision
    allow = false;
    rev++;
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'REFUSED');
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'REFUSED');
    // the server's identity changes (a new revision): judged anew for the new identity
    allow = true;
    rev++;
    serverIdentity = 999;
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'REFUSED');
    // a decision that throws denies and is not kept
    serverIdentity = 256;
    rev++;
    throwNext = true;
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'REFUSED');
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'NOERROR');
    assert.deepEqual(asked.slice(3), ['256 api.openai.com.', '999 api.openai.com.', '256 api.openai.com.', '256 api.openai.com.']);
  } finally { await x.close(); }
});

test('without a revision (the agent\'s own proxy), every query is judged anew', async () => {
  let allow = true;
  let n = 0;
  const x = await setup({ decide: (_ep, _id, _p, _port, qname) => { n++; return allow && qname === 'api.openai.com.'; } });
  try {
    const port = x.proxy.boundPort();
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'NOERROR');
    allow = false;
    assert.equal(rcode(await ask(port, query('api.openai.com'))), 'REFUSED');
    assert.equal(n, 2);
  } finally { await x.close(); }
});

test('DNS over TCP (when a TCP slot is registered): allowed, REFUSED, FORMERR, held answers', async () => {
  const { createServer, connect } = await import('node:net');
  // TCP upstream answering api.openai.com
  const up = createServer((c) => {
    let b = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      b = Buffer.concat([b, d]);
      while (b.length >= 2 && b.length >= 2 + b.readUInt16BE(0)) {
        const q = dnsPacket.decode(b.subarray(2, 2 + b.readUInt16BE(0)));
        b = b.subarray(2 + b.readUInt16BE(0));
        c.write(dnsPacket.streamEncode({ id: q.id, type: 'response', questions: q.questions, answers: [{ name: 'api.openai.com', type: 'A', ttl: 30, data: '198.51.100.20' }] } as dnsPacket.Packet));
      }
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  const upPort = (up.address() as { port: number }).port;
  let held = 0;
  const registered: (number | null)[] = [];
  const x = await setup({ dnsPort: upPort, registerTcp: (fd) => registered.push(fd), onAnswer: () => { held++; return new Promise((r) => setTimeout(r, 30)); } });
  try {
    assert.ok(typeof registered[0] === 'number' && registered[0] > 0);
    const c = connect({ host: '127.0.0.1', port: x.proxy.boundPort() });
    const answers: dnsPacket.Packet[] = [];
    let b = Buffer.alloc(0);
    const got = new Promise<void>((resolve) => {
      c.on('data', (d: Buffer) => {
        b = Buffer.concat([b, d]);
        while (b.length >= 2 && b.length >= 2 + b.readUInt16BE(0)) {
          answers.push(dnsPacket.decode(b.subarray(2, 2 + b.readUInt16BE(0))));
          b = b.subarray(2 + b.readUInt16BE(0));
          if (answers.length === 3) resolve();
        }
      });
    });
    const frame = (m: Buffer) => { const h = Buffer.alloc(2); h.writeUInt16BE(m.length); return Buffer.concat([h, m]); };
    c.write(Buffer.concat([frame(query('api.openai.com', 1)), frame(query('evil.example', 2)), frame(Buffer.from('000301000001000000000000c00c00010001', 'hex'))]));
    await got;
    c.destroy();
    const byId = new Map(answers.map((a) => [a.id, a as dnsPacket.Packet & { rcode?: string }]));
    assert.equal(byId.get(2)?.rcode, 'REFUSED');
    assert.equal(byId.get(3)?.rcode, 'FORMERR');
    assert.deepEqual(byId.get(1)?.answers?.map((a) => (a as { data: string }).data), ['198.51.100.20']);
    assert.equal(held, 1);
    assert.ok(x.flows.some((f) => f.l4?.protocol.case === 'TCP' && f.isReply));
  } finally { await x.close(); up.close(); }
  assert.deepEqual(registered.at(-1), null, 'unregistered on stop');
});

test('attacker: a burst (read by recvmmsg in batches) with runts, oversized, cut and malformed datagrams among good queries: each judged alone, none of the bad ones forwarded', async () => {
  let upstreamSeen = 0;
  // the upstream's answers to the burst's 80 allowed queries may take longer than the file's 300 ms
  // timeout on a loaded machine: a query timed out would be a SERVFAIL the test did not expect
  const x = await setup({ upstreamTimeoutMs: 3000 }, (q) => {
    upstreamSeen++;
    return { type: 'response', flags: 0, questions: q.questions, answers: [{ name: q.questions![0]!.name, type: 'A', ttl: 30, data: '198.51.100.20' }] };
  });
  const c = createSocket('udp4');
  try {
    await new Promise<void>((r) => c.bind(0, '127.0.0.1', r));
    const replies = new Map<number, string>();
    let count = 0;
    c.on('message', (m) => { count++; const d = dnsPacket.decode(m); replies.set(d.id!, (d as { rcode?: string }).rcode ?? ''); });
    const port = x.proxy.boundPort();
    const expect = new Map<number, string>();
    const cut = Buffer.alloc(5000, 0);
    query('api.openai.com', 9001).copy(cut);
    const looped = Buffer.from('232a01000001000000000000c00c00010001', 'hex'); // id 9002, a name that is a compression loop
    let allowed = 0;
    for (let i = 0; i < 120; i++) {
      if (i % 10 === 3) c.send(Buffer.from([1, 2, 3]), port, '127.0.0.1'); // runt: dropped, no reply
      if (i === 40) { c.send(cut, port, '127.0.0.1'); expect.set(9001, 'FORMERR'); }
      if (i === 41) { c.send(Buffer.concat([query('api.openai.com', 9003), Buffer.alloc(600)]), port, '127.0.0.1'); expect.set(9003, 'FORMERR'); }
      if (i === 42) { c.send(looped, port, '127.0.0.1'); expect.set(9002, 'FORMERR'); }
      const ok = i % 3 !== 0;
      if (ok) allowed++;
      c.send(query(ok ? 'api.openai.com' : 'evil.example', i), port, '127.0.0.1');
      expect.set(i, ok ? 'NOERROR' : 'REFUSED');
    }
    const t0 = Date.now();
    while (replies.size < expect.size && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual([...replies].sort((a, b) => a[0] - b[0]), [...expect].sort((a, b) => a[0] - b[0]));
    assert.equal(count, expect.size, 'one reply per judged query, none for the runts');
    assert.equal(upstreamSeen, allowed, 'only the allowed queries went upstream');
    const st = x.proxy.stats();
    assert.deepEqual([st.allowed, st.denied, st.malformed], [allowed, 120 - allowed, 3 + 12]);
    assert.ok(st.batched > 50, `the burst went through recvmmsg (${st.batched} of ${st.queries} datagrams)`);
  } finally { c.close(); await x.close(); }
});

test('one query outstanding: the answer leaves before its records are handed over; every datagram is read by recvmmsg, quiet or in a burst', async () => {
  // the client's socket, to tell whether the answer was sent when each record is handed over
  const c = createSocket('udp4');
  await new Promise<void>((r) => c.bind(0, '127.0.0.1', r));
  const received: number[] = [];
  c.on('message', (m) => received.push(m.readUInt16BE(0)));
  // when the response record is handed over, the answer is in the client's socket already
  // (loopback delivers within sendmmsg): read it there, as the client would, with recvmmsg
  const fd = clientFd(c);
  const peek = new RecvBatch(4, 512);
  const inSocketAtRecord: boolean[] = [];
  const x = await setup({
    emit: (r) => {
      if (r.type !== 'response') return;
      const n = peek.recv(fd);
      for (let i = 0; i < n; i++) received.push(peek.data.readUInt16BE(peek.offset(i)));
      inSocketAtRecord.push(n > 0);
    },
  });
  try {
    const port = x.proxy.boundPort();
    const answered = (n: number) => new Promise<void>((res, rej) => {
      const t0 = Date.now();
      const tick = () => (received.length >= n ? res() : Date.now() - t0 > 3000 ? rej(new Error(`${received.length} of ${n} answers`)) : setTimeout(tick, 2));
      tick();
    });
    // quiet: one query at a time (the listener's and the upstream socket's drains find nothing)
    for (let i = 0; i < 6; i++) {
      c.send(query('api.openai.com', 100 + i), port, '127.0.0.1');
      await answered(i + 1);
    }
    // the first answer waits for its reply socket (bound on first use); the others leave in one sendmmsg
    assert.deepEqual(inSocketAtRecord.slice(1), [true, true, true, true, true], 'each answer left before its response record');
    // the sockets are watched (src/sys/udp-poll.ts): Node reads none of them, recvmmsg reads each
    // query and each answer, one call per wake-up and nothing more
    const quiet = x.proxy.stats();
    assert.equal(quiet.batched, 12, 'every query and answer read by recvmmsg, none by Node');
    assert.ok(quiet.recvCalls <= 24, `one read that finds it, at most one that finds nothing (${quiet.recvCalls} calls)`);
    // a burst: all of it through recvmmsg
    for (let i = 0; i < 200; i++) c.send(query('api.openai.com', 1000 + i), port, '127.0.0.1');
    await answered(206);
    assert.deepEqual(received.slice(6).sort((a, b) => a - b), Array.from({ length: 200 }, (_, i) => 1000 + i));
    const st = x.proxy.stats();
    assert.ok(st.batched > 100, `the burst after the quiet spell went through recvmmsg (${st.batched} of 200)`);
    assert.equal(st.allowed, 206);
  } finally { c.close(); await x.close(); }
});

test('attacker: a query whose original destination cannot be established is refused with a DROPPED flow and its reason, never judged or forwarded on a guess', async () => {
  let upstreamSeen = 0;
  let decided = 0;
  const x = await setup({
    originalDestination: () => ({ reason: 'ORIGINAL_DESTINATION_UNKNOWN: no egress conntrack entry for the query' }),
    decide: () => { decided++; return true; },
  }, (q) => { upstreamSeen++; return { type: 'response', flags: 0, questions: q.questions, answers: [] }; });
  try {
    assert.equal(await ask(x.proxy.boundPort(), query('api.openai.com'), 400), null, 'no reply from a guessed address');
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(upstreamSeen, 0);
    assert.equal(decided, 0);
    assert.equal(x.proxy.stats().noOrigDst, 1);
    assert.equal(x.flows.length, 1);
    assert.equal(x.flows[0]!.verdict, 2 /* DROPPED */);
    assert.match(x.flows[0]!.Summary, /^DNS Query api\.openai\.com\. A refused: ORIGINAL_DESTINATION_UNKNOWN: /);
  } finally { await x.close(); }
});

test('IPv6 (enable-ipv6): one proxy, both families: an IPv6 query is judged and answered from its IPv6 original destination, over UDP (batched) and TCP; the listeners go into the IPv6 slots; flows name the IPv6 ends', async () => {
  const { connect } = await import('node:net');
  const registered: string[] = [];
  const seen: { client: string; family: number }[] = [];
  const x = await setup({
    ipv6: true, host6: '::1',
    endpointByIp: (ip) => (ip === '127.0.0.1' || ip === '::1' ? EP : undefined),
    // the client's family is the destination's: the IPv6 client's query went to [::1]:53 (the reply socket binds it)
    originalDestination: (client) => { seen.push({ client: client.ip, family: client.family }); return client.family === 6 ? '::1' : '127.0.0.3'; },
    register: (fd, family) => registered.push(`udp${family}:${fd === null ? 'null' : 'fd'}`),
    registerTcp: (fd, family) => registered.push(`tcp${family}:${fd === null ? 'null' : 'fd'}`),
  });
  const c = createSocket({ type: 'udp6', ipv6Only: true });
  try {
    assert.deepEqual(registered, ['udp4:fd', 'tcp4:fd', 'udp6:fd', 'tcp6:fd']);
    await new Promise<void>((r) => c.bind(0, '::1', r));
    const replies = new Map<number, { rcode: string; from: string; data: string[] }>();
    c.on('message', (m, r) => {
      const d = dnsPacket.decode(m) as dnsPacket.Packet & { rcode?: string };
      replies.set(d.id!, { rcode: d.rcode ?? '', from: `${r.address}:${r.port}`, data: (d.answers ?? []).map((a) => String((a as { data: unknown }).data)) });
    });
    const port = x.proxy.boundPort();
    // a burst: the first through Node's read, the rest through recvmmsg (sockaddr_in6 sources)
    for (let i = 1; i <= 40; i++) c.send(query(i % 4 === 0 ? 'evil.example' : 'api.openai.com', i), port, '::1');
    const t0 = Date.now();
    while (replies.size < 40 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 20));
    assert.equal(replies.size, 40);
    for (const [id, r] of replies) {
      assert.equal(r.from, `::1:${x.up.port}`, 'answered from the original destination (IPv6), port 53 of the upstream');
      assert.deepEqual([r.rcode, r.data], id % 4 === 0 ? ['REFUSED', []] : ['NOERROR', ['198.51.100.20']], `query ${id}`);
    }
    assert.ok(seen.every((s) => s.client === '::1' && s.family === 6));
    assert.ok(x.proxy.stats().batched > 0, 'IPv6 datagrams were read by recvmmsg too');
    const drop = x.flows.find((f) => f.verdict === 2);
    assert.deepEqual([drop?.IP?.source, drop?.IP?.destination, drop?.IP?.ipVersion], ['::1', '::1', 2 /* IPv6 */], 'a DROPPED flow naming the IPv6 ends');
    // DNS over TCP on the IPv6 listener: REFUSED for the denied name (no upstream needed)
    const t = connect({ host: '::1', port });
    const answer = await new Promise<dnsPacket.Packet & { rcode?: string }>((resolve, reject) => {
      let b = Buffer.alloc(0);
      t.on('error', reject);
      t.on('data', (d: Buffer) => { b = Buffer.concat([b, d]); if (b.length >= 2 + b.readUInt16BE(0)) resolve(dnsPacket.decode(b.subarray(2, 2 + b.readUInt16BE(0)))); });
      const m = query('evil.example', 77);
      const h = Buffer.alloc(2); h.writeUInt16BE(m.length);
      t.write(Buffer.concat([h, m]));
    });
    t.destroy();
    assert.deepEqual([answer.id, answer.rcode], [77, 'REFUSED']);
    const tcpDrop = x.flows.find((f) => f.verdict === 2 && f.l4?.protocol.case === 'TCP');
    assert.equal(tcpDrop?.IP?.source, '::1', 'a DROPPED TCP DNS flow from the IPv6 client');
  } finally { c.close(); await x.close(); }
  assert.deepEqual(registered.slice(4).sort(), ['tcp4:null', 'tcp6:null', 'udp4:null', 'udp6:null'], 'every listener unregistered on stop');
});

/**
 * An answer whose records use a compression loop (a name pointing at itself, or forward): the
 * proxy cannot read its IPs, so it never forwards it (the client's parser might read IPs the
 * proxy never learned): SERVFAIL from the kept question instead, an ERROR flow without IPs, as
 * Cilium's proxy answers a response it cannot unpack. UDP and TCP.
 */
function loopedAnswer(query: Buffer, pointerAt: 'self' | 'forward'): Buffer {
  // header: the query's id, QR RD RA, one question, one answer; the question as asked; then a
  // record whose owner name is a pointer to itself (or past itself)
  const q = query.subarray(12);
  const h = Buffer.from([query[0]!, query[1]!, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
  const at = 12 + q.length;
  const ptr = pointerAt === 'self' ? at : at + 20;
  const rr = Buffer.from([0xc0 | (ptr >> 8), ptr & 255, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 198, 51, 100, 66]);
  return Buffer.concat([h, q, rr]);
}

test('attacker: an upstream answer with a compression loop is never forwarded: SERVFAIL from the kept question, an ERROR flow without IPs (UDP and TCP)', async () => {
  for (const pointerAt of ['self', 'forward'] as const) {
    const up = createSocket('udp4');
    up.on('message', (m, r) => up.send(loopedAnswer(m, pointerAt), r.port, r.address));
    await new Promise<void>((res) => up.bind(0, '127.0.0.1', res));
    let reported = 0;
    const x = await setup({ dnsPort: up.address().port, onAnswer: () => { reported++; return null; } });
    try {
      const r = await ask(x.proxy.boundPort(), query('api.openai.com', 0x0def));
      assert.ok(r, 'the client gets an answer');
      assert.equal(rcode(r), 'SERVFAIL');
      const d = dnsPacket.decode(r);
      assert.equal(d.id, 0x0def);
      assert.deepEqual(d.answers ?? [], [], 'none of the unreadable records reach the client');
      assert.deepEqual(d.questions, [{ name: 'api.openai.com', type: 'A', class: 'IN' }]);
      assert.equal(reported, 0, 'no IPs reported to the name manager');
      assert.equal(x.proxy.stats().servfail, 1);
      const resp = x.flows.find((f) => f.l7?.type === 2 /* RESPONSE */);
      assert.ok(resp);
      assert.equal(resp.verdict, Verdict.ERROR);
      assert.equal((resp.l7?.record.value as { rcode: number }).rcode, 2);
      assert.deepEqual((resp.l7?.record.value as { ips: string[] }).ips, []);
    } finally { await x.close(); up.close(); }
  }
  // TCP: the same answer over a TCP upstream
  const { createServer, connect } = await import('node:net');
  const tup = createServer((c) => {
    let b = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      b = Buffer.concat([b, d]);
      while (b.length >= 2 && b.length >= 2 + b.readUInt16BE(0)) {
        const a = loopedAnswer(b.subarray(2, 2 + b.readUInt16BE(0)), 'self');
        b = b.subarray(2 + b.readUInt16BE(0));
        const h = Buffer.alloc(2);
        h.writeUInt16BE(a.length);
        c.write(Buffer.concat([h, a]));
      }
    });
  });
  await new Promise<void>((r) => tup.listen(0, '127.0.0.1', r));
  const x = await setup({ dnsPort: (tup.address() as { port: number }).port, registerTcp: () => {} });
  try {
    const c = connect({ host: '127.0.0.1', port: x.proxy.boundPort() });
    const m = query('api.openai.com', 0x0abc);
    const h = Buffer.alloc(2);
    h.writeUInt16BE(m.length);
    const got = await new Promise<Buffer>((resolve) => {
      let b = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        b = Buffer.concat([b, d]);
        if (b.length >= 2 && b.length >= 2 + b.readUInt16BE(0)) resolve(b.subarray(2, 2 + b.readUInt16BE(0)));
      });
      c.write(Buffer.concat([h, m]));
    });
    c.destroy();
    assert.equal(rcode(got), 'SERVFAIL');
    assert.equal(dnsPacket.decode(got).id, 0x0abc);
    assert.deepEqual(dnsPacket.decode(got).answers ?? [], []);
    assert.ok(x.flows.some((f) => f.l4?.protocol.case === 'TCP' && f.isReply && f.verdict === Verdict.ERROR));
  } finally { await x.close(); tup.close(); }
});

/** An upstream that answers each name with its own address, every few ms' queries in reverse order (answers cross). */
async function crossingUpstream(ipOf: (name: string) => string): Promise<{ s: Socket; port: number; seen: () => number }> {
  const s = createSocket('udp4');
  let queue: { m: Buffer; port: number; address: string }[] = [];
  let timer: NodeJS.Timeout | undefined;
  let seen = 0;
  s.on('message', (m, r) => {
    seen++;
    queue.push({ m, port: r.port, address: r.address });
    timer ??= setTimeout(() => {
      timer = undefined;
      const batch = queue.reverse();
      queue = [];
      for (const { m: q, port, address } of batch) {
        s.send(compressedAnswer(q, ipOf(dnsPacket.decode(q).questions![0]!.name), 30), port, address);
      }
    }, 3);
  });
  await new Promise<void>((res) => s.bind(0, '127.0.0.1', res));
  return { s, port: s.address().port, seen: () => seen };
}

test('attacker: reused arenas, Pendings and borrowed records: two clients (then a third on the first one\'s port) interleave queries with the same ids; each gets only its own answers, and every response record pairs with its own request', async () => {
  const ipOf = (name: string) => `198.51.100.${Number(/^n(\d+)\./.exec(name)![1]) + 1}`;
  const up = await crossingUpstream(ipOf);
  // what the feed does with a borrowed record (src/proxy/feed/client.ts): reads its values during
  // the call and pairs a query's response with its request by the client peer object
  const open = new Map<object, { port: number; query: string }>();
  const wrong: string[] = [];
  const responses: string[] = [];
  const { proxy, close } = await setup({
    revision: () => 1,
    recordsBorrowed: true,
    decide: (_ep, _id, _p, _port, qname) => qname.endsWith('.test.'),
    emit: (r) => {
      if (r.type === 'request') { open.set(r.client, { port: r.client.port, query: r.query }); return; }
      const q = open.get(r.client);
      open.delete(r.client);
      if (!q || q.port !== r.client.port || q.query !== r.query) wrong.push(`response ${r.query} :${r.client.port} paired with ${q ? `${q.query} :${q.port}` : 'nothing'}`);
      if (r.ips?.join() !== ipOf(r.query.slice(0, -1))) wrong.push(`response ${r.query} with IPs ${r.ips?.join()}`);
      responses.push(`${r.client.port} ${r.query}`);
    },
    upstreamTimeoutMs: 3000,
  }, undefined, up);
  const port = proxy.boundPort();
  const got = new Map<Socket, string[]>();
  const client = async (at = 0): Promise<Socket> => {
    const s = createSocket('udp4');
    got.set(s, []);
    s.on('message', (m, r) => {
      const d = dnsPacket.decode(m);
      got.get(s)!.push(`${d.id} ${d.questions?.[0]?.name} ${(d.answers?.[0] as { data?: string } | undefined)?.data} ${r.address}`);
    });
    await new Promise<void>((res) => s.bind(at, '127.0.0.1', res));
    return s;
  };
  const want = (names: number[]) => names.map((k, i) => `${i + 1} n${k}.test ${ipOf(`n${k}.test`)} 127.0.0.3`).sort();
  const settle = async (n: () => number, of: number) => { const t0 = Date.now(); while (n() < of && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 10)); };
  const a = await client();
  const b = await client();
  let c: Socket | undefined;
  try {
    // the same ids 1..60 from both, interleaved, in bursts (recvmmsg batches, answers crossing)
    for (let i = 0; i < 60; i++) {
      a.send(query(`n${i}.test`, i + 1), port, '127.0.0.1');
      b.send(query(`n${100 + i}.test`, i + 1), port, '127.0.0.1');
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 5));
    }
    await settle(() => got.get(a)!.length + got.get(b)!.length, 120);
    const aPort = a.address().port;
    a.close();
    // a new client on the first one's port, same ids again, while b asks too
    c = await client(aPort);
    for (let i = 0; i < 40; i++) {
      c.send(query(`n${200 + i}.test`, i + 1), port, '127.0.0.1');
      b.send(query(`n${60 + i}.test`, 61 + i), port, '127.0.0.1');
    }
    await settle(() => got.get(b)!.length + got.get(c!)!.length, 140);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(got.get(a)!.sort(), want(Array.from({ length: 60 }, (_, i) => i)), 'the first client: its own names, ids and addresses, nothing else');
    assert.deepEqual(got.get(b)!.sort(), [...want(Array.from({ length: 60 }, (_, i) => 100 + i)), ...Array.from({ length: 40 }, (_, i) => `${61 + i} n${60 + i}.test ${ipOf(`n${60 + i}.test`)} 127.0.0.3`)].sort());
    assert.deepEqual(got.get(c)!.sort(), want(Array.from({ length: 40 }, (_, i) => 200 + i)), 'the client on the reused port: its own answers only');
    assert.deepEqual(wrong, []);
    assert.equal(responses.length, 200);
    assert.equal(open.size, 0, 'every request record was answered by its own response record');
    assert.equal(up.seen(), 200);
    assert.ok(proxy.stats().batched > 0, 'bursts went through recvmmsg');
  } finally {
    for (const s of [a, b, c]) try { s?.close(); } catch { /* closed */ }
    await close();
  }
});

/**
 * The answer to `q` a server with name compression sends (one A record owned by a pointer to the
 * question: the proxy's fast path, which dns-packet's encoder, never compressing, does not reach).
 */
function compressedAnswer(q: Buffer, ip: string, ttl: number): Buffer {
  const a = Buffer.alloc(q.length + 16);
  q.copy(a);
  a[2] = 0x81; a[3] = 0x80; // QR, RD; RA, NOERROR
  a.writeUInt16BE(1, 6); // one answer
  a.writeUInt16BE(0, 10); // nothing additional
  const o = q.length;
  a.writeUInt16BE(0xc00c, o); a.writeUInt16BE(1, o + 2); a.writeUInt16BE(1, o + 4); a.writeUInt32BE(ttl, o + 6); a.writeUInt16BE(4, o + 10);
  ip.split('.').forEach((x, i) => { a[o + 12 + i] = Number(x); });
  return a;
}

test('attacker: a held answer keeps its own facts: answers released while it waits never lend it their IPs or TTL', async () => {
  const addr: Record<string, string> = { 'held.example': '198.51.100.7', 'other.example': '203.0.113.9' };
  const upS = createSocket('udp4');
  upS.on('message', (m, r) => {
    const name = dnsPacket.decode(m).questions![0]!.name;
    upS.send(compressedAnswer(m, addr[name]!, name === 'held.example' ? 77 : 5), r.port, r.address);
  });
  await new Promise<void>((res) => upS.bind(0, '127.0.0.1', res));
  const up = { s: upS, port: upS.address().port };
  let release!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const told: string[] = [];
  const records: string[] = [];
  const proxy = createDNSProxy({
    nodeName: 'n1', port: 0, host: '127.0.0.1', dnsPort: up.port,
    endpointByIp: () => EP, originalDestination: () => '127.0.0.3', upstreamFor: () => '127.0.0.1', peerOf: () => ({ identity: 256 }),
    revision: () => 1, recordsBorrowed: true,
    decide: () => true,
    onAnswer: (_ep, qname, ips, ttl) => { told.push(`${qname} ${ips.join()} ${ttl}`); return qname === 'held.example.' ? held : null; },
    emit: (r) => { if (r.type === 'response') records.push(`${r.query} ${r.ips?.join()} ${r.ttl}`); },
  });
  await proxy.start();
  try {
    const port = proxy.boundPort();
    const first = ask(port, query('held.example', 1), 3000);
    const t0 = Date.now();
    while (told.length < 1 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
    for (let i = 0; i < 3; i++) assert.equal(rcode(await ask(port, query('other.example', 10 + i))), 'NOERROR');
    release();
    const r = await first;
    assert.ok(r);
    assert.deepEqual([(dnsPacket.decode(r).answers?.[0] as { data?: string }).data, dnsPacket.decode(r).id], ['198.51.100.7', 1]);
    assert.deepEqual(told, ['held.example. 198.51.100.7 77', ...Array(3).fill('other.example. 203.0.113.9 5')], 'the name manager is told each answer\'s own addresses');
    assert.deepEqual(records, [...Array(3).fill('other.example. 203.0.113.9 5'), 'held.example. 198.51.100.7 77'], 'the held answer\'s record carries its own facts');
  } finally { await proxy.stop(); up.s.close(); }
});

test('attacker: an upstream that refuses (ICMP port unreachable on the watched, connected socket) does not stop its answers being read once it is back', async () => {
  const x = await setup();
  const port = x.up.port;
  try {
    assert.equal(rcode(await ask(x.proxy.boundPort(), query('api.openai.com', 1))), 'NOERROR');
    // the upstream goes away: the next query draws ECONNREFUSED on the upstream socket (POLLERR,
    // which stops libuv's poll handle) and ends as SERVFAIL by the sweep
    x.up.s.close();
    assert.equal(rcode(await ask(x.proxy.boundPort(), query('api.openai.com', 2))), 'SERVFAIL');
    // back on the same port: its answers are read again
    const back = createSocket('udp4');
    back.on('message', (m, r) => {
      const q = dnsPacket.decode(m);
      back.send(dnsPacket.encode({ type: 'response', id: q.id, questions: q.questions, answers: [{ type: 'A', name: 'api.openai.com', ttl: 30, data: '198.51.100.21' }] }), r.port, r.address);
    });
    await new Promise<void>((res) => back.bind(port, '127.0.0.1', res));
    try {
      const r = await ask(x.proxy.boundPort(), query('api.openai.com', 3));
      assert.ok(r, 'answered once the upstream is back');
      assert.equal(rcode(r), 'NOERROR', 'its answer read (not the sweep\'s SERVFAIL)');
      assert.deepEqual(dnsPacket.decode(r).answers?.map((a) => (a as { data: string }).data), ['198.51.100.21']);
    } finally { back.close(); }
  } finally { await x.proxy.stop(); }
});

test('attacker: one clock reading per batch never leaks past it: a held answer\'s record has its own time and the latency of its hold, a slow answer the latency of its wait', async () => {
  const recs: { type: string; timeMs: number; latencyNs?: number; query: string }[] = [];
  const emit = (r: { type: string; timeMs: number; latencyNs?: number; query: string }) => recs.push({ type: r.type, timeMs: r.timeMs, latencyNs: r.latencyNs, query: r.query });
  // slow.example. answered 80 ms late by the upstream; api.openai.com. held 150 ms by onAnswer
  const up = await upstreamServer(() => null);
  up.s.removeAllListeners('message');
  up.s.on('message', (m, r) => {
    const q = dnsPacket.decode(m);
    const a = dnsPacket.encode({ type: 'response', id: q.id, flags: 0, questions: q.questions, answers: [{ name: q.questions![0]!.name, type: 'A', ttl: 30, data: '198.51.100.20' }] });
    setTimeout(() => up.s.send(a, r.port, r.address), q.questions![0]!.name === 'slow.example' ? 80 : 0);
  });
  const x = await setup({ emit, onAnswer: (_ep, qname) => (qname === 'api.openai.com.' ? new Promise<void>((res) => setTimeout(res, 150)) : null) }, undefined, up);
  try {
    assert.ok(await ask(x.proxy.boundPort(), query('api.openai.com')));
    assert.ok(await ask(x.proxy.boundPort(), query('slow.example')));
    await new Promise((res) => setTimeout(res, 20));
    const of = (q: string, t: string) => recs.find((r) => r.query === q && r.type === t)!;
    const heldReq = of('api.openai.com.', 'request'), heldRes = of('api.openai.com.', 'response');
    assert.ok(heldRes.latencyNs! >= 140e6, `held answer's latency ${heldRes.latencyNs! / 1e6} ms covers its 150 ms hold`);
    assert.ok(heldRes.timeMs - heldReq.timeMs >= 140, `held answer's record time ${heldRes.timeMs - heldReq.timeMs} ms after its request's`);
    const slow = of('slow.example.', 'response');
    assert.ok(slow.latencyNs! >= 70e6 && slow.latencyNs! < 1e9, `slow answer's latency ${slow.latencyNs! / 1e6} ms covers its 80 ms wait`);
    assert.ok(slow.timeMs - of('slow.example.', 'request').timeMs >= 70);
  } finally { await x.close(); }
});

test('attacker: bursts read on the coalescing timer (a backlog): two clients reusing the same ids each get exactly their own answers, truncated and runt datagrams among them are judged alone, and a lone query after the burst is answered at once', async () => {
  const x = await setup({ decide: () => true });
  const a = createSocket('udp4'), b = createSocket('udp4');
  await Promise.all([a, b].map((s) => new Promise<void>((r) => s.bind(0, '127.0.0.1', r))));
  try {
    const port = x.proxy.boundPort();
    const got = new Map<Socket, Map<number, string>>([[a, new Map()], [b, new Map()]]);
    for (const s of [a, b]) s.on('message', (m) => { const d = dnsPacket.decode(m); got.get(s)!.set(d.id!, `${(d as { rcode?: string }).rcode} ${d.questions?.[0]?.name ?? ''}`); });
    const N = 60;
    for (let round = 0; round < 3; round++) {
      for (const s of [a, b]) got.get(s)!.clear();
      // both clients, the same ids, interleaved, sent before the proxy's loop turns: a backlog
      for (let i = 1; i <= N; i++) {
        a.send(query(`a${i}.example`, i), port, '127.0.0.1');
        b.send(query(`b${i}.example`, i), port, '127.0.0.1');
        if (i % 20 === 0) { a.send(Buffer.from([1, 2, 3]), port, '127.0.0.1'); b.send(query(`b${i}.example`, i).subarray(0, 20), port, '127.0.0.1'); }
      }
      for (let t = 0; t < 200 && (got.get(a)!.size < N || got.get(b)!.size < N + 0); t++) await new Promise((r) => setTimeout(r, 10));
      for (const [s, name] of [[a, 'a'], [b, 'b']] as const) {
        const m = got.get(s)!;
        assert.equal(m.size, N, `client ${name} round ${round}: ${m.size} answers`);
        for (let i = 1; i <= N; i++) {
          // b's cut copies (same id) may answer FORMERR first or after: the NOERROR answer names b's own question
          const v = m.get(i)!;
          assert.ok(v === `NOERROR ${name}${i}.example` || (name === 'b' && i % 20 === 0 && v.startsWith('FORMERR')), `client ${name} id ${i}: ${v}`);
        }
      }
    }
    const st = x.proxy.stats();
    assert.ok(st.timerReads > 0, `the backlog was read on the timer (${st.timerReads} reads, ${st.batched} datagrams in ${st.recvCalls} recvmmsg)`);
    assert.equal(st.malformed, 18, 'every runt and cut query judged alone');
    // the watch is back: a lone query is answered without waiting for a backlog
    const t0 = performance.now();
    assert.equal(rcode(await ask(port, query('api.openai.com', 7))), 'NOERROR');
    assert.ok(performance.now() - t0 < 200, `lone query after the burst answered in ${(performance.now() - t0).toFixed(1)} ms`);
  } finally { a.close(); b.close(); await x.close(); }
});
