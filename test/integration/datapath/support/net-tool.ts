// Traffic helper run inside a namespace (test-only):
//   serve <port,...> [udpPort,...]    TCP echo servers (+ UDP echo), prints "ready"
//   serve6 <port,...> [udpport,...]   TCP (and UDP) echo servers on IPv6 (::, IPv6 only), prints "ready"
//   connect <ip> <port> <timeoutMs>   prints {"ok":bool,"err":...}
//   udp <ip> <port> <timeoutMs>       connected UDP datagram; {"ok":bool,"err":"ECONNREFUSED"|...}
//   read <ip> <port> <timeoutMs>      prints the first line the server sends
//   hold <ip> <port>                  keeps a TCP connection; each stdin line -> echo round trip, prints "pong" | "fail"
//   pushserve <port> <ctlPort>        server push: a line on ctlPort makes the server write "tick" to every
//                                     connection on <port> (and answer "ok"); prints "ready"
//   ticks <ip> <port>                 prints "connected", then "tick" for every tick the server pushes
//   poke <ip> <port>                  one line to a pushserve control port; {"ok":bool}
//   udpbig <ip> <port> <bytes> <ms>   one datagram of <bytes> (fragmented by the kernel when larger than the MTU);
//                                     {"ok":bool} when an echo of the same size came back
import { createServer, connect } from 'node:net';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const [mode, ...a] = process.argv.slice(2);

if (mode === 'serve6') {
  const tcp = (a[0] ?? '').split(',').filter(Boolean).map(Number);
  const udp = (a[1] ?? '').split(',').filter(Boolean).map(Number);
  let pending = tcp.length + udp.length;
  const ready = () => { if (--pending === 0) console.log('ready'); };
  for (const p of tcp) createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen({ port: p, host: '::', ipv6Only: true }, ready);
  for (const p of udp) {
    const s = createSocket({ type: 'udp6', ipv6Only: true });
    s.on('message', (m, r) => s.send(m, r.port, r.address));
    s.bind(p, '::', ready);
  }
} else if (mode === 'serve') {
  const tcp = (a[0] ?? '').split(',').filter(Boolean).map(Number);
  const udp = (a[1] ?? '').split(',').filter(Boolean).map(Number);
  let pending = tcp.length + udp.length;
  const ready = () => { if (--pending === 0) console.log('ready'); };
  for (const p of tcp) createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(p, '0.0.0.0', ready);
  for (const p of udp) {
    const s = createSocket('udp4');
    s.on('message', (m, r) => s.send(m, r.port, r.address));
    s.bind(p, '0.0.0.0', ready);
  }
  if (pending === 0) console.log('ready');
} else if (mode === 'connect') {
  const [ip, port, to] = a;
  const s = connect({ host: ip!, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); console.log(JSON.stringify({ ok: false, err: 'timeout' })); process.exit(0); }, Number(to ?? 600));
  s.once('connect', () => { clearTimeout(t); s.destroy(); console.log(JSON.stringify({ ok: true })); process.exit(0); });
  s.once('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); console.log(JSON.stringify({ ok: false, err: e.code })); process.exit(0); });
} else if (mode === 'read') {
  // connect and print the first line the server sends: {"ok":bool,"line":...}
  const [ip, port, to] = a;
  const s = connect({ host: ip!, port: Number(port) });
  let buf = '';
  const t = setTimeout(() => { s.destroy(); console.log(JSON.stringify({ ok: false, err: 'timeout' })); process.exit(0); }, Number(to ?? 1000));
  s.on('data', (d) => { buf += d.toString(); if (buf.includes('\n')) { clearTimeout(t); console.log(JSON.stringify({ ok: true, line: buf.trim() })); process.exit(0); } });
  s.once('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); console.log(JSON.stringify({ ok: false, err: e.code })); process.exit(0); });
} else if (mode === 'udp') {
  const [ip, port, to] = a;
  const s = createSocket(ip!.includes(':') ? 'udp6' : 'udp4');
  const done = (ok: boolean, err?: string) => { console.log(JSON.stringify({ ok, err })); process.exit(0); };
  setTimeout(() => done(false, 'timeout'), Number(to ?? 800));
  s.on('message', () => done(true));
  s.on('error', (e: NodeJS.ErrnoException) => done(false, e.code));
  s.connect(Number(port), ip!, () => {
    s.send('x');
    setTimeout(() => s.send('y', (e) => { if (e) done(false, (e as NodeJS.ErrnoException).code); }), 150);
  });
} else if (mode === 'pushserve') {
  const conns = new Set<import('node:net').Socket>();
  let n = 0;
  const data = createServer((s) => { conns.add(s); s.on('error', () => {}); s.on('close', () => conns.delete(s)); });
  const ctl = createServer((s) => {
    s.on('error', () => {});
    s.on('data', () => { for (const c of conns) c.write('tick\n'); s.end('ok\n'); });
  });
  data.listen(Number(a[0]), '0.0.0.0', () => { if (++n === 2) console.log('ready'); });
  ctl.listen(Number(a[1]), '0.0.0.0', () => { if (++n === 2) console.log('ready'); });
} else if (mode === 'ticks') {
  const [ip, port] = a;
  const s = connect({ host: ip!, port: Number(port) });
  s.on('error', () => console.log('closed'));
  s.once('connect', () => console.log('connected'));
  createInterface({ input: s }).on('line', (l) => console.log(l));
  s.on('close', () => { console.log('closed'); process.exit(0); });
} else if (mode === 'poke') {
  const [ip, port] = a;
  const s = connect({ host: ip!, port: Number(port) });
  const t = setTimeout(() => { console.log(JSON.stringify({ ok: false })); process.exit(0); }, 2000);
  s.on('error', () => { clearTimeout(t); console.log(JSON.stringify({ ok: false })); process.exit(0); });
  s.once('connect', () => s.write('tick\n'));
  s.on('data', () => { clearTimeout(t); console.log(JSON.stringify({ ok: true })); process.exit(0); });
} else if (mode === 'udpbig') {
  const [ip, port, size, to] = a;
  const s = createSocket('udp4');
  const n = Number(size);
  const done = (ok: boolean, err?: string) => { console.log(JSON.stringify({ ok, err })); process.exit(0); };
  setTimeout(() => done(false, 'timeout'), Number(to ?? 1500));
  s.on('message', (m) => { if (m.length === n) done(true); });
  s.on('error', (e: NodeJS.ErrnoException) => done(false, e.code));
  s.send(Buffer.alloc(n, 0x61), Number(port), ip!);
} else if (mode === 'hold') {
  const [ip, port] = a;
  const s = connect({ host: ip!, port: Number(port) });
  s.on('error', () => { console.log('fail'); });
  s.once('connect', () => console.log('connected'));
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const t = setTimeout(() => { s.removeAllListeners('data'); console.log('fail'); }, 1500);
    s.once('data', () => { clearTimeout(t); console.log('pong'); });
    s.write(line + '\n');
  });
  rl.on('close', () => { s.destroy(); process.exit(0); });
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
