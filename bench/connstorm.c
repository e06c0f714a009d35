// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Loopback TCP connections at a steady rate, for bench/events_latency.py.
 *
 *   connstorm RATE SECONDS
 *
 * A child process listens on 127.0.0.1 (a port of the kernel's choice) and accepts and closes;
 * the parent connects RATE times a second for SECONDS, each on time (not in bursts), and
 * closes each at once with SO_LINGER 0 (no TIME_WAIT: ephemeral ports last the run). Prints
 * "port P" when listening, then "done N" with the connections made. Exit 1 on any failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	struct linger abort_close = { .l_onoff = 1, .l_linger = 0 };
	socklen_t len = sizeof(addr);
	double rate, seconds, start;
	long n, total;
	int srv, one = 1;
	pid_t child;

	if (argc != 3 || (rate = atof(argv[1])) <= 0 || (seconds = atof(argv[2])) <= 0) {
		fprintf(stderr, "usage: connstorm RATE SECONDS\n");
		return 2;
	}
	total = (long)(rate * seconds + 0.5);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	srv = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (srv < 0 || bind(srv, (struct sockaddr *)&addr, sizeof(addr)) || listen(srv, 4096) ||
	    getsockname(srv, (struct sockaddr *)&addr, &len)) {
		perror("listen");
		return 1;
	}
	child = fork();
	if (child == 0) {
		for (;;) {
			int c = accept(srv, NULL, NULL);

			if (c >= 0)
				close(c);
			else if (errno != EINTR)
				_exit(1);
		}
	}
	close(srv);
	printf("port %d\n", ntohs(addr.sin_port));
	fflush(stdout);
	start = now();
	for (n = 0; n < total; n++) {
		double due = start + n / rate, wait = due - now();
		int c;

		if (wait > 0) {
			struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };

			nanosleep(&ts, NULL);
		}
		c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof(addr))) {
			perror("connect");
			kill(child, SIGKILL);
			return 1;
		}
		setsockopt(c, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
		close(c);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	printf("done %ld\n", n);
	return 0;
}
