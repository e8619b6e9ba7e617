// SPDX-License-Identifier: Apache-2.0
// Copyright: the clamfuse authors
//
// catread: the bench's timed reader. It reads files as cat does, system
// call for system call (open, fstat, fadvise(SEQUENTIAL), read 128 KiB at
// a time to EOF, close), in C, so that what a figure counts beside the
// server is what a reader such as cat costs: a Go reader blocked in an
// open that waits for a scan also paid its runtime's thread hand-offs
// (about 5 context switches and 55 us of CPU per such open, measured on
// this bench's 2-CPU machine), on the same CPUs the server and clamd use.
//
// usage: catread [-j READERS] ROOT < LIST
// LIST: one path relative to ROOT per line. READERS threads (default 1)
// take the next path in turn. On success it prints the nanoseconds from
// the first open to the last close and exits 0; on the first failure it
// prints one line naming the call and the file to stderr and exits 1.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF (128 * 1024)

static char **paths;
static long npaths;
static atomic_long next_path;
static atomic_int failed;

static void fail(const char *call, const char *path, int err) {
	if (atomic_exchange(&failed, 1) == 0) {
		fprintf(stderr, "catread: %s %s: %s\n", call, path, strerror(err));
	}
}

static void *reader(void *arg) {
	(void)arg;
	char *buf = malloc(READ_BUF);
	if (buf == NULL) {
		fail("malloc", "read buffer", ENOMEM);
		return NULL;
	}
	while (!atomic_load(&failed)) {
		long j = atomic_fetch_add(&next_path, 1);
		if (j >= npaths) {
			break;
		}
		const char *p = paths[j];
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fail("open", p, errno);
			break;
		}
		struct stat st;
		if (fstat(fd, &st) < 0) {
			fail("fstat", p, errno);
			close(fd);
			break;
		}
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
		for (;;) {
			ssize_t n = read(fd, buf, READ_BUF);
			if (n < 0 && errno == EINTR) {
				continue;
			}
			if (n < 0) {
				fail("read", p, errno);
				break;
			}
			if (n == 0) {
				break;
			}
		}
		if (close(fd) < 0) {
			fail("close", p, errno);
			break;
		}
	}
	free(buf);
	return NULL;
}

int main(int argc, char **argv) {
	int readers = 1, opt;
	while ((opt = getopt(argc, argv, "j:")) != -1) {
		if (opt == 'j' && atoi(optarg) > 0) {
			readers = atoi(optarg);
		} else {
			fprintf(stderr, "usage: catread [-j READERS] ROOT < LIST\n");
			return 2;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: catread [-j READERS] ROOT < LIST\n");
		return 2;
	}
	const char *root = argv[optind];
	long cap = 1024;
	paths = malloc(cap * sizeof *paths);
	char *line = NULL;
	size_t len = 0;
	ssize_t n;
	while ((n = getline(&line, &len, stdin)) > 0) {
		if (line[n - 1] == '\n') {
			line[--n] = '\0';
		}
		if (n == 0) {
			continue;
		}
		if (npaths == cap) {
			cap *= 2;
			paths = realloc(paths, cap * sizeof *paths);
		}
		if (paths == NULL || asprintf(&paths[npaths], "%s/%s", root, line) < 0) {
			fprintf(stderr, "catread: out of memory reading the list\n");
			return 1;
		}
		npaths++;
	}
	pthread_t *tids = calloc(readers, sizeof *tids);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (readers == 1) {
		reader(NULL);
	} else {
		for (int i = 0; i < readers; i++) {
			if (pthread_create(&tids[i], NULL, reader, NULL) != 0) {
				fail("pthread_create", "reader", EAGAIN);
				readers = i;
				break;
			}
		}
		for (int i = 0; i < readers; i++) {
			pthread_join(tids[i], NULL);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (atomic_load(&failed)) {
		return 1;
	}
	printf("%lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec));
	return 0;
}
