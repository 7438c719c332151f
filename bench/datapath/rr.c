// Minimal netperf-like TCP_RR / TCP_CRR for bench/datapath/run.ts (built at run time with cc).
//   rr server <port>                      sequential accept; echo bytes until the peer closes
//   rr rr  <ip> <port> <secs>             one connection, 1-byte request/response; prints trans/s
//   rr crr <ip> <port> <secs>             connect, 1-byte req/resp, close (RST) per transaction
// The clients print "<rate> <cpu µs>": the rate, and the process's own CPU time (user + system,
// getrusage): on veth pairs the kernel forwards what a process sends in that process's context,
// so this is the datapath's work on the sender's side along with the TCP stack's.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static int dial(const char *ip, int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  inet_pton(AF_INET, ip, &a.sin_addr);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(1); }
  return s;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  if (!strcmp(argv[1], "server")) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1024)) { perror("listen"); return 1; }
    printf("ready\n"); fflush(stdout);
    for (;;) {
      int c = accept(l, 0, 0);
      if (c < 0) continue;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      char b[64]; ssize_t n;
      while ((n = read(c, b, sizeof b)) > 0) if (write(c, b, n) != n) break;
      close(c);
    }
  }
  const char *ip = argv[2]; int port = atoi(argv[3]); double secs = atof(argv[4]);
  long n = 0; char b = 'x';
  double end = now() + secs, t0 = now();
  if (!strcmp(argv[1], "rr")) {
    int s = dial(ip, port);
    while (now() < end) for (int i = 0; i < 100; i++) { if (write(s, &b, 1) != 1 || read(s, &b, 1) != 1) { perror("rr"); return 1; } n++; }
    close(s);
  } else {
    struct linger lg = { 1, 0 };
    while (now() < end) {
      int s = dial(ip, port);
      if (write(s, &b, 1) != 1 || read(s, &b, 1) != 1) { perror("crr"); return 1; }
      setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      close(s);
      n++;
    }
  }
  double rate = n / (now() - t0);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%.1f %.0f\n", rate, (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  return 0;
}
