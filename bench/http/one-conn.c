/*
 * One connection, one request at a time (wrk -c1 as bench/http runs it), with each request's start
 * (CLOCK_MONOTONIC, ns, as `perf sched record -k mono`) and latency, so that a slow request can be
 * lined up with what ran on the proxy's CPU then (bench/http/tail.ts).
 *   one-conn PORT SECS SLOW_US [PATH]
 * stdout: `slow START_NS LATENCY_NS` per request over SLOW_US, then `n N p50 .. p99 .. p999 .. max .. ms`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static int cmp(const void *a, const void *b) { long long x = *(const long long *)a, y = *(const long long *)b; return x < y ? -1 : x > y; }
#define MAXN 4000000
static long long lat[MAXN];

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: one-conn PORT SECS SLOW_US [PATH]\n"); return 2; }
  int port = atoi(argv[1]), slowUs = atoi(argv[3]);
  double secs = atof(argv[2]);
  const char *path = argc > 4 ? argv[4] : "/";
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as wrk */
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  a.sin_addr.s_addr = htonl(0x7f000001);
  if (connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
  char req[512], buf[8192];
  int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
  long n = 0;
  long long end = now() + (long long)(secs * 1e9);
  while (now() < end && n < MAXN) {
    long long t0 = now();
    if (write(s, req, rl) != rl) { perror("write"); return 1; }
    int got = 0, need = -1;
    for (;;) {
      int r = read(s, buf + got, sizeof buf - 1 - got);
      if (r <= 0) { perror("read"); return 1; }
      got += r; buf[got] = 0;
      char *h = strstr(buf, "\r\n\r\n");
      if (h) { char *cl = strcasestr(buf, "content-length:"); need = (int)(h - buf) + 4 + (cl ? atoi(cl + 15) : 0); }
      if (need >= 0 && got >= need) break;
    }
    long long d = now() - t0;
    lat[n++] = d;
    if (d > slowUs * 1000LL) printf("slow %lld %lld\n", t0, d);
  }
  qsort(lat, n, sizeof *lat, cmp);
  printf("n %ld p50 %.3f p90 %.3f p99 %.3f p999 %.3f max %.3f ms\n", n, lat[n / 2] / 1e6, lat[n * 9 / 10] / 1e6, lat[n * 99 / 100] / 1e6, lat[n * 999 / 1000] / 1e6, lat[n - 1] / 1e6);
  return 0;
}
