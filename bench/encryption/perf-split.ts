// Where a unit of work's CPU goes, component by component, from the perf -a -g files that
// `bench/encryption/run.ts --perf DIR --perf-split on [--perf-measure crr]` leaves in DIR (one per
// turn of the last round, perf enabled exactly for the measure's run, and meta.json with each
// path's units and machine CPU in those turns). A sample is its period of one CPU (cpu-clock at 4
// kHz: 250 µs); samples in the idle loop are left out, and a component's µs per unit is its samples'
// time over the units of the turns (perf was enabled for exactly the measure's runs; the machine's
// busy µs per unit from /proc/stat, over a slightly wider window, is printed beside it as a check).
// Components are inclusive (a sample counts for
// every listed frame on its stack: TUN write holds its softirq's GRO, from_wireguard and the pod's
// TCP), so rows overlap; the context rows (by the sampled task) partition the total.
// Given two DIRs (e.g. a native lab's and a tunnel lab's), a last column is B − A for membrane's
// encrypted path (--pair: another path), and the leaf functions whose self time moved most are listed.
//   bin/node bench/encryption/perf-split.ts DIR_A [DIR_B] [--paths wg-bare,membrane-wg] [--pair membrane-wg]
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { paths: { type: 'string', default: 'wg-bare,wg-bare-pods,membrane-wg' }, pair: { type: 'string', default: 'membrane-wg' } } });
if (positionals.length < 1 || positionals.length > 2) throw new Error('usage: perf-split.ts DIR_A [DIR_B] [--paths a,b]');
const PATHS = values.paths.split(',');

/** inclusive components: label, and the frame names that put a sample in it */
const INCLUSIVE: [string, RegExp][] = [
  ['syscalls (do_syscall_64)', /^do_syscall_64$/],
  ['TUN write (tun_get_user: its softirq\'s NAPI, GRO, tc, the pod\'s TCP)', /^tun_get_user$/],
  ['  TUN NAPI poll (tun_napi_poll)', /^tun_napi_poll$/],
  ['  GRO receive (gro_receive_skb / dev_gro_receive)', /^(gro_receive_skb|dev_gro_receive|napi_gro_receive)$/],
  ['    UDP GRO, VXLAN\'s handler (udp4_gro_receive)', /^udp4_gro_receive$/],
  ['    vxlan_gro_receive', /^vxlan_gro_receive$/],
  ['  GRO complete/flush (napi_gro_complete, gro_flush)', /^(napi_gro_complete|gro_complete|__napi_gro_flush_chain|napi_gro_flush|gro_flush|__gro_flush)$/],
  ['TUN read (tun_chr_read_iter)', /^tun_chr_read_iter$/],
  ['TUN xmit (tun_net_xmit)', /^tun_net_xmit$/],
  ['UDP send (udp_sendmsg: the underlay veth, the peer\'s socket)', /^udp_sendmsg$/],
  ['UDP receive (udp_recvmsg)', /^udp_recvmsg$/],
  ['NET_RX softirq (net_rx_action)', /^net_rx_action$/],
  ['  backlog (process_backlog: veths)', /^process_backlog$/],
  ['  __netif_receive_skb_core', /^__netif_receive_skb_core/],
  ['tc ingress/egress (tcx_run, sch_handle_*)', /^(tcx_run|sch_handle_ingress|sch_handle_egress|tcf_classify)$/],
  ['skb_do_redirect (bpf_redirect/_peer)', /^skb_do_redirect$/],
  ['bpf_skb_adjust_room', /^bpf_skb_adjust_room$|^bpf_skb_net_(grow|shrink)$/],
  ['eBPF events (bpf_perf_event_output / ringbuf)', /^(bpf_perf_event_output|bpf_skb_event_output|bpf_ringbuf_\w+|perf_event_output)$/],
  ['cilium_vxlan xmit (vxlan_xmit)', /^vxlan_xmit$/],
  ['cilium_vxlan receive (vxlan_rcv)', /^vxlan_rcv$/],
  ['veth_xmit', /^veth_xmit$/],
  ['__dev_queue_xmit', /^__dev_queue_xmit$/],
  ['ip_rcv', /^ip_rcv$/],
  ['ip_forward', /^ip_forward$/],
  ['ip_output / ip_finish_output2', /^(ip_output|ip_finish_output2)$/],
  ['netfilter (nf_hook_slow)', /^nf_hook_slow$/],
  ['TCP receive (tcp_v4_rcv)', /^tcp_v4_rcv$/],
  ['TCP connect (tcp_v4_connect, __inet_stream_connect)', /^(tcp_v4_connect|__inet_stream_connect)$/],
  ['TCP send (tcp_sendmsg)', /^tcp_sendmsg$/],
  ['TCP close (tcp_close, inet_release)', /^(tcp_close|__tcp_close|inet_release)$/],
  ['TCP accept (inet_csk_accept)', /^inet_csk_accept$/],
  ['TCP recv (tcp_recvmsg)', /^tcp_recvmsg$/],
  ['socket alloc/free (sk_alloc, __sk_destruct, sock_alloc_file)', /^(sk_alloc|__sk_destruct|sk_destruct|sock_alloc_file|__sock_release|sk_clone_lock|inet_csk_clone_lock)$/],
  ['scheduler (schedule, __schedule)', /^(schedule|__schedule)$/],
  ['wake-ups (try_to_wake_up)', /^try_to_wake_up$/],
  ['futex', /^(do_futex|__x64_sys_futex)$/],
  ['epoll (do_epoll_wait, ep_poll)', /^(do_epoll_wait|ep_poll)$/],
  ['nanosleep', /^(hrtimer_nanosleep|__x64_sys_nanosleep|__x64_sys_clock_nanosleep)$/],
  ['timer interrupt (hrtimer_interrupt)', /^(hrtimer_interrupt|__sysvec_apic_timer_interrupt)$/],
  ['memory (kmem_cache_*, __kmalloc, kfree, skb alloc/free)', /^(kmem_cache_alloc\w*|kmem_cache_free|__kmalloc\w*|kfree|__alloc_skb|kfree_skb\w*|skb_release_\w+|consume_skb|sk_skb_reason_drop|napi_skb_cache_get|__napi_alloc_skb|__slab_free|___slab_alloc)$/],
  ['copies and checksums (copy_user, memcpy, csum_partial)', /^(rep_movs_alternative|copy_user_generic\w*|_copy_to_iter|_copy_from_iter|memcpy\w*|__memcpy\w*|memmove|csum_partial\w*|skb_copy_and_csum_datagram\w*|csum_and_copy\w*)$/],
];
const IDLE = /^(default_idle|pv_native_safe_halt|native_safe_halt|acpi_idle_\w+|cpuidle_enter\w*|intel_idle\w*|mwait_idle\w*|poll_idle|cpu_idle_poll\w*|default_idle_call|do_idle)$/;
const BUSY_IN_IDLE = /irq|softirq|net_rx_action|napi|hrtimer/;

/** the task a sample ran in, by its comm */
function context(comm: string): string {
  if (comm === 'wireguard-go') return 'wireguard-go (both nodes)';
  if (comm.startsWith('mbr-bench-rr')) return 'client and server (rr)';
  if (/^swapper/.test(comm)) return 'the idle task (softirq, timers)';
  if (/^ksoftirqd/.test(comm)) return 'ksoftirqd';
  if (/^(node|V8|libuv|MainThread)/.test(comm) || comm === 'node-agent') return 'Node (the agents)';
  if (/^kworker|^napi\//.test(comm)) return 'kernel workers (kworker, napi/)';
  if (comm === 'perf') return 'perf';
  if (comm === 'iperf3') return 'iperf3';
  return 'other';
}

interface Tally { busy: number; idle: number; ctx: Map<string, number>; incl: Map<string, number>; leaf: Map<string, number> }
const add = (m: Map<string, number>, k: string, n: number) => m.set(k, (m.get(k) ?? 0) + n);

async function tallyFile(file: string, t: Tally): Promise<void> {
  const p = spawn('perf', ['script', '-i', file, '-F', 'comm,tid,cpu,period,ip,sym'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const rl = createInterface({ input: p.stdout });
  let comm = '', period = 0, frames: string[] = [];
  const flush = () => {
    if (!comm) return;
    const n = period / 1000; // µs of CPU
    const syms = frames.map((f) => f.trim().split(/\s+/).slice(1).join(' '));
    if (syms.some((s) => IDLE.test(s)) && !syms.some((s) => BUSY_IN_IDLE.test(s))) { t.idle += n; comm = ''; return; }
    t.busy += n;
    add(t.ctx, context(comm), n);
    const leafAddr = frames[0]?.trim().split(/\s+/)[0] ?? '';
    const user = !/^ffff/.test(leafAddr);
    add(t.leaf, user ? `[user] ${context(comm)}` : syms[0] ?? '?', n);
    if (user) add(t.incl, `user space (${context(comm)})`, n);
    const seen = new Set<string>();
    for (const s of syms) {
      const bpf = /^bpf_prog_[0-9a-f]+_(\w+)/.exec(s);
      if (bpf) seen.add(`  eBPF ${bpf[1]}`);
      for (const [label, re] of INCLUSIVE) if (re.test(s)) seen.add(label);
    }
    if ([...seen].some((l) => l.startsWith('  eBPF '))) seen.add('eBPF programs (all, with their helpers)');
    for (const l of seen) add(t.incl, l, n);
    comm = '';
  };
  for await (const line of rl) {
    if (!line.startsWith('\t') && !line.startsWith(' ') && line.trim()) {
      flush();
      const m = /^(.+?)\s+\d+\s+\[\d+\]\s+(\d+)\s*$/.exec(line);
      if (m) { comm = m[1]!.trim(); period = Number(m[2]); frames = []; }
    } else if (line.trim()) frames.push(line);
    else flush();
  }
  flush();
  if (p.exitCode === null) await new Promise((r) => p.once('exit', r));
}

interface Meta { mode: string; measure: string; paths: Record<string, { files: string[]; units: number; machineUs: number }> }
interface Column { label: string; perUnit: (m: Map<string, number>, k: string) => number; t: Tally; usPerUnit: number; samplesUs: number }

const cols: Column[] = [];
for (const dir of positionals) {
  const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as Meta;
  for (const path of PATHS) {
    const pm = meta.paths[path];
    if (!pm) continue;
    const t: Tally = { busy: 0, idle: 0, ctx: new Map(), incl: new Map(), leaf: new Map() };
    for (const f of pm.files) await tallyFile(join(dir, basename(f)), t);
    // perf was enabled for exactly the measure's runs: its samples over the units they made
    cols.push({ label: `${meta.mode} ${path}`, t, usPerUnit: pm.machineUs / pm.units, samplesUs: t.busy / pm.units, perUnit: (m, k) => (m.get(k) ?? 0) / pm.units });
  }
}
const PAIR = values.pair;
const pairs = positionals.length === 2 ? cols.filter((c) => c.label.endsWith(` ${PAIR}`)) : [];
const diff = pairs.length === 2;
const fmt = (x: number) => x.toFixed(1);
const row = (label: string, f: (c: Column) => number) => `| ${label} | ${cols.map((c) => fmt(f(c))).join(' | ')}${diff ? ` | ${fmt(f(pairs[1]!) - f(pairs[0]!))}` : ''} |`;
const head = `| µs per unit | ${cols.map((c) => c.label).join(' | ')}${diff ? ` | ${pairs[1]!.label.split(' ')[0]} − ${pairs[0]!.label.split(' ')[0]} (${PAIR}) |` : ' |'}`;
const sep = `|---|${cols.map(() => '---|').join('')}${diff ? '---|' : ''}`;
const lines: string[] = [head, sep, row('machine busy (/proc/stat)', (c) => c.usPerUnit), row('perf\'s busy samples (sampled µs per unit)', (c) => c.samplesUs)];
lines.push(`| **by task** |${cols.map(() => ' |').join('')}${diff ? ' |' : ''}`);
const ctxKeys = [...new Set(cols.flatMap((c) => [...c.t.ctx.keys()]))].sort();
for (const k of ctxKeys) lines.push(row(k, (c) => c.perUnit(c.t.ctx, k)));
lines.push(`| **by component (inclusive, rows overlap)** |${cols.map(() => ' |').join('')}${diff ? ' |' : ''}`);
const inclKeys = [...INCLUSIVE.map(([l]) => l), 'eBPF programs (all, with their helpers)', ...[...new Set(cols.flatMap((c) => [...c.t.incl.keys()]))].filter((k) => k.startsWith('  eBPF ') || k.startsWith('user space')).sort()];
for (const k of inclKeys) if (cols.some((c) => (c.t.incl.get(k) ?? 0) > 0)) lines.push(row(k, (c) => c.perUnit(c.t.incl, k)));
console.log(lines.join('\n'));
// the leaf functions whose self time differs most: between the two labs' membrane paths, or
// within one lab between --pair's path and the first path (bare)
const [a, b] = diff ? [pairs[0]!, pairs[1]!] : [cols[0]!, cols.find((c) => c.label.endsWith(` ${PAIR}`)) ?? cols.at(-1)!];
const leaves = [...new Set([...a.t.leaf.keys(), ...b.t.leaf.keys()])].map((k) => ({ k, d: b.perUnit(b.t.leaf, k) - a.perUnit(a.t.leaf, k), a: a.perUnit(a.t.leaf, k), b: b.perUnit(b.t.leaf, k) }));
leaves.sort((x, y) => Math.abs(y.d) - Math.abs(x.d));
console.log(`\nSelf time (leaf function) that moved most, ${b.label} − ${a.label}, µs per unit: ${leaves.slice(0, 30).map((l) => `${l.k} ${l.d >= 0 ? '+' : ''}${fmt(l.d)} (${fmt(l.a)} → ${fmt(l.b)})`).join('; ')}`);
