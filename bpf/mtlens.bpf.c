// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * mtlens kernel programs: the proxy's TCP connections from the kernel's point of view.
 *
 * tp_btf, iter/tcp and one sockops program are used: on our kernels kprobes are absent,
 * fentry/fexit fail with EPERM and tracefs is not mounted (classic tracepoints would need it).
 * docs/kernel.md has the measurements behind these choices.
 *
 *   conn_lifecycle    tp_btf/inet_sock_set_state  one open and one close record per tracked socket
 *   conn_state_ops    sockops (sockops_cgroup)    the close record of the sockets it follows, from
 *                                                 tcp_set_state itself (STATE_CB), just before the
 *                                                 tracepoint: the tracepoint can go undelivered
 *   conn_destroy      tp_btf/tcp_destroy_sock     the close record of a tracked socket whose move
 *                                                 to CLOSE wrote none (backstop, counted)
 *   tcp_retransmit    tp_btf/tcp_retransmit_skb   retransmits per role (map counter)
 *   tcp_send_reset    tp_btf/tcp_send_reset       resets sent per role (map counter)
 *   tcp_receive_reset tp_btf/tcp_receive_reset    resets received per role (map counter)
 *   conn_snapshot     iter/tcp                    counters of tracked live sockets (seq records);
 *                                                 adopts live sockets on watched ports it does not track
 *
 * Nothing runs per packet on the proxy's behalf beyond what TCP state changes, retransmits and
 * resets trigger: the RTT histogram takes the socket's own smoothed RTT once per snapshot pass
 * (in the agent's context) and once at close, not per received segment (tcp_probe), which cost
 * the proxy a program run on every segment. Every program's first work is one socket-storage
 * lookup (or, before a socket can be tracked, one cheap port or name check).
 *   bench_producer    tp_btf/sys_enter            benchmark only (not autoloaded)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "mtlens_abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The shim checks this against its own MTLENS_ABI_VERSION when it opens the object. */
const volatile __u32 mtlens_abi_version = MTLENS_ABI_VERSION;

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define RCV_SHUTDOWN 1

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024); /* resized by the loader (ebpf.ringbuf_bytes) */
} events SEC(".maps");

/*
 * Per-socket state of tracked sockets, in socket-local storage: finding it is a pointer chase
 * from the socket (no hashing), which matters because every TCP state change and every received
 * segment on the host asks "is this socket tracked?". The kernel frees it with the socket.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mtlens_conn_state);
} conns SEC(".maps");

/* [MTLENS_LIMIT_TRACKED], [MTLENS_LIMIT_MAX]: see mtlens_abi.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MTLENS_NR_LIMITS);
	__type(key, __u32);
	__type(value, __u64);
} limits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MTLENS_MAX_WATCH_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} watch_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MTLENS_MAX_WATCH_COMMS);
	__type(key, char[16]);
	__type(value, __u8);
} watch_comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MTLENS_MAX_DC_ENDPOINTS);
	__type(key, struct mtlens_endpoint_key);
	__type(value, __u8);
} dc_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MTLENS_MAX_DC_NETS);
	__type(key, struct mtlens_net_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} dc_nets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MTLENS_NR_STAT_PROGS * MTLENS_STAT_NR);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MTLENS_NR_ROLES * MTLENS_HEALTH_NR);
	__type(key, __u32);
	__type(value, __u64);
} health SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MTLENS_NR_ROLES * MTLENS_RTT_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} rtt_hist SEC(".maps");

/* Benchmark producer config: [0] = tgid to follow (0: off). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_cfg SEC(".maps");

static __always_inline void count(void *map, __u32 index, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(map, &index);
	if (v)
		*v += n; /* per-CPU slot: no other writer */
}

static __always_inline void stat(__u32 prog, __u32 which)
{
	count(&stats, prog * MTLENS_STAT_NR + which, 1);
}

/*
 * Field reads go through the tcp_sock that bpf_skc_to_tcp_sock() returns: a trusted BTF pointer
 * whose fields load directly (CO-RE relocated), instead of one bpf_probe_read_kernel() call per
 * field with BPF_CORE_READ. (Casting the tracepoint's struct sock * to tcp_sock is rejected by
 * the verifier as out of bounds of struct sock.)
 */
static __always_inline void read_addrs(const struct tcp_sock *tp, struct mtlens_conn_record *r)
{
	const struct sock_common *c = &tp->inet_conn.icsk_inet.sk.__sk_common;
	if (c->skc_family == AF_INET) {
		r->family = 4;
		__u32 local = c->skc_rcv_saddr, peer = c->skc_daddr;
		__builtin_memcpy(r->local_addr, &local, 4);
		__builtin_memcpy(r->peer_addr, &peer, 4);
	} else {
		r->family = 6;
		struct in6_addr local = c->skc_v6_rcv_saddr, peer = c->skc_v6_daddr;
		__builtin_memcpy(r->local_addr, &local, 16);
		__builtin_memcpy(r->peer_addr, &peer, 16);
	}
	/* skc_num is zeroed by inet_put_port() before the CLOSE transition fires; inet_sport stays. */
	r->local_port = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	r->peer_port = bpf_ntohs(c->skc_dport);
}

/*
 * Byte accounting. tcp_sock.bytes_acked and bytes_received count sequence space, not payload
 * (verified against TCP_INFO on this kernel, IPv4 and IPv6, FIN and RST closes):
 *   bytes_acked    includes +1 for our SYN when we opened the connection (the passive side's
 *                  SYN-ACK is not counted) and +1 for our FIN once the peer acked it;
 *   bytes_received includes +1 for the peer's FIN.
 * Measured (client sent / server sent -> client acked/received, server acked/received):
 *   v4 FIN 100000/5000      -> 100002/5001,   5001/100001
 *   v4 FIN 0/0              -> 2/1,           1/1
 *   v4 RST 300000/777       -> 300001/777,    777/300000
 *   v6 RST 5000/0           -> 5001/0,        0/5000
 * Which corrections apply is read from the socket itself, not guessed from the TCP state:
 *   peer FIN counted   <=> SOCK_DONE, which only tcp_fin() sets, in the same step that advances
 *                          rcv_nxt (and bytes_received) over the FIN. RCV_SHUTDOWN is no proof:
 *                          close() sets it too, and an orphaned socket whose FIN was acked goes
 *                          FIN_WAIT2 -> CLOSE (tcp_time_wait) before the peer's FIN arrives.
 *   own FIN counted    <=> our FIN was queued (a state only reached after sending it) and
 *                          everything up to write_seq, which includes the FIN, is acked. LAST_ACK
 *                          or CLOSING left by a reset or a timeout did not get its FIN acked.
 */
static __always_inline bool peer_fin_received(const struct tcp_sock *tp)
{
	return tp->inet_conn.icsk_inet.sk.__sk_common.skc_flags & (1UL << SOCK_DONE);
}

static __always_inline bool own_fin_acked(const struct tcp_sock *tp, int state)
{
	switch (state) {
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSING:
	case TCP_LAST_ACK:
	case TCP_TIME_WAIT:
		return tp->snd_una == tp->write_seq;
	default:
		return false;
	}
}

/* Fills counters from tcp_sock; `state` is the state the byte counts belong to. */
static __always_inline void read_counters(const struct tcp_sock *tp, int state, __u8 active, struct mtlens_conn_record *r)
{
	__u64 received = tp->bytes_received;
	__u64 acked = tp->bytes_acked;
	__u64 rx_extra = peer_fin_received(tp) ? 1 : 0;
	__u64 tx_extra = (active ? 1 : 0) + (own_fin_acked(tp, state) ? 1 : 0);
	r->rx_bytes = received > rx_extra ? received - rx_extra : 0;
	r->tx_bytes = acked > tx_extra ? acked - tx_extra : 0;
	r->segs_in = tp->segs_in;
	r->segs_out = tp->segs_out;
	r->srtt_us = tp->srtt_us >> 3;
	r->min_rtt_us = tp->rtt_min.s[0].v;
	r->retransmits = tp->total_retrans;
	r->lost = tp->lost;
}

static __always_inline void to_mapped(__u8 out[16], const struct sock *sk)
{
	if (sk->__sk_common.skc_family == AF_INET) {
		__builtin_memset(out, 0, 10);
		out[10] = 0xff;
		out[11] = 0xff;
		__u32 peer = sk->__sk_common.skc_daddr;
		__builtin_memcpy(out + 12, &peer, 4);
	} else {
		struct in6_addr peer = sk->__sk_common.skc_v6_daddr;
		__builtin_memcpy(out, &peer, 16);
	}
}

/* Upstream sub-role: a Telegram DC / middle-proxy endpoint (exact ip:port from telemt, or a
 * Telegram network), else another upstream (masking relay, SOCKS, config download...). */
static __always_inline __u8 classify_upstream(const struct sock *sk)
{
	struct mtlens_endpoint_key ep = {};
	to_mapped(ep.addr, sk);
	ep.port = bpf_ntohs(sk->__sk_common.skc_dport);
	if (bpf_map_lookup_elem(&dc_endpoints, &ep))
		return MTLENS_ROLE_UPSTREAM_DC;
	struct mtlens_net_key net = { .prefixlen = 128 };
	__builtin_memcpy(net.addr, ep.addr, 16);
	if (bpf_map_lookup_elem(&dc_nets, &net))
		return MTLENS_ROLE_UPSTREAM_DC;
	return MTLENS_ROLE_UPSTREAM_OTHER;
}

/* Takes one of the ebpf.max_tracked_connections slots. */
static __always_inline bool take_slot(void)
{
	__u32 k_count = MTLENS_LIMIT_TRACKED, k_max = MTLENS_LIMIT_MAX;
	__u64 *count = bpf_map_lookup_elem(&limits, &k_count);
	__u64 *max = bpf_map_lookup_elem(&limits, &k_max);
	if (!count || !max)
		return false;
	if (__sync_fetch_and_add(count, 1) < *max)
		return true;
	__sync_fetch_and_add(count, -1);
	return false;
}

/*
 * Starts tracking a socket; NULL when the table is full. A refused socket keeps a storage entry
 * marked `refused` (outside the slots: the kernel frees it with the socket), so it is counted as
 * untracked once, not again by every snapshot pass that meets it, and a later pass can still
 * adopt it when a slot frees up.
 */
static __always_inline struct mtlens_conn_state *track(const struct sock *sk, __u64 now)
{
	struct mtlens_conn_state *st = bpf_sk_storage_get(&conns, (void *)sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		stat(MTLENS_PROG_CONN_LIFECYCLE, MTLENS_STAT_DROPPED_TABLE_FULL);
		return NULL;
	}
	if (!take_slot()) {
		if (!st->refused)
			stat(MTLENS_PROG_CONN_LIFECYCLE, MTLENS_STAT_DROPPED_TABLE_FULL);
		__builtin_memset(st, 0, sizeof(*st));
		st->refused = 1;
		st->role = MTLENS_NR_ROLES; /* outside every per-role map */
		return NULL;
	}
	__builtin_memset(st, 0, sizeof(*st));
	st->opened_ns = now;
	return st;
}

/*
 * Ends tracking at CLOSE: the slot is free again, but the entry stays (marked closed, role kept)
 * until the kernel frees the socket with it. An abortive close (SO_LINGER 0, close() with unread
 * data, tcp_abort) moves the socket to CLOSE first and sends its reset afterwards: the reset
 * still finds whose it is. A socket reused by connect() is tracked afresh by track().
 */
static __always_inline void untrack(struct mtlens_conn_state *st)
{
	__u32 k_count = MTLENS_LIMIT_TRACKED;
	if (st->closed)
		return;
	st->closed = 1;
	__u64 *count = bpf_map_lookup_elem(&limits, &k_count);
	if (!st->refused && count)
		__sync_fetch_and_add(count, -1);
}

/* Tracked now: taken a slot and not closed since. */
static __always_inline bool live(const struct mtlens_conn_state *st)
{
	return st && !st->refused && !st->closed;
}

/* floor(log2(v)) for v > 0; clang 14 cannot lower __builtin_clz for BPF. */
static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r = 0, shift;
	shift = (v > 0xffff) << 4; v >>= shift; r |= shift;
	shift = (v > 0xff) << 3; v >>= shift; r |= shift;
	shift = (v > 0xf) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	return r | (v >> 1);
}

/*
 * One RTT sample of a tracked connection: its smoothed RTT as the kernel keeps it (srtt_us is
 * stored <<3). Taken at every snapshot pass and at close, so the histogram holds per-connection
 * samples, a live connection contributing one per snapshot interval.
 */
static __always_inline void rtt_sample(const struct tcp_sock *tp, __u8 role)
{
	__u32 srtt = tp->srtt_us >> 3;
	if (srtt == 0 || role >= MTLENS_NR_ROLES)
		return;
	__u32 b = log2_u32(srtt);
	if (b >= MTLENS_RTT_BUCKETS)
		b = MTLENS_RTT_BUCKETS - 1;
	count(&rtt_hist, role * MTLENS_RTT_BUCKETS + b, 1);
	count(&health, role * MTLENS_HEALTH_NR + MTLENS_HEALTH_RTT_SAMPLES, 1);
	count(&health, role * MTLENS_HEALTH_NR + MTLENS_HEALTH_RTT_SUM_US, srtt);
}

static __always_inline void emit(const struct sock *sk, __u64 cookie, struct mtlens_conn_state *st, __u16 kind, int oldstate, __u64 now)
{
	const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return;
	if (kind == MTLENS_REC_CLOSE)
		rtt_sample(tp, st->role); /* whether or not the record finds room */
	stat(MTLENS_PROG_CONN_LIFECYCLE, MTLENS_STAT_SEEN);
	struct mtlens_conn_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		stat(MTLENS_PROG_CONN_LIFECYCLE, MTLENS_STAT_DROPPED_RINGBUF_FULL);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->role = st->role;
	r->pid = st->pid;
	r->cookie = cookie;
	r->ts_ns = now;
	r->opened_ns = st->opened_ns;
	__builtin_memcpy(r->comm, st->comm, sizeof(r->comm));
	read_addrs(tp, r);
	if (kind == MTLENS_REC_CLOSE) {
		r->state = oldstate;
		/* Orderly when our FIN was acknowledged: every byte we sent arrived. Anything else
		 * reaching CLOSE (from ESTABLISHED, CLOSE_WAIT, FIN_WAIT1, or LAST_ACK/CLOSING with the
		 * FIN unacked) was cut by a reset sent or received, or by a retransmission timeout. */
		r->close_kind = own_fin_acked(tp, oldstate) ? MTLENS_CLOSE_FIN : MTLENS_CLOSE_RST;
		read_counters(tp, oldstate, st->active, r);
	} else {
		r->state = TCP_ESTABLISHED;
		read_counters(tp, TCP_ESTABLISHED, st->active, r);
	}
	/* No wakeup: the agent drains on a timer. A wakeup per record costs the proxy 1-1.5 us. */
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	stat(MTLENS_PROG_CONN_LIFECYCLE, MTLENS_STAT_SUBMITTED);
}

/* The close record (`oldstate`: the state the socket left for CLOSE), then untrack. A connect()
 * that never completed produced no open record and produces no close. */
static __always_inline void close_tracked(const struct sock *sk, __u64 cookie, struct mtlens_conn_state *st, int oldstate)
{
	if (st->open_sent)
		emit(sk, cookie, st, MTLENS_REC_CLOSE, oldstate, bpf_ktime_get_ns());
	untrack(st);
}

/* TCP over IPv4 or IPv6: checked only where tracking can begin. A socket that has an entry in
 * `conns` passed it then. */
static __always_inline bool tcp_inet(const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	return sk->sk_protocol == IPPROTO_TCP && (family == AF_INET || family == AF_INET6);
}

/* connect(): the only transition that reliably runs in the owner's context. The process is
 * matched by its main thread's name: telemt connects from tokio worker threads, whose own comm is
 * "tokio-runtime-w" (bpf_get_current_comm() reads that). */
static __always_inline void on_connect(const struct sock *sk)
{
	char comm[16];
	struct task_struct *task = bpf_get_current_task_btf();
	if (bpf_probe_read_kernel(comm, sizeof(comm), task->group_leader->comm))
		return;
	if (!bpf_map_lookup_elem(&watch_comms, comm) || !tcp_inet(sk))
		return;
	struct mtlens_conn_state *st = track(sk, bpf_ktime_get_ns());
	if (!st)
		return;
	__builtin_memcpy(st->comm, comm, sizeof(comm));
	st->pid = bpf_get_current_pid_tgid() >> 32;
	st->active = 1;
	st->role = classify_upstream(sk);
	st->state = TCP_SYN_SENT;
}

/* An accepted child socket: skc_num (host order) is still set here. */
static __always_inline void on_accept(const struct sock *sk)
{
	__u16 lport = sk->__sk_common.skc_num;
	if (!bpf_map_lookup_elem(&watch_ports, &lport) || !tcp_inet(sk))
		return;
	__u64 now = bpf_ktime_get_ns();
	struct mtlens_conn_state *st = track(sk, now);
	if (!st)
		return;
	st->role = MTLENS_ROLE_CLIENT;
	st->open_sent = 1;
	st->state = TCP_ESTABLISHED;
	emit(sk, bpf_get_socket_cookie((void *)sk), st, MTLENS_REC_OPEN, TCP_SYN_RECV, now);
}

/*
 * Runs on every TCP state change of every socket on the host, tracked or not: the states are
 * tested first (they come in registers), then the one thing each case needs from the socket: the
 * watched-name lookup at connect, the watched-port lookup at accept, the socket's storage entry
 * otherwise (a pointer chase that finds nothing on an untracked socket).
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(conn_lifecycle, const struct sock *sk, int oldstate, int newstate)
{
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		on_connect(sk);
		return 0;
	}
	if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED) {
		on_accept(sk);
		return 0;
	}
	struct mtlens_conn_state *st = bpf_sk_storage_get(&conns, (void *)sk, NULL, 0);
	if (!st || st->closed)
		return 0;
	if (newstate == TCP_CLOSE) {
		close_tracked(sk, bpf_get_socket_cookie((void *)sk), st, oldstate);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED) {
		/* An upstream connect() completed (its entry was made at connect). */
		if (!live(st))
			return 0;
		st->open_sent = 1;
		st->state = TCP_ESTABLISHED;
		emit(sk, bpf_get_socket_cookie((void *)sk), st, MTLENS_REC_OPEN, oldstate, bpf_ktime_get_ns());
		return 0;
	}
	st->state = newstate;
	return 0;
}

/*
 * Backstop for the close record. Every full TCP socket is destroyed through tcp_destroy_sock,
 * after its move to CLOSE and before its socket-local storage is freed. A socket still tracked
 * here went to CLOSE without conn_lifecycle writing its close (a run of the program the kernel
 * skipped, or a path to CLOSE it did not see): the close is written now, from the last state
 * seen, and counted, so no connection stays open forever in the agent and no slot leaks.
 */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(conn_destroy, struct sock *sk)
{
	struct mtlens_conn_state *st = bpf_sk_storage_get(&conns, sk, NULL, 0);
	if (!st || st->closed)
		return 0;
	if (st->open_sent)
		stat(MTLENS_PROG_CONN_LIFECYCLE, MTLENS_STAT_CLOSED_AT_DESTROY);
	close_tracked(sk, bpf_get_socket_cookie(sk), st, st->state);
	return 0;
}

/*
 * Second source of the close record, outside the tracepoints: tcp_set_state() runs the sockops
 * STATE_CB of a socket that asked for it just before it fires inet_sock_set_state. Measured here
 * (docs/kernel.md): while other BPF programs attach to and detach from the same tracepoints, now
 * and then one socket's last transitions (FIN_WAIT2, CLOSE) and its tcp_destroy_sock reach no
 * BPF program at all, while its STATE_CB calls still run. Whichever writes a socket's close
 * first (this program, for the sockets it follows) marks the entry closed and the others skip
 * it: one close record per connection, with the same counters (read at the same point of the
 * same transition). Followed: sockets accepted on a watched port (asked for at
 * PASSIVE_ESTABLISHED, just before the tracepoint tracks them) and tracked upstream connections
 * (at ACTIVE_ESTABLISHED, just after). Adopted sockets have the tracepoints only. Runs for the
 * sockets of the cgroup subtree it is attached to (ebpf.sockops_cgroup: by default the cgroup v2
 * root the agent sees); every other callback returns at once.
 */
static __always_inline void follow_state(struct bpf_sock_ops *skops)
{
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

SEC("sockops")
int conn_state_ops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk;
	struct mtlens_conn_state *st;
	switch (skops->op) {
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		__u16 lport = skops->local_port;
		if (bpf_map_lookup_elem(&watch_ports, &lport))
			follow_state(skops);
		return 1;
	}
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		sk = skops->sk;
		if (sk && live(bpf_sk_storage_get(&conns, sk, NULL, 0)))
			follow_state(skops);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != TCP_CLOSE)
			return 1;
		sk = skops->sk;
		if (!sk)
			return 1;
		st = bpf_sk_storage_get(&conns, sk, NULL, 0);
		if (st && !st->closed)
			close_tracked((const struct sock *)sk, bpf_get_socket_cookie(skops), st, skops->args[0]);
		return 1;
	default:
		return 1;
	}
}

/* Full sockets only: timewait and request sockets (which tcp_send_reset may pass) have no
 * socket-local storage. A closed entry still answers (see untrack). */
static __always_inline struct mtlens_conn_state *tracked(const struct sock *sk)
{
	if (!sk)
		return NULL;
	int state = sk->__sk_common.skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return NULL;
	return bpf_sk_storage_get(&conns, (void *)sk, NULL, 0);
}

static __always_inline void health_inc(const struct sock *sk, __u32 counter)
{
	struct mtlens_conn_state *st = tracked(sk);
	if (st && st->role < MTLENS_NR_ROLES)
		count(&health, st->role * MTLENS_HEALTH_NR + counter, 1);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit, const struct sock *sk)
{
	health_inc(sk, MTLENS_HEALTH_RETRANSMITS);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk)
{
	/* sk is NULL for resets answering segments that match no socket. An abortive close sends
	 * its reset after the socket reached CLOSE: its entry is kept for that. */
	health_inc(sk, MTLENS_HEALTH_RESETS_SENT);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	health_inc(sk, MTLENS_HEALTH_RESETS_RECEIVED);
	return 0;
}

/* Live counters of tracked sockets, one fixed binary record each, read by the agent every
 * ebpf.snapshot_interval_ms so long-lived connections count while they are open. */
SEC("iter/tcp")
int conn_snapshot(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	/* NULL for timewait and request sockets: their final counts come with the close record. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	struct sock *sk = (struct sock *)tp;
	int state = sk->__sk_common.skc_state;
	if (state == TCP_CLOSE || state == TCP_LISTEN || state == TCP_SYN_SENT)
		return 0;
	__u16 kind = MTLENS_REC_SNAPSHOT;
	struct mtlens_conn_state *st = bpf_sk_storage_get(&conns, sk, NULL, 0);
	if (!live(st)) {
		/*
		 * Accepted on a watched port before the agent was watching (it started, restarted or
		 * began watching the port later), or refused while the table was full: track it from now on, so a long-lived client is not
		 * invisible until it reconnects. Only established connections; the counters read now
		 * are the baseline, so bytes from before are not counted. Its close then comes through
		 * conn_lifecycle like any other. (Connections of watched processes cannot be told
		 * apart here: the owner is known only at connect().)
		 */
		__u16 lport = sk->__sk_common.skc_num;
		if (state != TCP_ESTABLISHED || !bpf_map_lookup_elem(&watch_ports, &lport))
			return 0;
		st = track(sk, bpf_ktime_get_ns());
		if (!st)
			return 0;
		st->role = MTLENS_ROLE_CLIENT;
		st->open_sent = 1;
		st->state = TCP_ESTABLISHED;
		kind = MTLENS_REC_ADOPT;
	} else if (!st->open_sent) {
		return 0;
	}
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct mtlens_conn_record r = {};
	r.kind = kind;
	r.role = st->role;
	r.state = state;
	r.pid = st->pid;
	r.cookie = cookie;
	r.ts_ns = bpf_ktime_get_ns();
	r.opened_ns = st->opened_ns;
	read_addrs(tp, &r);
	read_counters(tp, state, st->active, &r);
	rtt_sample(tp, st->role);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* Benchmark only: one OPEN or CLOSE record per syscall of the benchmark's load generator, in the
 * real format, alternating per CPU so that the tracker sees complete connections. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bench_seq SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_producer)
{
	__u32 zero = 0;
	__u32 *tgid = bpf_map_lookup_elem(&bench_cfg, &zero);
	if (!tgid || *tgid == 0 || (bpf_get_current_pid_tgid() >> 32) != *tgid)
		return 0;
	__u64 *seq = bpf_map_lookup_elem(&bench_seq, &zero);
	if (!seq)
		return 0;
	__u64 n = (*seq)++;
	stat(MTLENS_PROG_BENCH_PRODUCER, MTLENS_STAT_SEEN);
	struct mtlens_conn_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		stat(MTLENS_PROG_BENCH_PRODUCER, MTLENS_STAT_DROPPED_RINGBUF_FULL);
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	__u64 cpu = bpf_get_smp_processor_id();
	r->kind = (n & 1) ? MTLENS_REC_CLOSE : MTLENS_REC_OPEN;
	r->role = MTLENS_ROLE_CLIENT;
	r->family = 4;
	r->close_kind = (n & 1) ? MTLENS_CLOSE_FIN : MTLENS_CLOSE_NONE;
	r->cookie = (1ULL << 62) | (cpu << 48) | (n >> 1);
	r->ts_ns = bpf_ktime_get_ns();
	r->opened_ns = r->ts_ns;
	r->rx_bytes = 100;
	r->tx_bytes = 200;
	r->local_port = 443;
	r->peer_port = 40000 + (n & 0x3ff);
	r->local_addr[0] = 127;
	r->local_addr[3] = 1;
	r->peer_addr[0] = 127;
	r->peer_addr[3] = 2;
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	stat(MTLENS_PROG_BENCH_PRODUCER, MTLENS_STAT_SUBMITTED);
	return 0;
}
