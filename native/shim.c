// SPDX-License-Identifier: Apache-2.0
/*
 * Flat C API over libbpf for the agent's koffi binding (src/ebpf/binding.ts).
 *
 * Conventions: handles are opaque; every int-returning function returns >= 0 on success or
 * -errno. Buffers are the caller's (zero-copy for the duration of the call). libbpf's log,
 * verifier log included, is captured per object so that a failed load can say why.
 *
 * The ring buffer is read here, not with libbpf's ring_buffer__consume: that drains until empty
 * (unbounded on a busy ring) and cannot stop between two records without losing one on libbpf
 * 1.1. Reading the mmapped ring directly copies at most N records per call and leaves the rest.
 */
#define _GNU_SOURCE /* setns */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "../bpf/mtlens_abi.h"

#define MAX_PROGS 16
#define MAX_MAPS 32
#define LOG_CAP (256 * 1024)

struct shim_obj {
	struct bpf_object *obj;
	struct bpf_link *links[MAX_PROGS];
	int attach_err[MAX_PROGS];
	int iter_link_fd; /* conn_snapshot's iterator link, created on first read */
	int stats_fd;     /* BPF_ENABLE_STATS: run_cnt/run_time_ns are kept while it is open */
	/* ring buffer */
	int rb_fd;
	uint64_t rb_size;
	volatile uint64_t *rb_consumer;
	volatile const uint64_t *rb_producer;
	const uint8_t *rb_data;
	size_t page;
	char *log;
	size_t log_len;
};

static struct shim_obj *log_target;

static int capture_log(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG || !log_target || !log_target->log)
		return 0;
	struct shim_obj *o = log_target;
	if (o->log_len >= LOG_CAP - 1)
		return 0;
	int n = vsnprintf(o->log + o->log_len, LOG_CAP - o->log_len, fmt, args);
	if (n > 0)
		o->log_len = o->log_len + (size_t)n >= LOG_CAP ? LOG_CAP - 1 : o->log_len + (size_t)n;
	return 0;
}

/* ---- ABI ------------------------------------------------------------------------------ */

int shim_abi_version(void)
{
	return MTLENS_ABI_VERSION;
}

#define FIELD(name) #name, (int)__builtin_offsetof(struct mtlens_conn_record, name), \
		    (int)sizeof(((struct mtlens_conn_record *)0)->name)

#define CONSTANT(name) { #name, name }

/* Every index and code of mtlens_abi.h that the agent uses by number. */
static const struct { const char *name; int value; } constants[] = {
	CONSTANT(MTLENS_REC_OPEN), CONSTANT(MTLENS_REC_CLOSE), CONSTANT(MTLENS_REC_SNAPSHOT), CONSTANT(MTLENS_REC_BENCH),
	CONSTANT(MTLENS_REC_ADOPT), CONSTANT(MTLENS_ROLE_CLIENT), CONSTANT(MTLENS_ROLE_UPSTREAM_DC),
	CONSTANT(MTLENS_ROLE_UPSTREAM_OTHER), CONSTANT(MTLENS_NR_ROLES), CONSTANT(MTLENS_CLOSE_NONE),
	CONSTANT(MTLENS_CLOSE_FIN), CONSTANT(MTLENS_CLOSE_RST), CONSTANT(MTLENS_PROG_CONN_LIFECYCLE),
	CONSTANT(MTLENS_PROG_BENCH_PRODUCER), CONSTANT(MTLENS_NR_STAT_PROGS), CONSTANT(MTLENS_STAT_SEEN),
	CONSTANT(MTLENS_STAT_SUBMITTED), CONSTANT(MTLENS_STAT_DROPPED_RINGBUF_FULL), CONSTANT(MTLENS_STAT_DROPPED_TABLE_FULL),
	CONSTANT(MTLENS_STAT_CLOSED_AT_DESTROY), CONSTANT(MTLENS_STAT_NR), CONSTANT(MTLENS_HEALTH_RETRANSMITS),
	CONSTANT(MTLENS_HEALTH_RESETS_SENT), CONSTANT(MTLENS_HEALTH_RESETS_RECEIVED), CONSTANT(MTLENS_HEALTH_RTT_SAMPLES),
	CONSTANT(MTLENS_HEALTH_RTT_SUM_US), CONSTANT(MTLENS_HEALTH_NR), CONSTANT(MTLENS_RTT_BUCKETS),
	CONSTANT(MTLENS_LIMIT_TRACKED), CONSTANT(MTLENS_LIMIT_MAX), CONSTANT(MTLENS_NR_LIMITS),
};

/* "version=V;size=S;field=offset:size;...;stats=PxN;health=RxN;rtt=RxB;MTLENS_X=value;..." so the
 * agent can check every offset it decodes, the layout of every counter map it reads and every
 * index and code it uses by number. */
int shim_abi_layout(char *buf, int cap)
{
	static const struct { const char *name; int off, size; } f[] = {
		{ FIELD(kind) }, { FIELD(role) }, { FIELD(family) }, { FIELD(close_kind) }, { FIELD(state) },
		{ FIELD(local_port) }, { FIELD(peer_port) }, { FIELD(pid) }, { FIELD(cookie) }, { FIELD(ts_ns) },
		{ FIELD(opened_ns) }, { FIELD(rx_bytes) }, { FIELD(tx_bytes) }, { FIELD(segs_in) },
		{ FIELD(segs_out) }, { FIELD(srtt_us) }, { FIELD(min_rtt_us) }, { FIELD(retransmits) },
		{ FIELD(lost) }, { FIELD(local_addr) }, { FIELD(peer_addr) }, { FIELD(comm) },
	};
	int n = snprintf(buf, cap, "version=%d;size=%zu", MTLENS_ABI_VERSION, sizeof(struct mtlens_conn_record));
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]) && n < cap; i++)
		n += snprintf(buf + n, cap - n, ";%s=%d:%d", f[i].name, f[i].off, f[i].size);
	if (n < cap)
		n += snprintf(buf + n, cap - n, ";stats=%dx%d;health=%dx%d;rtt=%dx%d", MTLENS_NR_STAT_PROGS, MTLENS_STAT_NR,
			      MTLENS_NR_ROLES, MTLENS_HEALTH_NR, MTLENS_NR_ROLES, MTLENS_RTT_BUCKETS);
	for (size_t i = 0; i < sizeof(constants) / sizeof(constants[0]) && n < cap; i++)
		n += snprintf(buf + n, cap - n, ";%s=%d", constants[i].name, constants[i].value);
	return n < cap ? n : -ENOSPC;
}

/* ---- object lifecycle ------------------------------------------------------------------ */

static int object_abi_version(struct bpf_object *obj)
{
	struct bpf_map *rodata = NULL, *m;
	bpf_object__for_each_map(m, obj) {
		const char *name = bpf_map__name(m);
		size_t len = strlen(name);
		if (len >= 7 && strcmp(name + len - 7, ".rodata") == 0)
			rodata = m;
	}
	if (!rodata)
		return -ENOENT;
	size_t size = 0;
	const uint32_t *v = bpf_map__initial_value(rodata, &size);
	return v && size >= sizeof(uint32_t) ? (int)*v : -ENOENT;
}

int shim_open(const char *path, struct shim_obj **out)
{
	struct shim_obj *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->log = calloc(1, LOG_CAP);
	o->iter_link_fd = -1;
	o->stats_fd = -1;
	o->rb_fd = -1;
	o->page = (size_t)sysconf(_SC_PAGESIZE);
	log_target = o;
	libbpf_set_print(capture_log);
	o->obj = bpf_object__open_file(path, NULL);
	if (!o->obj) {
		int err = -errno;
		free(o->log);
		free(o);
		*out = NULL;
		return err ? err : -EINVAL;
	}
	/* The object's .rodata carries mtlens_abi_version (first and only read-only global). */
	int v = object_abi_version(o->obj);
	if (v != MTLENS_ABI_VERSION) {
		bpf_object__close(o->obj);
		free(o->log);
		free(o);
		*out = NULL;
		return -EPROTO;
	}
	*out = o;
	return 0;
}

int shim_object_abi_version(const char *path)
{
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj)
		return -errno;
	int v = object_abi_version(obj);
	bpf_object__close(obj);
	return v;
}

int shim_log(struct shim_obj *o, char *buf, int cap)
{
	if (!o || cap <= 0)
		return -EINVAL;
	size_t n = o->log_len < (size_t)cap - 1 ? o->log_len : (size_t)cap - 1;
	memcpy(buf, o->log, n);
	buf[n] = 0;
	return (int)n;
}

int shim_set_autoload(struct shim_obj *o, const char *prog, int on)
{
	struct bpf_program *p = bpf_object__find_program_by_name(o->obj, prog);
	return p ? bpf_program__set_autoload(p, on != 0) : -ENOENT;
}

int shim_set_max_entries(struct shim_obj *o, const char *map, uint32_t n)
{
	struct bpf_map *m = bpf_object__find_map_by_name(o->obj, map);
	return m ? bpf_map__set_max_entries(m, n) : -ENOENT;
}

int shim_load(struct shim_obj *o)
{
	log_target = o;
	int err = bpf_object__load(o->obj);
	return err < 0 ? err : 0;
}

static struct bpf_program *nth_prog(struct shim_obj *o, int i)
{
	struct bpf_program *p;
	int k = 0;
	bpf_object__for_each_program(p, o->obj) {
		if (k++ == i)
			return p;
	}
	return NULL;
}

static struct bpf_map *nth_map(struct shim_obj *o, int i)
{
	struct bpf_map *m;
	int k = 0;
	bpf_object__for_each_map(m, o->obj) {
		if (k++ == i)
			return m;
	}
	return NULL;
}

/* sockops programs go on the cgroup v2 directory `cgroup` (every socket of its subtree; the
 * agent resolves ebpf.sockops_cgroup to it), the others where their section says. */
static struct bpf_link *attach_one(struct bpf_program *p, const char *cgroup)
{
	if (bpf_program__type(p) != BPF_PROG_TYPE_SOCK_OPS)
		return bpf_program__attach(p);
	if (!cgroup || !*cgroup) {
		errno = ENOENT;
		return NULL;
	}
	int cg = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg < 0)
		return NULL;
	struct bpf_link *l = bpf_program__attach_cgroup(p, cg);
	int err = errno;
	close(cg); /* the link holds the cgroup */
	errno = err;
	return l;
}

/* Attaches every loaded program except the iterator, sockops ones on the cgroup v2 directory
 * `cgroup`; returns the number attached, and the number that failed in *nfail (each failure is
 * kept for shim_prog_info). */
int shim_attach_all(struct shim_obj *o, const char *cgroup, int *nfail)
{
	struct bpf_program *p;
	int i = 0, ok = 0, failed = 0;
	log_target = o;
	bpf_object__for_each_program(p, o->obj) {
		if (i >= MAX_PROGS)
			break;
		o->attach_err[i] = 0;
		if (bpf_program__autoload(p) && bpf_program__expected_attach_type(p) != BPF_TRACE_ITER && !o->links[i]) {
			struct bpf_link *l = attach_one(p, cgroup);
			if (!l) {
				o->attach_err[i] = -errno;
				failed++;
			} else {
				o->links[i] = l;
				ok++;
			}
		}
		i++;
	}
	if (nfail)
		*nfail = failed;
	return ok;
}

void shim_detach(struct shim_obj *o)
{
	for (int i = 0; i < MAX_PROGS; i++) {
		if (o->links[i]) {
			bpf_link__destroy(o->links[i]);
			o->links[i] = NULL;
		}
	}
	if (o->iter_link_fd >= 0) {
		close(o->iter_link_fd);
		o->iter_link_fd = -1;
	}
}

void shim_close(struct shim_obj *o)
{
	if (!o)
		return;
	shim_detach(o);
	if (o->rb_consumer)
		munmap((void *)o->rb_consumer, o->page);
	if (o->rb_producer)
		munmap((void *)o->rb_producer, o->page + o->rb_size);
	if (o->stats_fd >= 0)
		close(o->stats_fd);
	bpf_object__close(o->obj);
	if (log_target == o)
		log_target = NULL;
	free(o->log);
	free(o);
}

int shim_enable_stats(struct shim_obj *o)
{
	if (o->stats_fd >= 0)
		return 0;
	int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (fd < 0)
		return -errno;
	o->stats_fd = fd;
	return 0;
}

/* Stops this object's hold on BPF_ENABLE_STATS (the kernel counts again once no one holds it). */
int shim_disable_stats(struct shim_obj *o)
{
	if (o->stats_fd >= 0)
		close(o->stats_fd);
	o->stats_fd = -1;
	return 0;
}

/* ---- programs and maps ----------------------------------------------------------------- */

/* "name section" of the i-th program, or -ENOENT past the last one. */
int shim_prog_name(struct shim_obj *o, int i, char *buf, int cap)
{
	struct bpf_program *p = nth_prog(o, i);
	if (!p)
		return -ENOENT;
	const char *sec = bpf_program__section_name(p);
	return snprintf(buf, cap, "%s %s", bpf_program__name(p), sec ? sec : "unknown");
}

/* out[0..7]: loaded, attached, attach_err, id, run_cnt, run_time_ns, recursion_misses, verified_insns */
int shim_prog_info(struct shim_obj *o, int i, int64_t *out)
{
	struct bpf_program *p = nth_prog(o, i);
	if (!p || i >= MAX_PROGS)
		return -ENOENT;
	memset(out, 0, 8 * sizeof(*out));
	int fd = bpf_program__fd(p);
	out[0] = fd >= 0;
	out[1] = o->links[i] != NULL || (bpf_program__expected_attach_type(p) == BPF_TRACE_ITER && fd >= 0);
	out[2] = o->attach_err[i];
	if (fd < 0)
		return 0;
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	out[3] = info.id;
	out[4] = (int64_t)info.run_cnt;
	out[5] = (int64_t)info.run_time_ns;
	out[6] = (int64_t)info.recursion_misses;
	out[7] = info.verified_insns;
	return 0;
}

/* "name type" of the i-th map, or -ENOENT past the last one. */
int shim_map_name(struct shim_obj *o, int i, char *buf, int cap)
{
	struct bpf_map *m = nth_map(o, i);
	if (!m)
		return -ENOENT;
	const char *t = libbpf_bpf_map_type_str(bpf_map__type(m));
	return snprintf(buf, cap, "%s %s", bpf_map__name(m), t ? t : "unknown");
}

static int64_t count_keys(int fd, uint32_t key_size)
{
	uint8_t key[64], next[64];
	if (key_size > sizeof(key))
		return -E2BIG;
	int64_t n = 0;
	void *prev = NULL;
	while (bpf_map_get_next_key(fd, prev, next) == 0) {
		n++;
		memcpy(key, next, key_size);
		prev = key;
	}
	return n;
}

/* out[0..3]: id, max_entries, entries (hash/LPM: keys present; array: max_entries; ring: bytes
 * pending), fd. */
int shim_map_info(struct shim_obj *o, int i, int64_t *out)
{
	struct bpf_map *m = nth_map(o, i);
	if (!m)
		return -ENOENT;
	memset(out, 0, 4 * sizeof(*out));
	int fd = bpf_map__fd(m);
	out[3] = fd;
	if (fd < 0)
		return 0;
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	out[0] = info.id;
	out[1] = info.max_entries;
	switch (info.type) {
	case BPF_MAP_TYPE_HASH:
	case BPF_MAP_TYPE_LPM_TRIE:
		out[2] = count_keys(fd, info.key_size);
		break;
	case BPF_MAP_TYPE_RINGBUF:
		out[2] = o->rb_fd == fd && o->rb_producer ? (int64_t)(*o->rb_producer - *o->rb_consumer) : 0;
		break;
	default:
		out[2] = info.max_entries;
	}
	return 0;
}

int shim_map_fd(struct shim_obj *o, const char *name)
{
	struct bpf_map *m = bpf_object__find_map_by_name(o->obj, name);
	if (!m)
		return -ENOENT;
	int fd = bpf_map__fd(m);
	return fd < 0 ? -EBADF : fd;
}

int shim_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return bpf_map_update_elem(fd, key, value, flags) ? -errno : 0;
}

int shim_map_delete(int fd, const void *key)
{
	return bpf_map_delete_elem(fd, key) ? -errno : 0;
}

int shim_map_lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) ? -errno : 0;
}

/* Sums a per-CPU array of u64 over CPUs for keys [first, first + n): one call for a whole table. */
int shim_percpu_sum(int fd, uint32_t first, uint32_t n, uint64_t *out)
{
	int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0)
		return ncpu;
	uint64_t *vals = calloc((size_t)ncpu, sizeof(uint64_t));
	if (!vals)
		return -ENOMEM;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t key = first + k;
		out[k] = 0;
		if (bpf_map_lookup_elem(fd, &key, vals)) {
			int err = -errno;
			free(vals);
			return err;
		}
		for (int c = 0; c < ncpu; c++)
			out[k] += vals[c];
	}
	free(vals);
	return (int)n;
}

/* ---- iterator ------------------------------------------------------------------------- */

/*
 * iter/tcp walks the sockets of the network namespace that is current when the iterator is
 * created, so reading another namespace (the proxy in a container, the agent on the host) means
 * creating it from inside: the calling thread enters `netns_fd` for bpf_iter_create() only.
 */
static int iter_create_in(int link, int netns_fd)
{
	int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home < 0)
		return -errno;
	if (setns(netns_fd, CLONE_NEWNET) < 0) {
		int err = -errno;
		close(home);
		return err;
	}
	int fd = bpf_iter_create(link);
	int err = fd < 0 ? -errno : fd;
	if (setns(home, CLONE_NEWNET) < 0) {
		/* The thread would open every later socket in the proxy's namespace: not survivable. */
		fprintf(stderr, "mtlens shim: cannot return to the agent's network namespace: %s\n", strerror(errno));
		abort();
	}
	close(home);
	return err;
}

/* Runs the iterator program `prog` once, in network namespace `netns_fd` (-1: the caller's),
 * and copies its output into buf; returns bytes read, or -ENOSPC when the output did not fit
 * (buf then holds a prefix of whole records). */
int shim_iter_read(struct shim_obj *o, const char *prog, int netns_fd, void *buf, uint32_t cap)
{
	if (o->iter_link_fd < 0) {
		struct bpf_program *p = bpf_object__find_program_by_name(o->obj, prog);
		if (!p)
			return -ENOENT;
		int link = bpf_link_create(bpf_program__fd(p), 0, BPF_TRACE_ITER, NULL);
		if (link < 0)
			return -errno;
		o->iter_link_fd = link;
	}
	int fd = netns_fd < 0 ? bpf_iter_create(o->iter_link_fd) : iter_create_in(o->iter_link_fd, netns_fd);
	if (fd < 0)
		return netns_fd < 0 ? -errno : fd;
	uint32_t total = 0;
	int overflow = 0;
	for (;;) {
		char scratch[4096];
		char *dst = total < cap ? (char *)buf + total : scratch;
		size_t room = total < cap ? cap - total : sizeof(scratch);
		ssize_t n = read(fd, dst, room);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			int err = -errno;
			close(fd);
			return err;
		}
		if (n == 0)
			break;
		if (dst == scratch)
			overflow = 1;
		else
			total += (uint32_t)n;
	}
	close(fd);
	return overflow ? -ENOSPC : (int)total;
}

/* ---- ring buffer ------------------------------------------------------------------------ */

int shim_rb_open(struct shim_obj *o, const char *map)
{
	struct bpf_map *m = bpf_object__find_map_by_name(o->obj, map);
	if (!m)
		return -ENOENT;
	int fd = bpf_map__fd(m);
	if (fd < 0)
		return -EBADF;
	o->rb_size = bpf_map__max_entries(m);
	void *cons = mmap(NULL, o->page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (cons == MAP_FAILED)
		return -errno;
	/*
	 * Producer page, then the data pages once. The kernel offers them twice in a row (so a record
	 * that runs past the end reads contiguously), but every page of the mapping is resident from
	 * the start: the second copy cost the agent ringbuf_bytes of RSS for the one record in
	 * ~30,000 that wraps, which the readers copy instead.
	 */
	void *prod = mmap(NULL, o->page + o->rb_size, PROT_READ, MAP_SHARED, fd, (off_t)o->page);
	if (prod == MAP_FAILED) {
		int err = -errno;
		munmap(cons, o->page);
		return err;
	}
	o->rb_fd = fd;
	o->rb_consumer = cons;
	o->rb_producer = prod;
	o->rb_data = (const uint8_t *)prod + o->page;
	return 0;
}

#define RB_BUSY (1U << 31)
#define RB_DISCARD (1U << 30)
#define RB_HDR 8

static inline uint32_t round8(uint32_t n)
{
	return (n + 7) & ~7U;
}

/*
 * Walks committed records from the consumer position, handing each to `take` (which returns 0
 * when it has no room: the walk stops there and that record stays), skipping discarded ones,
 * stopping at a record still being written or after max_records; then releases what was walked
 * to the kernel. Returns the number of records taken. A record that runs past the end of the
 * data pages is copied (its first MTLENS_RECORD_SIZE bytes, all `take` may read) into one piece.
 */
typedef int (*rb_take)(void *ctx, const uint8_t *payload, uint32_t len);

static inline __attribute__((always_inline)) int rb_walk(struct shim_obj *o, int max_records, rb_take take, void *ctx)
{
	if (!o->rb_producer)
		return -EBADF;
	uint64_t cons = *o->rb_consumer;
	uint64_t prod = __atomic_load_n(o->rb_producer, __ATOMIC_ACQUIRE);
	uint64_t mask = o->rb_size - 1;
	uint8_t joined[MTLENS_RECORD_SIZE];
	int n = 0;
	while (cons < prod && n < max_records) {
		const uint8_t *hdr = o->rb_data + (cons & mask);
		uint32_t word = __atomic_load_n((const uint32_t *)hdr, __ATOMIC_ACQUIRE);
		if (word & RB_BUSY)
			break;
		uint32_t len = word & ~(RB_BUSY | RB_DISCARD);
		if (!(word & RB_DISCARD)) {
			uint64_t at = (cons + RB_HDR) & mask; /* the header is 8-aligned: it never wraps */
			const uint8_t *payload = o->rb_data + at;
			uint64_t to_end = o->rb_size - at;
			if (len > to_end) {
				uint32_t want = len < sizeof(joined) ? len : sizeof(joined);
				uint32_t first = want < to_end ? want : (uint32_t)to_end;
				memcpy(joined, payload, first);
				memcpy(joined + first, o->rb_data, want - first);
				payload = joined;
			}
			if (!take(ctx, payload, len))
				break;
			n++;
		}
		cons += RB_HDR + round8(len);
	}
	__atomic_store_n(o->rb_consumer, cons, __ATOMIC_RELEASE);
	return n;
}

/*
 * Zero-copy reading from JavaScript: the agent walks the mmapped ring itself (the data pages are
 * mapped once: a record that runs past the end continues at the start). These return the
 * mappings; NULL before shim_rb_open.
 */
const void *shim_rb_data(struct shim_obj *o)
{
	return o->rb_data;
}

const void *shim_rb_consumer_pos(struct shim_obj *o)
{
	return (const void *)o->rb_consumer;
}

/*
 * Where the run of committed records that starts at the consumer position ends: at the first
 * record still being written, at the producer position, or after max_records records (discarded
 * ones not counted). The header loads here are the acquire loads that make the records' payload
 * visible to the caller, which then reads headers and payloads up to that position with plain
 * loads: one call per batch instead of an atomic load per record.
 */
int64_t shim_rb_committed(struct shim_obj *o, int max_records)
{
	if (!o->rb_producer)
		return -EBADF;
	uint64_t cons = *o->rb_consumer;
	uint64_t prod = __atomic_load_n(o->rb_producer, __ATOMIC_ACQUIRE);
	uint64_t mask = o->rb_size - 1;
	int n = 0;
	while (cons < prod && n < max_records) {
		uint32_t word = __atomic_load_n((const uint32_t *)(o->rb_data + (cons & mask)), __ATOMIC_ACQUIRE);
		if (word & RB_BUSY)
			break;
		if (!(word & RB_DISCARD))
			n++;
		cons += RB_HDR + round8(word & ~(RB_BUSY | RB_DISCARD));
	}
	return (int64_t)cons;
}

/* Releases everything before `pos` to the kernel (one 64-bit release store, never torn). */
int shim_rb_release(struct shim_obj *o, uint64_t pos)
{
	if (!o->rb_producer)
		return -EBADF;
	__atomic_store_n(o->rb_consumer, pos, __ATOMIC_RELEASE);
	return 0;
}

/* Bytes written by the kernel and not yet drained. */
int64_t shim_rb_pending(struct shim_obj *o)
{
	if (!o->rb_producer)
		return -EBADF;
	return (int64_t)(__atomic_load_n(o->rb_producer, __ATOMIC_ACQUIRE) - *o->rb_consumer);
}

uint64_t shim_rb_size(struct shim_obj *o)
{
	return o->rb_size;
}

static inline __attribute__((always_inline)) int touch_record(void *ctx, const uint8_t *payload, uint32_t len)
{
	if (len >= MTLENS_RECORD_SIZE) {
		const struct mtlens_conn_record *r = (const void *)payload;
		*(uint64_t *)ctx += r->cookie + r->rx_bytes;
	}
	return 1;
}

/* Benchmark baseline: consumes up to max_records in C without copying them out, reading the
 * cookie of each (so the data is touched); the cheapest possible consumer. */
int shim_rb_consume_baseline(struct shim_obj *o, int max_records, uint64_t *checksum)
{
	return rb_walk(o, max_records, touch_record, checksum);
}
