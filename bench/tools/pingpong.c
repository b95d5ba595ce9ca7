/* bench/policy.py's server and client: 1-byte ping-pong latency and new-connection rate. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * pingpong serve ECHO_PORT CONN_PORT
 *     ECHO_PORT: accept one connection at a time and echo what it sends.
 *     CONN_PORT: listen with TCP_DEFER_ACCEPT and never accept: a handshake completes in
 *     the kernel and the client's RST removes it, so no process is woken per connection.
 * pingpong worker HOST ECHO_PORT CONN_PORT
 *     for each stdin line "rr SECONDS": one connection, 1-byte ping-pong for that long;
 *     answers "rr COUNT P50_US P90_US P99_US CPU_S".
 *     for each stdin line "conn SECONDS": open and close (RST) connections for that long;
 *     answers "conn CONNECTED FAILED FIRST_ERRNO WALL_S CPU_S".
 * Both exit when their parent dies.
 */

static double now(clockid_t c) {
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int listener(int port, int defer) {
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (defer) {
		int secs = 30;
		setsockopt(s, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs);
	}
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096)) {
		perror("listen");
		exit(1);
	}
	return s;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void rr(struct sockaddr_in *a, double secs) {
	static double *lat;
	static size_t cap;
	size_t n = 0;
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
	char c = 'x';
	double c0 = now(CLOCK_PROCESS_CPUTIME_ID);
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(s, (struct sockaddr *)a, sizeof *a)) {
		printf("rr 0 0 0 0 0\n");
		fflush(stdout);
		close(s);
		return;
	}
	double end = now(CLOCK_MONOTONIC) + secs;
	for (;;) {
		double t0 = now(CLOCK_MONOTONIC);
		if (t0 >= end)
			break;
		if (write(s, &c, 1) != 1 || read(s, &c, 1) != 1)
			break;
		if (n == cap) {
			cap = cap ? 2 * cap : 65536;
			lat = realloc(lat, cap * sizeof *lat);
		}
		lat[n++] = (now(CLOCK_MONOTONIC) - t0) * 1e6;
	}
	close(s);
	if (!n) {
		printf("rr 0 0 0 0 0\n");
	} else {
		qsort(lat, n, sizeof *lat, cmp);
		printf("rr %zu %.3f %.3f %.3f %.4f\n", n, lat[n / 2], lat[n * 9 / 10], lat[n * 99 / 100],
		       now(CLOCK_PROCESS_CPUTIME_ID) - c0);
	}
	fflush(stdout);
}

static void conns(struct sockaddr_in *a, double secs) {
	long ok = 0, failed = 0;
	int first = 0;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID), w;
	while ((w = now(CLOCK_MONOTONIC)) - w0 < secs) {
		for (int i = 0; i < 16; i++) {
			int s = socket(AF_INET, SOCK_STREAM, 0);
			setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
			if (connect(s, (struct sockaddr *)a, sizeof *a) == 0)
				ok++;
			else {
				failed++;
				if (!first)
					first = errno;
			}
			close(s);
		}
	}
	printf("conn %ld %ld %d %.4f %.4f\n", ok, failed, first, w - w0, now(CLOCK_PROCESS_CPUTIME_ID) - c0);
	fflush(stdout);
}

int main(int argc, char **argv) {
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && !strcmp(argv[1], "serve")) {
		int e = listener(atoi(argv[2]), 0);
		int d = listener(atoi(argv[3]), 1);
		(void)d;
		printf("ready\n");
		fflush(stdout);
		for (;;) {
			int c = accept(e, NULL, NULL);
			char buf[64];
			ssize_t got;
			if (c < 0)
				continue;
			while ((got = read(c, buf, sizeof buf)) > 0)
				if (write(c, buf, got) != got)
					break;
			close(c);
		}
	}
	if (argc == 5 && !strcmp(argv[1], "worker")) {
		struct sockaddr_in echo = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
		struct sockaddr_in conn = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
		char line[64], what[16];
		double secs;
		inet_pton(AF_INET, argv[2], &echo.sin_addr);
		conn.sin_addr = echo.sin_addr;
		printf("ready\n");
		fflush(stdout);
		while (fgets(line, sizeof line, stdin)) {
			if (sscanf(line, "%15s %lf", what, &secs) != 2)
				return 2;
			if (!strcmp(what, "rr"))
				rr(&echo, secs);
			else
				conns(&conn, secs);
		}
		return 0;
	}
	fprintf(stderr, "usage: pingpong serve ECHO_PORT CONN_PORT | pingpong worker HOST ECHO_PORT CONN_PORT\n");
	return 2;
}
