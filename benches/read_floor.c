// The read floor of a collection cycle (issue 16): what the kernel charges
// to read the files the agent reads per container, with nothing else done.
// Opens every file once, then each cycle preads each at offset 0 into one
// buffer, as the agent does with its kept-open descriptors: every cycle
// the per-cycle files, every 5th cycle the limits too (the agent re-reads
// limits every 5 cycles). Prints CPU (user + system) per container per
// cycle.
//
// Usage: read_floor CYCLES DIRS_FILE
//   DIRS_FILE: one line per container, its v1 controller directories as
//   "cpu cpuacct memory blkio" (absolute paths, space separated).
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_FILES 16

struct container {
	int every[MAX_FILES]; // read every cycle
	int n_every;
	int limits[MAX_FILES]; // read every 5th cycle
	int n_limits;
};

static int open_in(const char *dir, const char *name)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	return fd;
}

static double cpu_seconds(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return u.ru_utime.tv_sec + u.ru_stime.tv_sec +
	       (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s CYCLES DIRS_FILE\n", argv[0]);
		return 2;
	}
	int cycles = atoi(argv[1]);
	FILE *in = fopen(argv[2], "r");
	if (!in) {
		perror(argv[2]);
		return 1;
	}
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);

	size_t cap = 1024, n = 0;
	struct container *cs = calloc(cap, sizeof(*cs));
	char cpu[2048], acct[2048], mem[2048], blk[2048];
	while (fscanf(in, "%2047s %2047s %2047s %2047s", cpu, acct, mem, blk) == 4) {
		if (n == cap)
			cs = realloc(cs, (cap *= 2) * sizeof(*cs));
		struct container *c = &cs[n++];
		memset(c, 0, sizeof(*c));
		c->every[c->n_every++] = open_in(acct, "cpuacct.usage");
		c->every[c->n_every++] = open_in(cpu, "cpu.stat");
		c->every[c->n_every++] = open_in(mem, "memory.usage_in_bytes");
		c->every[c->n_every++] = open_in(mem, "memory.stat");
		c->every[c->n_every++] = open_in(mem, "memory.oom_control");
		c->every[c->n_every++] = open_in(blk, "blkio.throttle.io_service_bytes");
		c->limits[c->n_limits++] = open_in(cpu, "cpu.cfs_quota_us");
		c->limits[c->n_limits++] = open_in(cpu, "cpu.cfs_period_us");
		c->limits[c->n_limits++] = open_in(mem, "memory.limit_in_bytes");
	}
	static char buf[65536];
	long bytes = 0;
	double t0 = cpu_seconds();
	for (int k = 0; k < cycles; k++) {
		for (size_t i = 0; i < n; i++) {
			struct container *c = &cs[i];
			for (int j = 0; j < c->n_every; j++)
				bytes += pread(c->every[j], buf, sizeof(buf), 0);
			// the agent spreads the limits over cycles (1/5 of them each)
			if ((k + i) % 5 == 0)
				for (int j = 0; j < c->n_limits; j++)
					bytes += pread(c->limits[j], buf, sizeof(buf), 0);
		}
	}
	double cpu_s = cpu_seconds() - t0;
	printf("read_floor: %zu containers, %d cycles: CPU %.1f ms/cycle (%.1f us/container), %ld bytes/cycle\n",
	       n, cycles, cpu_s / cycles * 1e3, cpu_s / cycles / (n ? n : 1) * 1e6,
	       bytes / (cycles ? cycles : 1));
	return 0;
}
