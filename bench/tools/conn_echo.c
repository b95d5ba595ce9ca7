// A new TCP connection per exchange: the connection-rate workload of bench/flow_rate.py.
//
//   conn_echo serve PORT THREADS
//       THREADS threads accept on one listener; each connection gets its byte echoed and
//       is closed. Prints "ready" once listening. Exits when its parent dies.
//   conn_echo client HOST PORT THREADS SECONDS
//       THREADS threads each loop for SECONDS: socket, connect, send 1 byte, read the echo,
//       close with RST (SO_LINGER 0, so no TIME_WAIT exhausts the ports). Prints one line:
//       "conns ERRORS FIRST_ERRNO WALL_S CPU_S P50_US P90_US P99_US", latency from the
//       connect() call to the echo's arrival.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 100000 /* 1 us each; slower exchanges land in the last one */

static double now(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int listen_fd;

static void *serve_thread(void *arg)
{
	(void)arg;
	for (;;) {
		char c;
		int s = accept(listen_fd, NULL, NULL);
		if (s < 0)
			continue;
		if (read(s, &c, 1) == 1)
			(void)!write(s, &c, 1);
		close(s);
	}
	return NULL;
}

static int serve(int port, int threads)
{
	int one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	pthread_t t;

	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(listen_fd, (struct sockaddr *)&a, sizeof a) || listen(listen_fd, 4096)) {
		perror("listen");
		return 1;
	}
	for (int i = 0; i < threads; i++)
		pthread_create(&t, NULL, serve_thread, NULL);
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}

struct worker {
	struct sockaddr_in addr;
	double end;
	long conns, errors;
	int first_errno;
	uint32_t *hist;
};

static void *client_thread(void *arg)
{
	struct worker *w = arg;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	int one = 1;

	while (now(CLOCK_MONOTONIC) < w->end) {
		double t0 = now(CLOCK_MONOTONIC);
		char c = 'x';
		int s = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		if (connect(s, (struct sockaddr *)&w->addr, sizeof w->addr) || write(s, &c, 1) != 1 ||
		    read(s, &c, 1) != 1) {
			if (!w->first_errno)
				w->first_errno = errno ? errno : -1;
			w->errors++;
			close(s);
			continue;
		}
		long us = (long)((now(CLOCK_MONOTONIC) - t0) * 1e6);
		w->hist[us < BUCKETS ? us : BUCKETS - 1]++;
		w->conns++;
		close(s);
	}
	return NULL;
}

static long percentile(const uint64_t *hist, uint64_t total, double q)
{
	uint64_t want = (uint64_t)(total * q), seen = 0;
	for (long i = 0; i < BUCKETS; i++) {
		seen += hist[i];
		if (seen > want)
			return i;
	}
	return BUCKETS - 1;
}

static int client(const char *host, int port, int threads, double secs)
{
	struct worker *w = calloc(threads, sizeof *w);
	pthread_t *t = calloc(threads, sizeof *t);
	uint64_t *hist = calloc(BUCKETS, sizeof *hist), total = 0;
	long conns = 0, errors = 0;
	int first = 0;
	double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);

	for (int i = 0; i < threads; i++) {
		w[i].addr.sin_family = AF_INET;
		w[i].addr.sin_port = htons(port);
		inet_pton(AF_INET, host, &w[i].addr.sin_addr);
		w[i].end = w0 + secs;
		w[i].hist = calloc(BUCKETS, sizeof(uint32_t));
		pthread_create(&t[i], NULL, client_thread, &w[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		conns += w[i].conns;
		errors += w[i].errors;
		if (!first)
			first = w[i].first_errno;
		for (long b = 0; b < BUCKETS; b++)
			hist[b] += w[i].hist[b];
	}
	double wall = now(CLOCK_MONOTONIC) - w0;
	total = (uint64_t)conns;
	printf("%ld %ld %d %.4f %.4f %ld %ld %ld\n", conns, errors, first, wall, now(CLOCK_PROCESS_CPUTIME_ID) - c0,
	       total ? percentile(hist, total, 0.5) : 0, total ? percentile(hist, total, 0.9) : 0,
	       total ? percentile(hist, total, 0.99) : 0);
	return 0;
}

int main(int argc, char **argv)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]), atoi(argv[3]));
	if (argc == 6 && !strcmp(argv[1], "client"))
		return client(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
	fprintf(stderr, "usage: conn_echo serve PORT THREADS | client HOST PORT THREADS SECONDS\n");
	return 2;
}
