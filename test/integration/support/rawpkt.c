/* Raw frames for the datapath's attack and fuzz tests (Node has no raw sockets). Built by
 * scripts/setup.sh into dist/rawpkt; test/integration/support/frames.ts builds the frames and
 * reads the captures. Runs inside a namespace (nsenter --net / membrane exec).
 *
 *   rawpkt send IFACE            frames from stdin, one hex line each, sent on IFACE (AF_PACKET);
 *                                prints the number sent
 *   rawpkt flood IFACE HEX COUNT OFF [REPEAT]
 *                                COUNT copies of the frame HEX, the big-endian 16-bit field at
 *                                byte OFF set to 1024 + i % 64512 (source ports), each sent
 *                                REPEAT times in a row (default 1); prints the number sent.
 *                                Checksums are left as they are.
 *   rawpkt capture IFACE MS      prints "ready", then "in HEX" / "out HEX" per frame seen on
 *                                IFACE for MS milliseconds (at most 20000 frames)
 *
 * Exit status 0, 1 on a socket error (message on stderr), 2 on bad usage. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 9216

static int open_sock(const char *ifname, int *ifindex)
{
	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0) {
		perror("socket(AF_PACKET)");
		exit(1);
	}
	*ifindex = (int)if_nametoindex(ifname);
	if (!*ifindex) {
		fprintf(stderr, "no interface %s\n", ifname);
		exit(1);
	}
	struct sockaddr_ll sll = {0};
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = *ifindex;
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		perror("bind");
		exit(1);
	}
	return fd;
}

static int unhex(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s);
	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	if (n % 2 || n / 2 > max)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	return (int)(n / 2);
}

static void send_frame(int fd, const unsigned char *f, int len)
{
	/* a full socket buffer is waited out, not dropped: the tests count what they sent */
	for (;;) {
		if (send(fd, f, (size_t)len, 0) == len)
			return;
		if (errno == ENOBUFS || errno == EAGAIN) {
			usleep(50);
			continue;
		}
		perror("send");
		exit(1);
	}
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	static unsigned char frame[MAX_FRAME];
	static char line[2 * MAX_FRAME + 8];
	int ifindex;
	if (argc >= 3 && !strcmp(argv[1], "send")) {
		int fd = open_sock(argv[2], &ifindex);
		long sent = 0;
		while (fgets(line, sizeof(line), stdin)) {
			int len = unhex(line, frame, sizeof(frame));
			if (len < 0) {
				fprintf(stderr, "bad hex frame\n");
				return 2;
			}
			if (len == 0)
				continue;
			send_frame(fd, frame, len);
			sent++;
		}
		printf("%ld\n", sent);
		return 0;
	}
	if (argc >= 6 && !strcmp(argv[1], "flood")) {
		int fd = open_sock(argv[2], &ifindex);
		int len = unhex(argv[3], frame, sizeof(frame));
		long count = atol(argv[4]);
		int off = atoi(argv[5]);
		int repeat = argc >= 7 ? atoi(argv[6]) : 1;
		if (len < 0 || count < 0 || off < 0 || off + 2 > len || repeat < 1)
			return 2;
		for (long i = 0; i < count; i++) {
			unsigned v = 1024 + (unsigned)(i % 64512);
			frame[off] = (unsigned char)(v >> 8);
			frame[off + 1] = (unsigned char)v;
			for (int r = 0; r < repeat; r++)
				send_frame(fd, frame, len);
		}
		printf("%ld\n", count * repeat);
		return 0;
	}
	if (argc >= 4 && !strcmp(argv[1], "capture")) {
		int fd = open_sock(argv[2], &ifindex);
		long long end = now_ms() + atol(argv[3]);
		int frames = 0;
		printf("ready\n");
		fflush(stdout);
		for (;;) {
			long long left = end - now_ms();
			if (left <= 0 || frames >= 20000)
				break;
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			if (poll(&pfd, 1, (int)left) <= 0)
				continue;
			struct sockaddr_ll from;
			socklen_t fl = sizeof(from);
			ssize_t n = recvfrom(fd, frame, sizeof(frame), 0, (struct sockaddr *)&from, &fl);
			if (n <= 0)
				continue;
			printf("%s ", from.sll_pkttype == PACKET_OUTGOING ? "out" : "in");
			for (ssize_t i = 0; i < n; i++)
				printf("%02x", frame[i]);
			printf("\n");
			fflush(stdout);
			frames++;
		}
		return 0;
	}
	fprintf(stderr, "usage: rawpkt send IFACE | flood IFACE HEX COUNT OFF [REPEAT] | capture IFACE MS\n");
	return 2;
}
