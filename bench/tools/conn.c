/* bench/socket_lb.py's server and client: new TCP connections per second, from inside a namespace. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * conn NETNS_PATH PARENT_PID server PORT backlog|accept
 *     listen on every address of the namespace; "accept" accepts and closes every
 *     connection, "backlog" leaves the handshake to the kernel (see below).
 * conn NETNS_PATH PARENT_PID worker HOST PORT
 *     for each line "SECONDS" on stdin, open and close connections to HOST:PORT for that
 *     long (closing with RST: SO_LINGER 0) and answer "connected failed first_errno
 *     wall_seconds cpu_seconds"; cpu_seconds is the time it ran on a CPU, including the
 *     softirq work (both ends of the handshake over the veth) done in its context.
 */

static double clock_s(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int serve(int port, int accept_all)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int one = 1, defer = accept_all ? 0 : 600, s;
	FILE *f = fopen("/proc/sys/net/core/somaxconn", "w");

	if (f) { /* this namespace's own limit on the accept queue */
		fputs("65535", f);
		fclose(f);
	}
	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* "backlog": with TCP_DEFER_ACCEPT the handshake's last ACK (no data) leaves the
	 * connection a request in the kernel's backlog and the client's RST drops it there,
	 * so this process never wakes: no server process competes for the two CPUs. */
	if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(s, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer)) ||
	    bind(s, (struct sockaddr *)&sa, sizeof(sa)) || listen(s, 65535)) {
		perror("server");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		if (c >= 0)
			close(c);
	}
}

static int work(const char *host, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct linger rst = { .l_onoff = 1, .l_linger = 0 };
	char line[64];

	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", host);
		return 2;
	}
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		unsigned long long ok = 0, failed = 0, i = 0;
		int first_errno = 0;
		double cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID), start = clock_s(CLOCK_MONOTONIC);
		double end = start + atof(line), t;

		for (t = start; t < end; i++) {
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (fd < 0) {
				perror("socket");
				return 1;
			}
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
			if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
				ok++;
			} else {
				failed++;
				if (!first_errno)
					first_errno = errno;
			}
			close(fd);
			if ((i & 15) == 15)
				t = clock_s(CLOCK_MONOTONIC);
		}
		t = clock_s(CLOCK_MONOTONIC);
		printf("%llu %llu %d %.6f %.6f\n", ok, failed, first_errno, t - start,
		       clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0);
		fflush(stdout);
	}
	return 0;
}

int main(int argc, char **argv)
{
	int fd;

	if (argc < 5)
		return 2;
	/* Die with the bench, even if it is killed outright. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != atoi(argv[2]))
		return 3;
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET)) {
		perror(argv[1]);
		return 1;
	}
	close(fd);
	if (!strcmp(argv[3], "server") && argc == 6)
		return serve(atoi(argv[4]), !strcmp(argv[5], "accept"));
	if (!strcmp(argv[3], "worker") && argc == 6)
		return work(argv[4], atoi(argv[5]));
	return 2;
}
