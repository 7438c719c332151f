/*
 * bench/http/body.ts's origin and load generator: large HTTP/1.1 bodies over keep-alive.
 *
 *   body-load server PORT
 *     GET  /body/download/N   200 with a body of N bytes (Content-Length)
 *     GET  /body/chunked/N    200 with a body of N bytes, chunked (64 KiB chunks: a streamed answer)
 *     POST /body/upload/N     reads the request body (Content-Length or chunked), checks it is N
 *                             bytes, answers 200 `ok` (400 when the size differs)
 *   body-load client PORT SECS CONNS KIND N
 *     KIND: get | getchunked | post | postchunked; CONNS connections, one request at a time on
 *     each, until SECS have passed (the request in flight finishes). Prints
 *     `requests R bytes B secs S errors E`: B body bytes moved, both ways checked to the byte.
 *
 * One thread per connection, blocking sockets: the bytes are neither generated nor inspected
 * (a static buffer out, a discard buffer in), so the origin and the client cost a read/write per
 * 256 KiB and the proxy between them is what is measured (the origin alone is measured too).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO (256 * 1024)
#define CHUNK (64 * 1024)
static char zeros[IO];

typedef struct { int fd; char buf[IO]; size_t beg, end; } conn_t;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static int fill(conn_t *c) {
  if (c->beg == c->end) c->beg = c->end = 0;
  else if (c->end == sizeof c->buf) { memmove(c->buf, c->buf + c->beg, c->end - c->beg); c->end -= c->beg; c->beg = 0; }
  ssize_t n = read(c->fd, c->buf + c->end, sizeof c->buf - c->end);
  if (n <= 0) return -1;
  c->end += (size_t)n;
  return 0;
}

/* a line ending in CRLF into out (NUL-terminated, CRLF removed); -1 on EOF or overlong */
static int line(conn_t *c, char *out, size_t cap) {
  for (;;) {
    char *p = memmem(c->buf + c->beg, c->end - c->beg, "\r\n", 2);
    if (p) {
      size_t n = (size_t)(p - (c->buf + c->beg));
      if (n >= cap) return -1;
      memcpy(out, c->buf + c->beg, n);
      out[n] = 0;
      c->beg += n + 2;
      return 0;
    }
    if (c->end - c->beg >= cap) return -1;
    if (fill(c) < 0) return -1;
  }
}

/* discards n bytes */
static int skip(conn_t *c, size_t n) {
  while (n > 0) {
    if (c->beg == c->end) {
      /* nothing buffered: read straight into the buffer's start */
      c->beg = c->end = 0;
      ssize_t r = read(c->fd, c->buf, n < sizeof c->buf ? n : sizeof c->buf);
      if (r <= 0) return -1;
      n -= (size_t)r;
      continue;
    }
    size_t k = c->end - c->beg;
    if (k > n) k = n;
    c->beg += k;
    n -= k;
  }
  return 0;
}

/* a head: first line into first, and what framing its body has (-1: chunked) */
static int head(conn_t *c, char *first, size_t cap, long *length) {
  char l[8192];
  if (line(c, first, cap) < 0) return -1;
  *length = 0;
  for (;;) {
    if (line(c, l, sizeof l) < 0) return -1;
    if (!l[0]) return 0;
    if (!strncasecmp(l, "content-length:", 15)) *length = atol(l + 15);
    else if (!strncasecmp(l, "transfer-encoding:", 18) && strcasestr(l + 18, "chunked")) *length = -1;
  }
}

/* reads a body of `length` (-1: chunked); returns its payload bytes, -1 on error */
static long body(conn_t *c, long length) {
  if (length >= 0) return skip(c, (size_t)length) < 0 ? -1 : length;
  long total = 0;
  char l[256];
  for (;;) {
    if (line(c, l, sizeof l) < 0) return -1;
    char *e;
    long n = strtol(l, &e, 16);
    if (e == l || n < 0) return -1;
    if (n == 0) {
      for (;;) { if (line(c, l, sizeof l) < 0) return -1; if (!l[0]) return total; } /* trailers */
    }
    if (skip(c, (size_t)n) < 0 || line(c, l, sizeof l) < 0 || l[0]) return -1;
    total += n;
  }
}

static int writeall(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

/* N bytes of payload: as they are (Content-Length) or in CHUNK-sized chunks */
static int send_body(int fd, long n, int chunked) {
  char h[32];
  while (n > 0) {
    size_t k = chunked ? (n < CHUNK ? (size_t)n : CHUNK) : (n < IO ? (size_t)n : IO);
    if (chunked) { int hl = snprintf(h, sizeof h, "%zx\r\n", k); if (writeall(fd, h, (size_t)hl) < 0) return -1; }
    if (writeall(fd, zeros, k) < 0) return -1;
    if (chunked && writeall(fd, "\r\n", 2) < 0) return -1;
    n -= (long)k;
  }
  return chunked ? writeall(fd, "0\r\n\r\n", 5) : 0;
}

static void *serve(void *arg) {
  conn_t *c = arg;
  char first[4096], h[256];
  long length;
  while (head(c, first, sizeof first, &length) == 0) {
    char method[16], path[1024];
    if (sscanf(first, "%15s %1023s", method, path) != 2) break;
    const char *slash = strrchr(path, '/');
    long n = slash ? atol(slash + 1) : 0;
    long got = body(c, length);
    if (got < 0) break;
    int hl;
    if (!strcmp(method, "POST")) {
      int ok = got == n;
      hl = snprintf(h, sizeof h, "HTTP/1.1 %s\r\ncontent-length: 2\r\n\r\n%s", ok ? "200 OK" : "400 Bad Request", ok ? "ok" : "no");
      if (writeall(c->fd, h, (size_t)hl) < 0) break;
    } else if (!strncmp(path, "/body/chunked/", 14)) {
      hl = snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
      if (writeall(c->fd, h, (size_t)hl) < 0 || send_body(c->fd, n, 1) < 0) break;
    } else {
      hl = snprintf(h, sizeof h, "HTTP/1.1 200 OK\r\ncontent-length: %ld\r\n\r\n", n);
      if (writeall(c->fd, h, (size_t)hl) < 0 || send_body(c->fd, n, 0) < 0) break;
    }
  }
  close(c->fd);
  free(c);
  return NULL;
}

static int port;
static double secs;
static const char *kind;
static long size;

struct result { long requests, bytes, errors; };

static void *load(void *arg) {
  struct result *r = arg;
  conn_t *c = calloc(1, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) { r->errors++; free(c); return NULL; }
  int post = !strncmp(kind, "post", 4), chunked = strstr(kind, "chunked") != NULL;
  char req[512], first[4096];
  double end = now() + secs;
  while (now() < end) {
    int rl;
    if (post && chunked) rl = snprintf(req, sizeof req, "POST /body/upload/%ld HTTP/1.1\r\nhost: origin\r\ntransfer-encoding: chunked\r\n\r\n", size);
    else if (post) rl = snprintf(req, sizeof req, "POST /body/upload/%ld HTTP/1.1\r\nhost: origin\r\ncontent-length: %ld\r\n\r\n", size, size);
    else rl = snprintf(req, sizeof req, "GET /body/%s/%ld HTTP/1.1\r\nhost: origin\r\n\r\n", chunked ? "chunked" : "download", size);
    if (writeall(c->fd, req, (size_t)rl) < 0) { r->errors++; break; }
    if (post && send_body(c->fd, size, chunked) < 0) { r->errors++; break; }
    long length;
    if (head(c, first, sizeof first, &length) < 0) { r->errors++; break; }
    long got = body(c, length);
    if (got < 0 || strncmp(first, "HTTP/1.1 200", 12) || (!post && got != size)) { r->errors++; break; }
    r->requests++;
    r->bytes += size;
  }
  close(c->fd);
  free(c);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "server")) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 1024) < 0) { perror("listen"); return 1; }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
      int fd = accept(s, NULL, NULL);
      if (fd < 0) continue;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      conn_t *c = calloc(1, sizeof *c);
      c->fd = fd;
      pthread_t t;
      pthread_attr_t at;
      pthread_attr_init(&at);
      pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
      pthread_create(&t, &at, serve, c);
    }
  }
  if (argc == 7 && !strcmp(argv[1], "client")) {
    port = atoi(argv[2]);
    secs = atof(argv[3]);
    int conns = atoi(argv[4]);
    kind = argv[5];
    size = atol(argv[6]);
    pthread_t t[256];
    struct result r[256] = { 0 };
    if (conns < 1 || conns > 256) return 2;
    double t0 = now();
    for (int i = 0; i < conns; i++) pthread_create(&t[i], NULL, load, &r[i]);
    struct result sum = { 0 };
    for (int i = 0; i < conns; i++) { pthread_join(t[i], NULL); sum.requests += r[i].requests; sum.bytes += r[i].bytes; sum.errors += r[i].errors; }
    printf("requests %ld bytes %ld secs %.4f errors %ld\n", sum.requests, sum.bytes, now() - t0, sum.errors);
    return 0;
  }
  fprintf(stderr, "usage: body-load server PORT | body-load client PORT SECS CONNS get|getchunked|post|postchunked N\n");
  return 2;
}
