// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * An open storm, for bench/opens_storm.py: openat(dirfd, NAME) + close, N times, as fast as it
 * goes or at RATE opens a second (checked every 256 opens, so the pace holds without a sleep per
 * open). Pinned to CPU if given (-1: not pinned). Prints "ns_per_open X opens N seconds S".
 *
 *   openstorm DIR NAME N [RATE [CPU]]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
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
	long n, i;
	double rate = 0, start, elapsed;
	int dirfd, cpu = -1;

	if (argc < 4) {
		fprintf(stderr, "usage: openstorm DIR NAME N [RATE [CPU]]\n");
		return 2;
	}
	n = atol(argv[3]);
	if (argc > 4)
		rate = atof(argv[4]);
	if (argc > 5)
		cpu = atoi(argv[5]);
	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	dirfd = open(argv[1], O_RDONLY | O_DIRECTORY);
	if (dirfd < 0) {
		perror(argv[1]);
		return 1;
	}
	start = now();
	for (i = 0; i < n; i++) {
		int fd = openat(dirfd, argv[2], O_RDONLY);

		if (fd < 0) {
			perror("openat");
			return 1;
		}
		close(fd);
		if (rate > 0 && (i & 255) == 255) {
			double due = start + (i + 1) / rate;

			while (now() < due)
				;
		}
	}
	elapsed = now() - start;
	printf("ns_per_open %.1f opens %ld seconds %.3f\n", elapsed * 1e9 / n, n, elapsed);
	return 0;
}
