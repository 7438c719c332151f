/**
 * libbpf through koffi (spec/datapath-from-node.md §2): BPF objects, maps with Buffer keys and
 * values, pinned tcx links, program run statistics. The only module that calls into libbpf.
 * libbpf 1.x returns -errno from int functions and NULL + errno from pointer functions; every
 * failure becomes a MembraneError with a stable code.
 */
import koffi from 'koffi';
import { constants as osConstants } from 'node:os';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MembraneError } from '../common/errors.ts';
import { errnoName } from './errno.ts';
import { mapShared, PROT_READ, PROT_WRITE, type SharedMapping } from './mmap.ts';

// ---------------------------------------------------------------- declarations

const libbpf = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');
koffi.opaque('bpf_object');
koffi.opaque('bpf_program');
koffi.opaque('bpf_map');

const openOpts = koffi.struct('mb_bpf_object_open_opts', {
  sz: 'size_t', object_name: 'const char *', relaxed_maps: 'bool', pin_root_path: 'const char *',
  _removed_attach_prog_fd: 'uint32_t', kconfig: 'const char *', btf_custom_path: 'const char *',
  kernel_log_buf: 'void *', kernel_log_size: 'size_t', kernel_log_level: 'uint32_t',
});
const batchOpts = koffi.struct('mb_bpf_map_batch_opts', { sz: 'size_t', elem_flags: 'uint64_t', flags: 'uint64_t' });
koffi.proto('int mb_libbpf_print_fn_t(int level, const char *fmt, void *ap)');
const mapCreateOpts = koffi.struct('mb_bpf_map_create_opts', {
  sz: 'size_t', btf_fd: 'uint32_t', btf_key_type_id: 'uint32_t', btf_value_type_id: 'uint32_t', btf_vmlinux_value_type_id: 'uint32_t',
  inner_map_fd: 'uint32_t', map_flags: 'uint32_t', map_extra: 'uint64_t', numa_node: 'uint32_t', map_ifindex: 'uint32_t',
});

const f = {
  open: libbpf.func('bpf_object *bpf_object__open_file(const char *path, const mb_bpf_object_open_opts *opts)'),
  load: libbpf.func('int bpf_object__load(bpf_object *obj)'),
  close: libbpf.func('void bpf_object__close(bpf_object *obj)'),
  findProg: libbpf.func('bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)'),
  findMap: libbpf.func('bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)'),
  progFd: libbpf.func('int bpf_program__fd(const bpf_program *prog)'),
  mapFd: libbpf.func('int bpf_map__fd(const bpf_map *map)'),
  setPrint: libbpf.func('void *libbpf_set_print(mb_libbpf_print_fn_t *fn)'),
  ncpus: libbpf.func('int libbpf_num_possible_cpus(void)'),
  update: libbpf.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  lookup: libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  del: libbpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
  nextKey: libbpf.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
  updateBatch: libbpf.func('int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const mb_bpf_map_batch_opts *opts)'),
  deleteBatch: libbpf.func('int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const mb_bpf_map_batch_opts *opts)'),
  lookupBatch: libbpf.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const mb_bpf_map_batch_opts *opts)'),
  pin: libbpf.func('int bpf_obj_pin(int fd, const char *pathname)'),
  get: libbpf.func('int bpf_obj_get(const char *pathname)'),
  linkCreate: libbpf.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)'),
  linkUpdate: libbpf.func('int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)'),
  info: libbpf.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *info_len)'),
  enableStats: libbpf.func('int bpf_enable_stats(int type)'),
  mapCreate: libbpf.func('int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const mb_bpf_map_create_opts *opts)'),
  mapFdById: libbpf.func('int bpf_map_get_fd_by_id(uint32_t id)'),
  progFdById: libbpf.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
  nextMap: libbpf.func('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)'),
  mapName: libbpf.func('const char *bpf_map__name(const bpf_map *map)'),
  mapPinPath: libbpf.func('const char *bpf_map__pin_path(const bpf_map *map)'),
  mapType: libbpf.func('int bpf_map__type(const bpf_map *map)'),
  mapKeySize: libbpf.func('uint32_t bpf_map__key_size(const bpf_map *map)'),
  mapValueSize: libbpf.func('uint32_t bpf_map__value_size(const bpf_map *map)'),
  mapMaxEntries: libbpf.func('uint32_t bpf_map__max_entries(const bpf_map *map)'),
  mapFlags: libbpf.func('uint32_t bpf_map__map_flags(const bpf_map *map)'),
  innerMap: libbpf.func('bpf_map *bpf_map__inner_map(bpf_map *map)'),
  closeFd: libc.func('int close(int fd)'),
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *ifname)'),
  statfs: libc.func('int statfs(const char *path, void *buf)'),
  mount: libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)'),
  vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *ap)'),
};

export { errnoName };

/** Thrown for every libbpf / bpf(2) failure; `errno` is positive. */
export class BpfError extends MembraneError {
  readonly errno: number;
  constructor(code: string, message: string, errno: number, hint?: string) {
    super(code, `${message}: ${errnoName(errno)}`, hint ? { hint } : {});
    this.errno = Math.abs(errno);
  }
}

function check(rc: number, code: string, what: string, hint?: string): number {
  if (rc < 0) throw new BpfError(code, what, -rc, hint);
  return rc;
}

export const ENOENT = osConstants.errno.ENOENT;

// ---------------------------------------------------------------- libbpf log

type LogSink = (level: 'warn' | 'info' | 'debug', msg: string) => void;
let logSink: LogSink | null = null;
let printCb: unknown = null;
const printBuf = Buffer.alloc(1024);

/** Routes libbpf's own log (verifier errors, pinning) to `sink` (x86-64: va_list is a pointer). */
export function setLibbpfLogger(sink: LogSink | null): void {
  logSink = sink;
  if (printCb === null) {
    printCb = koffi.register((level: number, fmt: string, ap: unknown) => {
      if (!logSink) return 0;
      const n = f.vsnprintf(printBuf, printBuf.length, fmt, ap) as number;
      const msg = printBuf.subarray(0, Math.max(0, Math.min(n, printBuf.length - 1))).toString('utf8').trimEnd();
      logSink(level === 0 ? 'warn' : level === 1 ? 'info' : 'debug', msg);
      return 0;
    }, koffi.pointer('mb_libbpf_print_fn_t'));
    f.setPrint(printCb);
  }
}

// ---------------------------------------------------------------- bpffs

const BPF_FS_MAGIC = 0xcafe4a11;

/** Mounts bpffs at /sys/fs/bpf when it is not one already (as Cilium's agent does). */
export function ensureBpffs(root = '/sys/fs/bpf'): void {
  const buf = Buffer.alloc(128);
  if (f.statfs(root, buf) === 0 && buf.readUInt32LE(0) === BPF_FS_MAGIC) return;
  mkdirSync(root, { recursive: true });
  if (f.mount('bpf', root, 'bpf', 0, null) !== 0) {
    throw new BpfError('BPF_FS_MOUNT', `mount bpffs at ${root}`, koffi.errno(), 'run as root; or mount it: mount -t bpf bpf /sys/fs/bpf');
  }
}

export function isOnBpffs(path: string): boolean {
  const buf = Buffer.alloc(128);
  return f.statfs(path, buf) === 0 && buf.readUInt32LE(0) === BPF_FS_MAGIC;
}

export function closeFd(fd: number): void {
  if (fd >= 0) f.closeFd(fd);
}

/** Interface index of `ifname` in the calling thread's network namespace; 0 if absent. */
export function ifNameToIndex(ifname: string): number {
  return f.ifNameToIndex(ifname) as number;
}

export function numPossibleCpus(): number {
  return f.ncpus() as number;
}

// ---------------------------------------------------------------- maps

/** BPF map types we care about (uapi enum bpf_map_type). */
export const MapType = {
  HASH: 1, ARRAY: 2, PERCPU_HASH: 5, PERCPU_ARRAY: 6, LRU_HASH: 9, LPM_TRIE: 11, ARRAY_OF_MAPS: 12, HASH_OF_MAPS: 13, SOCKMAP: 15, RINGBUF: 27,
} as const;

export interface MapInfo { type: number; id: number; keySize: number; valueSize: number; maxEntries: number; flags: number; name: string }

export function mapInfo(fd: number): MapInfo {
  const buf = Buffer.alloc(88);
  const len = [buf.length];
  check(f.info(fd, buf, len) as number, 'BPF_MAP_INFO', `map info of fd ${fd}`);
  const name = buf.subarray(24, 40);
  return {
    type: buf.readUInt32LE(0), id: buf.readUInt32LE(4), keySize: buf.readUInt32LE(8), valueSize: buf.readUInt32LE(12),
    maxEntries: buf.readUInt32LE(16), flags: buf.readUInt32LE(20), name: name.subarray(0, Math.max(0, name.indexOf(0))).toString(),
  };
}

/** A map by fd with Buffer keys and values (zero-copy into bpf(2)). */
export class BpfMap {
  readonly name: string;
  readonly fd: number;
  readonly info: MapInfo;
  readonly percpu: boolean;
  /** Size of the value buffer a lookup needs (per-CPU maps: rounded value × possible CPUs). */
  readonly valueBufSize: number;
  private readonly ownsFd: boolean;

  constructor(name: string, fd: number, ownsFd = false) {
    this.name = name;
    this.fd = fd;
    this.ownsFd = ownsFd;
    this.info = mapInfo(fd);
    this.percpu = this.info.type === MapType.PERCPU_ARRAY || this.info.type === MapType.PERCPU_HASH;
    this.valueBufSize = this.percpu ? ((this.info.valueSize + 7) & ~7) * numPossibleCpus() : this.info.valueSize;
  }

  /** Opens a pinned map (the caller closes it). */
  static fromPin(path: string): BpfMap {
    const fd = check(f.get(path) as number, 'BPF_OBJ_GET', `open pinned map ${path}`);
    return new BpfMap(path, fd, true);
  }

  /** Opens a map by id, e.g. the inner map a map-in-map lookup names (the caller closes it). */
  static fromId(id: number, name = `map#${id}`): BpfMap {
    const fd = check(f.mapFdById(id) as number, 'BPF_MAP_GET_FD_BY_ID', `open map id ${id} (${name})`,
      'the map was freed: its owner removed it');
    return new BpfMap(name, fd, true);
  }

  /**
   * Creates an unpinned map; it lives while an fd, a pin or a map-in-map slot holds it (the caller
   * closes the fd). `o.flags`: BPF_F_*; `o.innerMapFd`: a map-in-map's template.
   */
  static create(type: number, name: string, keySize: number, valueSize: number, maxEntries: number, o: { flags?: number; innerMapFd?: number } = {}): BpfMap {
    const opts = o.flags || o.innerMapFd ? { sz: koffi.sizeof(mapCreateOpts), map_flags: o.flags ?? 0, inner_map_fd: o.innerMapFd ?? 0 } : null;
    const fd = check(f.mapCreate(type, name.slice(0, 15), keySize, valueSize, maxEntries, opts) as number, 'BPF_MAP_CREATE',
      `create map ${name} (type ${type}, ${maxEntries} entries)`, 'needs root (CAP_BPF) and enough locked memory');
    return new BpfMap(name, fd, true);
  }

  /** Pins the map at `path` (bpffs); the pin keeps it alive after every fd is closed. */
  pin(path: string): void {
    check(f.pin(this.fd, path) as number, 'BPF_MAP_PIN', `pin ${this.name} at ${path}`);
  }

  /** Lookup into `out` (or a new Buffer); null when the key is absent. */
  lookup(key: Buffer, out?: Buffer): Buffer | null {
    const v = out ?? Buffer.alloc(this.valueBufSize);
    const rc = f.lookup(this.fd, key, v) as number;
    if (rc === -ENOENT) return null;
    check(rc, 'BPF_MAP_LOOKUP', `lookup in ${this.name}`);
    return v;
  }

  update(key: Buffer, value: Buffer, flags = 0n): void {
    check(f.update(this.fd, key, value, flags) as number, 'BPF_MAP_UPDATE', `update of ${this.name}`,
      'the map may be full (max_entries) or the key/value malformed');
  }

  /** true if deleted, false if absent. */
  delete(key: Buffer): boolean {
    const rc = f.del(this.fd, key) as number;
    if (rc === -ENOENT) return false;
    check(rc, 'BPF_MAP_DELETE', `delete from ${this.name}`);
    return true;
  }

  /** Iterates keys (copies). Deleting the current key while iterating is allowed. */
  *keys(): Generator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.info.keySize);
      const rc = f.nextKey(this.fd, prev, next) as number;
      if (rc === -ENOENT) return;
      check(rc, 'BPF_MAP_NEXT_KEY', `iterate ${this.name}`);
      yield next;
      prev = next;
    }
  }

  /** Batch update of `count` concatenated keys/values; falls back to single updates if unsupported. */
  updateBatch(keys: Buffer, values: Buffer, count: number): void {
    if (count === 0) return;
    const cnt = [count];
    const rc = f.updateBatch(this.fd, keys, values, cnt, { sz: koffi.sizeof(batchOpts), elem_flags: 0n, flags: 0n }) as number;
    if (rc === 0) return;
    if (rc !== -osConstants.errno.EINVAL && rc !== -osConstants.errno.ENOTSUP && rc !== -524) {
      check(rc, 'BPF_MAP_UPDATE_BATCH', `batch update of ${this.name} (${cnt[0]} of ${count} applied)`, 'the map may be full');
    }
    const ks = this.info.keySize, vs = this.info.valueSize;
    for (let i = cnt[0] ?? 0; i < count; i++) this.update(keys.subarray(i * ks, (i + 1) * ks), values.subarray(i * vs, (i + 1) * vs));
  }

  /**
   * Every entry, read `batch` at a time (BPF_MAP_LOOKUP_BATCH: one syscall per batch instead of
   * two per key); `onBatch` gets the packed keys and values and how many there are (the buffers
   * are reused: copy what you keep). Falls back to per-key iteration where the map type has no
   * batch lookup. Not for per-CPU maps.
   */
  forEachBatch(batch: number, onBatch: (keys: Buffer, values: Buffer, count: number) => void): void {
    const ks = this.info.keySize, vs = this.valueBufSize;
    const keys = Buffer.alloc(batch * ks), values = Buffer.alloc(batch * vs);
    let inBatch: Buffer | null = null;
    let outBatch: Buffer = Buffer.alloc(ks);
    const opts = { sz: koffi.sizeof(batchOpts), elem_flags: 0n, flags: 0n };
    for (;;) {
      const cnt = [batch];
      const rc = f.lookupBatch(this.fd, inBatch, outBatch, keys, values, cnt, opts) as number;
      if (rc !== 0 && rc !== -ENOENT) {
        if (inBatch === null && (rc === -osConstants.errno.EINVAL || rc === -osConstants.errno.ENOTSUP || rc === -524)) {
          this.#forEachByKey(batch, onBatch);
          return;
        }
        check(rc, 'BPF_MAP_LOOKUP_BATCH', `batch lookup in ${this.name}`);
      }
      if (cnt[0]) onBatch(keys, values, cnt[0]);
      if (rc === -ENOENT) return;
      // the kernel's position token goes back in as the next call's start
      const next: Buffer = inBatch ?? Buffer.alloc(ks);
      inBatch = outBatch;
      outBatch = next;
    }
  }

  #forEachByKey(batch: number, onBatch: (keys: Buffer, values: Buffer, count: number) => void): void {
    const ks = this.info.keySize, vs = this.valueBufSize;
    const keys = Buffer.alloc(batch * ks), values = Buffer.alloc(batch * vs);
    let n = 0;
    for (const k of this.keys()) {
      if (!this.lookup(k, values.subarray(n * vs, (n + 1) * vs))) continue; // deleted meanwhile
      k.copy(keys, n * ks);
      if (++n === batch) { onBatch(keys, values, n); n = 0; }
    }
    if (n) onBatch(keys, values, n);
  }

  /** Deletes keys one by one (batch delete stops at the first absent key); returns how many existed. */
  deleteMany(keys: Buffer[]): number {
    let n = 0;
    for (const k of keys) if (this.delete(k)) n++;
    return n;
  }

  close(): void {
    if (this.ownsFd) closeFd(this.fd);
  }
}

/** BPF_F_MMAPABLE: an array map whose values user space maps and stores into directly. */
export const BPF_F_MMAPABLE = 1 << 10;

/** An array map's values mapped into this process (shared with the kernel's readers): element i at i * round_up(value size, 8). */
export type MappedArray = SharedMapping;

/**
 * Maps a BPF_F_MMAPABLE array's values (the mapping holds the map: it outlives the fd). A store
 * through it is one machine store per aligned word, where bpf_map_update_elem copies the whole
 * value with memcpy (a reader on another CPU may see part of an update).
 */
export function mmapArray(map: BpfMap): MappedArray {
  const len = Math.ceil((((map.info.valueSize + 7) & ~7) * map.info.maxEntries) / 4096) * 4096;
  return mapShared(map.fd, len, PROT_READ | PROT_WRITE, 0,
    (errno) => new BpfError('BPF_MAP_MMAP', `mmap of ${map.name}`, errno, 'the map must be an array created with BPF_F_MMAPABLE'));
}

// ---------------------------------------------------------------- objects and programs

/** A map's definition as an object declares it (before anything is created). */
export interface MapDef { type: number; keySize: number; valueSize: number; maxEntries: number; flags: number }

/** What libbpf compares before it reuses a pinned map (map_is_reuse_compat; map_extra: none of ours sets it). */
export function sameDef(a: MapDef, b: MapDef): boolean {
  return a.type === b.type && a.keySize === b.keySize && a.valueSize === b.valueSize && a.maxEntries === b.maxEntries && a.flags === b.flags;
}

/** A pinned map of an object: its name, where libbpf pins it, its definition and (map-in-map) its inner template's. */
export interface PinnedMapDef extends MapDef { name: string; pinPath: string; inner?: MapDef }

const defOf = (m: unknown): MapDef => ({
  type: f.mapType(m) as number, keySize: f.mapKeySize(m) as number, valueSize: f.mapValueSize(m) as number,
  maxEntries: f.mapMaxEntries(m) as number, flags: f.mapFlags(m) as number,
});

/** The maps of `path` that libbpf pins under pinRoot, read from the ELF (opened, not loaded). */
export function objectPinnedMaps(path: string, pinRoot: string): PinnedMapDef[] {
  if (!existsSync(path)) {
    throw new MembraneError('BPF_OBJECT_MISSING', `BPF object ${path} not found`, { hint: 'build it: bash scripts/build-bpf.sh' });
  }
  const h = f.open(path, { sz: koffi.sizeof(openOpts), pin_root_path: pinRoot });
  if (!h) throw new BpfError('BPF_OBJECT_OPEN', `open BPF object ${path}`, koffi.errno());
  try {
    const out: PinnedMapDef[] = [];
    for (let m = f.nextMap(h, null); m; m = f.nextMap(h, m)) {
      const pinPath = f.mapPinPath(m) as string | null;
      if (!pinPath) continue;
      const inner = f.innerMap(m);
      out.push({ name: f.mapName(m) as string, pinPath, ...defOf(m), ...(inner ? { inner: defOf(inner) } : {}) });
    }
    return out;
  } finally {
    f.close(h);
  }
}

export interface ProgInfo { id: number; name: string; runTimeNs: bigint; runCnt: bigint }

/** struct bpf_prog_info (uapi, checked against linux/bpf.h: size 232, run_time_ns @192, run_cnt @200). */
export function progInfo(fd: number): ProgInfo {
  const buf = Buffer.alloc(232);
  const len = [buf.length];
  check(f.info(fd, buf, len) as number, 'BPF_PROG_INFO', `program info of fd ${fd}`);
  const name = buf.subarray(64, 80);
  return {
    id: buf.readUInt32LE(4), name: name.subarray(0, Math.max(0, name.indexOf(0))).toString(),
    runTimeNs: buf.readBigUInt64LE(192), runCnt: buf.readBigUInt64LE(200),
  };
}

/** `read` of the object an fd just opened names (`fd` < 0: it is gone, null), the fd closed after. */
function readOpened<T>(fd: number, read: (fd: number) => T): T | null {
  if (fd < 0) return null;
  try {
    return read(fd);
  } finally {
    closeFd(fd);
  }
}

/** Info of the loaded program `id` (e.g. a link's progId), or null when it is gone. */
export function progInfoById(id: number): ProgInfo | null {
  return readOpened(f.progFdById(id) as number, progInfo);
}

export class BpfProgram {
  readonly name: string;
  readonly fd: number;
  constructor(name: string, fd: number) {
    this.name = name;
    this.fd = fd;
  }
  info(): ProgInfo {
    return progInfo(this.fd);
  }
}

/** An opened and loaded BPF ELF object; PIN_BY_NAME maps are reused/pinned under pinRoot. */
export class BpfObject {
  private handle: unknown;
  readonly path: string;
  readonly pinRoot: string;

  private constructor(handle: unknown, path: string, pinRoot: string) {
    this.handle = handle;
    this.path = path;
    this.pinRoot = pinRoot;
  }

  /** Opens and loads `path`; maps marked LIBBPF_PIN_BY_NAME are reused from or pinned to pinRoot. */
  static load(path: string, pinRoot: string): BpfObject {
    if (!existsSync(path)) {
      throw new MembraneError('BPF_OBJECT_MISSING', `BPF object ${path} not found`, { hint: 'build it: bash scripts/build-bpf.sh' });
    }
    mkdirSync(pinRoot, { recursive: true });
    if (!isOnBpffs(pinRoot)) {
      throw new MembraneError('BPF_PIN_ROOT', `${pinRoot} is not on a bpffs`, { hint: 'mount -t bpf bpf /sys/fs/bpf' });
    }
    const h = f.open(path, { sz: koffi.sizeof(openOpts), pin_root_path: pinRoot });
    if (!h) throw new BpfError('BPF_OBJECT_OPEN', `open BPF object ${path}`, koffi.errno());
    const rc = f.load(h) as number;
    if (rc < 0) {
      f.close(h);
      throw new BpfError('BPF_OBJECT_LOAD', `load BPF object ${path} (pin root ${pinRoot})`, -rc,
        'see the libbpf log (verifier output); a pinned map of another definition is replaced when the object is loaded through src/datapath/linux/pins.ts (loadObjectMigrating), else remove it (membrane down)');
    }
    return new BpfObject(h, path, pinRoot);
  }

  program(name: string): BpfProgram {
    const p = f.findProg(this.alive(), name);
    if (!p) throw new MembraneError('BPF_PROG_MISSING', `program ${name} not in ${this.path}`);
    return new BpfProgram(name, check(f.progFd(p) as number, 'BPF_PROG_FD', `fd of program ${name}`));
  }

  map(name: string): BpfMap {
    const m = f.findMap(this.alive(), name);
    if (!m) throw new MembraneError('BPF_MAP_MISSING', `map ${name} not in ${this.path}`);
    return new BpfMap(name, check(f.mapFd(m) as number, 'BPF_MAP_FD', `fd of map ${name}`));
  }

  /** Closes programs and map fds; pinned maps and pinned links stay. */
  close(): void {
    if (this.handle) f.close(this.handle);
    this.handle = null;
  }

  private alive(): unknown {
    if (!this.handle) throw new MembraneError('BPF_OBJECT_CLOSED', `BPF object ${this.path} is closed`);
    return this.handle;
  }
}

// ---------------------------------------------------------------- tcx links

export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;

export interface LinkInfo { type: number; id: number; progId: number; ifindex: number; attachType: number }

/** struct bpf_link_info: type@0 id@4 prog_id@8, union@16 (tcx: ifindex, attach_type). */
export function linkInfo(fd: number): LinkInfo {
  const buf = Buffer.alloc(48);
  const len = [buf.length];
  check(f.info(fd, buf, len) as number, 'BPF_LINK_INFO', `link info of fd ${fd}`);
  return { type: buf.readUInt32LE(0), id: buf.readUInt32LE(4), progId: buf.readUInt32LE(8), ifindex: buf.readUInt32LE(16), attachType: buf.readUInt32LE(20) };
}

/**
 * Attaches `progFd` at tcx ingress/egress of `ifindex` through a link pinned at `pinPath`, so the
 * attachment outlives the process. If a live pinned link for the same device exists, its program
 * is swapped atomically (bpf_link_update); a stale pin (device gone or replaced) is removed first.
 * Returns the link id.
 */
export function attachTcx(progFd: number, ifindex: number, attachType: number, pinPath: string): number {
  if (existsSync(pinPath)) {
    const lfd = f.get(pinPath) as number;
    if (lfd >= 0) {
      try {
        const li = linkInfo(lfd);
        if (li.ifindex === ifindex && li.attachType === attachType) {
          check(f.linkUpdate(lfd, progFd, null) as number, 'BPF_LINK_UPDATE', `replace program on link ${pinPath}`);
          return li.id;
        }
      } finally {
        closeFd(lfd);
      }
    }
    rmSync(pinPath, { force: true });
  }
  mkdirSync(dirname(pinPath), { recursive: true });
  const lfd = check(f.linkCreate(progFd, ifindex, attachType, null) as number, 'BPF_LINK_CREATE',
    `attach tcx ${attachType === BPF_TCX_INGRESS ? 'ingress' : 'egress'} on ifindex ${ifindex}`,
    'tcx needs kernel 6.6+; is the interface in this network namespace?');
  try {
    check(f.pin(lfd, pinPath) as number, 'BPF_LINK_PIN', `pin link at ${pinPath}`);
    return linkInfo(lfd).id;
  } finally {
    closeFd(lfd);
  }
}

/** Detaches by removing the pinned link (no-op if absent). */
export function detachPinnedLink(pinPath: string): void {
  rmSync(pinPath, { force: true });
}

/** Info of a pinned link, or null when absent. */
export function pinnedLinkInfo(pinPath: string): LinkInfo | null {
  return existsSync(pinPath) ? readOpened(f.get(pinPath) as number, linkInfo) : null;
}

/**
 * The tcx links pinned in directory `dir` (one level; absent: none) with their info. A link whose
 * device is gone (defunct: attached to nothing) reads ifindex 0. Pins that are not links are left out.
 */
export function pinnedLinks(dir: string): { path: string; info: LinkInfo }[] {
  if (!existsSync(dir)) return [];
  const out: { path: string; info: LinkInfo }[] = [];
  for (const n of readdirSync(dir)) {
    const path = join(dir, n);
    try {
      const info = pinnedLinkInfo(path);
      if (info) out.push({ path, info });
    } catch {
      // not a link
    }
  }
  return out;
}

/** Removes a pin directory tree (links first, so attachments go away, then maps). */
export function removePins(root: string): void {
  if (!existsSync(root)) return;
  const links = join(root, 'links');
  if (existsSync(links)) for (const n of readdirSync(links)) rmSync(join(links, n), { force: true });
  rmSync(root, { recursive: true, force: true });
}

export function pinExists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- run-time stats

let statsFd = -1;
let statsRefs = 0;

/** Enables kernel run_cnt/run_time_ns accounting (BPF_STATS_RUN_TIME) while the fd is held (ref-counted). */
export function enableRunTimeStats(): void {
  if (statsFd < 0) statsFd = check(f.enableStats(0) as number, 'BPF_ENABLE_STATS', 'enable BPF run-time stats');
  statsRefs++;
}

export function disableRunTimeStats(): void {
  if (statsRefs > 0 && --statsRefs === 0) {
    closeFd(statsFd);
    statsFd = -1;
  }
}
