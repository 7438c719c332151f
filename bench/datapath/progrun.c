// progrun <pinned-link> <ifindex> <saddr> <daddr> <dport> <n> <sport0> [mark]
// Runs the program of a pinned tcx link on n TCP SYNs (sport0..sport0+n-1: n new connections),
// then n times the same SYN (an established connection's packet), reporting the kernel's
// per-run duration: median and 10th percentile in ns of each. `mark`: the skb->mark the packets
// carry (what the sender's from_container set on them).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
static uint16_t csum(const void *p, int n) { const uint16_t *w = p; uint32_t s = 0; for (; n > 1; n -= 2) s += *w++; while (s >> 16) s = (s & 0xffff) + (s >> 16); return ~s; }
static int cmp(const void *a, const void *b) { uint32_t x = *(uint32_t *)a, y = *(uint32_t *)b; return x < y ? -1 : x > y; }
static void frame(uint8_t *f, uint32_t sa, uint32_t da, uint16_t sport, uint16_t dport) {
	memset(f, 0, 54);
	memset(f, 0xee, 6); f[6] = 2; f[11] = 1; f[12] = 8; f[13] = 0;
	uint8_t *ip = f + 14;
	ip[0] = 0x45; ip[2] = 0; ip[3] = 40; ip[6] = 0x40; ip[8] = 64; ip[9] = 6;
	memcpy(ip + 12, &sa, 4); memcpy(ip + 16, &da, 4);
	uint16_t c = csum(ip, 20); memcpy(ip + 10, &c, 2);
	uint8_t *t = ip + 20;
	uint16_t s = htons(sport), d = htons(dport); memcpy(t, &s, 2); memcpy(t + 2, &d, 2);
	t[4] = 1; t[12] = 0x50; t[13] = 0x02; t[14] = 0xff; t[15] = 0xff;
}
int main(int argc, char **argv) {
	if (argc < 8) return 2;
	int lfd = bpf_obj_get(argv[1]);
	if (lfd < 0) { perror("link"); return 1; }
	struct bpf_link_info li = {}; uint32_t len = sizeof(li);
	if (bpf_obj_get_info_by_fd(lfd, &li, &len)) { perror("linkinfo"); return 1; }
	int pfd = bpf_prog_get_fd_by_id(li.prog_id);
	if (pfd < 0) { perror("prog"); return 1; }
	int ifindex = atoi(argv[2]);
	uint32_t sa = inet_addr(argv[3]), da = inet_addr(argv[4]);
	int dport = atoi(argv[5]), n = atoi(argv[6]), sport0 = atoi(argv[7]);
	uint32_t mark = argc > 8 ? (uint32_t)strtoul(argv[8], 0, 0) : 0;
	uint32_t *nw = calloc(n, 4), *es = calloc(n, 4);
	uint8_t f[54], out[256];
	struct __sk_buff ctx = {};
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n; i++) {
			frame(f, sa, da, pass ? sport0 : sport0 + i, dport);
			ctx = (struct __sk_buff){}; ctx.ifindex = ifindex; ctx.mark = mark;
			LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f, .data_size_in = sizeof(f), .data_out = out, .data_size_out = sizeof(out), .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .repeat = 1);
			if (bpf_prog_test_run_opts(pfd, &o)) { perror("test_run"); return 1; }
			if (i == 0 && pass == 0) fprintf(stderr, "retval %d\n", o.retval);
			(pass ? es : nw)[i] = o.duration;
		}
	}
	qsort(nw, n, 4, cmp); qsort(es, n, 4, cmp);
	printf("new p10 %u p50 %u ns; established p10 %u p50 %u ns\n", nw[n / 10], nw[n / 2], es[n / 10], es[n / 2]);
	return 0;
}
