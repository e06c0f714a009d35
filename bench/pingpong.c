/* One-thread loopback ping-pong for bench/percall.py: the cost per send+receive call pair.
 *
 * Usage: pingpong MODE SOCKETS CPU WARMUP ROUNDS REPEATS MAX_SECONDS
 *   MODE      tcp (one 127.0.0.1 TCP connection per pair, TCP_NODELAY) or udp (two connected
 *             UDP sockets on 127.0.0.1 per pair)
 *   SOCKETS   pairs the thread cycles through: round i writes on pair i % SOCKETS and reads
 *             on its other end (1 or more)
 *   CPU       CPU the thread is pinned to (sched_setaffinity), -1 for no pinning
 *   WARMUP    rounds before the first measurement
 *   ROUNDS    rounds per measurement
 *   REPEATS   measurements, each printed on its own line; 0: served, one measurement per line
 *             read from stdin (the number of rounds), until EOF: bench/percall_toggle.py
 *             attaches and detaches programs between them, in this one process
 *   MAX_SECONDS  the whole run is bounded by this (SIGALRM ends it, exit 3)
 *
 * A round is one write of 64 bytes on one end and one read of those 64 bytes on the other,
 * both by this thread: on loopback the write delivers the data before it returns, so the
 * read does not block. Output, one line per measurement: "ns_per_round ROUNDS ELAPSED_NS NIVCSW"
 * (NIVCSW: involuntary context switches during it: the thread was preempted), then
 * "total_rounds N" (warm-up included). Exit 0 measured, 1 socket error, 2 usage, 3 timeout.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG_LEN 64
#define MAX_PAIRS 64

struct pair {
	int wr; /* written on */
	int rd; /* read from */
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "pingpong: time limit reached\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	_exit(3);
}

static struct sockaddr_in loopback(void)
{
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = 0;
	return sa;
}

static void bound_name(int fd, struct sockaddr_in *sa)
{
	socklen_t len = sizeof(*sa);
	if (getsockname(fd, (struct sockaddr *)sa, &len) < 0)
		die("getsockname");
}

static struct pair tcp_pair(void)
{
	struct sockaddr_in sa = loopback();
	int one = 1;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		die("socket");
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0)
		die("bind/listen");
	bound_name(lfd, &sa);
	int cfd = socket(AF_INET, SOCK_STREAM, 0);
	if (cfd < 0)
		die("socket");
	if (connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect");
	int afd = accept(lfd, NULL, NULL);
	if (afd < 0)
		die("accept");
	close(lfd);
	if (setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    setsockopt(afd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		die("TCP_NODELAY");
	return (struct pair){.wr = cfd, .rd = afd};
}

static struct pair udp_pair(void)
{
	struct sockaddr_in a = loopback(), b = loopback();
	int fa = socket(AF_INET, SOCK_DGRAM, 0);
	int fb = socket(AF_INET, SOCK_DGRAM, 0);
	if (fa < 0 || fb < 0)
		die("socket");
	if (bind(fa, (struct sockaddr *)&a, sizeof(a)) < 0 || bind(fb, (struct sockaddr *)&b, sizeof(b)) < 0)
		die("bind");
	bound_name(fa, &a);
	bound_name(fb, &b);
	if (connect(fa, (struct sockaddr *)&b, sizeof(b)) < 0 || connect(fb, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	return (struct pair){.wr = fa, .rd = fb};
}

static inline void one_round(const struct pair *p, char *buf)
{
	ssize_t n = write(p->wr, buf, MSG_LEN);
	if (n != MSG_LEN)
		die("write");
	size_t got = 0;
	while (got < MSG_LEN) {
		n = read(p->rd, buf + got, MSG_LEN - got);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			die("read");
		}
		got += (size_t)n;
	}
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long nivcsw(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_THREAD, &ru) < 0)
		die("getrusage");
	return ru.ru_nivcsw;
}

static long parse_long(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s) {
		fprintf(stderr, "pingpong: bad %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

/* ROUNDS rounds, timed; prints "ns_per_round ROUNDS ELAPSED_NS NIVCSW". */
static void measure(const struct pair *p, long pairs, long *k, long rounds, char *buf)
{
	long cs0 = nivcsw();
	long long t0 = now_ns();
	for (long i = 0; i < rounds; i++) {
		one_round(&p[*k], buf);
		if (++*k == pairs)
			*k = 0;
	}
	long long elapsed = now_ns() - t0;
	long cs = nivcsw() - cs0;
	printf("%.3f %ld %lld %ld\n", (double)elapsed / (double)rounds, rounds, elapsed, cs);
}

int main(int argc, char **argv)
{
	if (argc != 8) {
		fprintf(stderr, "usage: %s tcp|udp SOCKETS CPU WARMUP ROUNDS REPEATS MAX_SECONDS\n", argv[0]);
		return 2;
	}
	int tcp = strcmp(argv[1], "tcp") == 0;
	if (!tcp && strcmp(argv[1], "udp") != 0) {
		fprintf(stderr, "pingpong: mode must be tcp or udp\n");
		return 2;
	}
	long pairs = parse_long(argv[2], "SOCKETS");
	long cpu = parse_long(argv[3], "CPU");
	long warmup = parse_long(argv[4], "WARMUP");
	long rounds = parse_long(argv[5], "ROUNDS");
	long repeats = parse_long(argv[6], "REPEATS");
	long max_s = parse_long(argv[7], "MAX_SECONDS");
	if (pairs < 1 || pairs > MAX_PAIRS || warmup < 0 || rounds < 1 || repeats < 0 || max_s < 1) {
		fprintf(stderr, "pingpong: out of range (SOCKETS 1..%d, ROUNDS, MAX_SECONDS >= 1, REPEATS >= 0)\n",
			MAX_PAIRS);
		return 2;
	}
	signal(SIGALRM, on_alarm);
	alarm((unsigned)max_s);

	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET((int)cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0)
			die("sched_setaffinity");
	}

	struct pair p[MAX_PAIRS];
	for (long i = 0; i < pairs; i++)
		p[i] = tcp ? tcp_pair() : udp_pair();

	char buf[MSG_LEN];
	memset(buf, 'x', sizeof(buf));
	long k = 0; /* index of the pair used next */
	long long total = 0;

	for (long i = 0; i < warmup; i++) {
		one_round(&p[k], buf);
		if (++k == pairs)
			k = 0;
	}
	total += warmup;

	if (repeats == 0) {
		/* Served: "ready", then a measurement per line of stdin. */
		char line[64];
		printf("ready\n");
		fflush(stdout);
		while (fgets(line, sizeof(line), stdin)) {
			line[strcspn(line, "\n")] = 0;
			long n = parse_long(line, "ROUNDS (stdin)");
			if (n < 1) {
				fprintf(stderr, "pingpong: ROUNDS (stdin) must be >= 1\n");
				return 2;
			}
			measure(p, pairs, &k, n, buf);
			fflush(stdout);
			total += n;
		}
	}
	for (long r = 0; r < repeats; r++) {
		measure(p, pairs, &k, rounds, buf);
		total += rounds;
	}
	printf("total_rounds %lld\n", total);
	fflush(stdout);
	for (long i = 0; i < pairs; i++) {
		close(p[i].wr);
		close(p[i].rd);
	}
	return 0;
}
