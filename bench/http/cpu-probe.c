/*
 * How fast is this CPU right now, and at what: each line read on stdin runs a fixed amount of
 * work of five kinds and prints the thread CPU time each took per operation (ns; the guest's own
 * clock: time the host takes from the vCPU without the guest knowing shows up here as slowness):
 *   alu      a dependent multiply-add chain (no memory: frequency and stolen cycles only)
 *   l1       a pointer chase in 16 KiB (L1d)
 *   l2       a pointer chase in 512 KiB (L2, private to a core)
 *   l3       a pointer chase in 2 MiB (L3, shared with the core's neighbours)
 *   l3x      a pointer chase in 4 MiB: where the L3 this vCPU gets ends (here a chase's latency
 *            jumps from ~20-40 to ~120-150 ns somewhere between 3 and 8 MiB, a different size
 *            from one minute to the next: the host's other tenants take the rest)
 *   dram     a pointer chase in 64 MiB (memory: a neighbour's bandwidth)
 * A slowdown in alu alone is fewer cycles (steal, frequency); one that grows with the working set
 * is a neighbour in the shared cache or memory. bench/http/speed.ts runs it between proxy turns.
 *   cc -O2 -o cpu-probe cpu-probe.c; ./cpu-probe  (then one line per measure on stdin)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double tcpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

/* a random cycle over n slots (Sattolo), each slot a cache line apart */
static uintptr_t *ring(size_t bytes) {
  size_t n = bytes / 64, stride = 64 / sizeof(uintptr_t);
  uintptr_t *m = aligned_alloc(4096, bytes);
  size_t *perm = malloc(n * sizeof(size_t));
  for (size_t i = 0; i < n; i++) perm[i] = i;
  for (size_t i = n - 1; i > 0; i--) { size_t j = (size_t)rand() % i; size_t t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
  for (size_t i = 0; i < n; i++) m[perm[i] * stride] = (uintptr_t)&m[perm[(i + 1) % n] * stride];
  free(perm);
  return m;
}

static volatile uintptr_t sink;

static double chase(uintptr_t *m, long steps) {
  uintptr_t *p = m;
  double t0 = tcpu();
  for (long i = 0; i < steps; i++) p = (uintptr_t *)*p;
  double t1 = tcpu();
  sink = (uintptr_t)p;
  return (t1 - t0) / steps;
}

static double alu(long steps) {
  uint64_t x = 1;
  double t0 = tcpu();
  for (long i = 0; i < steps; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  double t1 = tcpu();
  sink = (uintptr_t)x;
  return (t1 - t0) / steps;
}

int main(void) {
  uintptr_t *l1 = ring(16 << 10), *l2 = ring(512 << 10), *l3 = ring(2 << 20), *l3x = ring(4 << 20), *dram = ring(64 << 20);
  char line[64];
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready\n");
  while (fgets(line, sizeof line, stdin)) {
    /* ~10-20 ms each on this machine */
    double a = alu(4000000), c1 = chase(l1, 4000000), c2 = chase(l2, 2000000), c3 = chase(l3, 500000), c4 = chase(l3x, 300000), cd = chase(dram, 60000);
    printf("alu %.3f l1 %.3f l2 %.3f l3 %.3f l3x %.3f dram %.3f\n", a, c1, c2, c3, c4, cd);
  }
  return 0;
}
