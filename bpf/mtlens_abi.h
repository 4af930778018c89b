/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one definition of what crosses the kernel/user boundary: ring and iterator records,
 * config and counter map layouts. Included by the BPF programs (bpf/mtlens.bpf.c), the native
 * shim (native/shim.c), and mirrored field by field in src/ebpf/abi.ts; the shim reports the
 * version and every offset below, and the agent refuses to start when they differ from its own.
 *
 * Bump MTLENS_ABI_VERSION on any change to this file.
 */
#ifndef MTLENS_ABI_H
#define MTLENS_ABI_H

#ifndef MTLENS_ABI_VERSION
#define MTLENS_ABI_VERSION 3
#endif

/* Record kinds. */
#define MTLENS_REC_OPEN 1     /* connection established (ring) */
#define MTLENS_REC_CLOSE 2    /* connection closed, final counters (ring) */
#define MTLENS_REC_SNAPSHOT 3 /* counters of a live tracked connection (iter/tcp) */
#define MTLENS_REC_BENCH 4    /* synthetic producer of the ingest benchmark (ring) */
#define MTLENS_REC_ADOPT 5    /* a live socket on a watched port that opened before the agent
                               * watched it, tracked from now on; its counters are the baseline
                               * (iter/tcp) */

/* Roles as decided in the kernel: accepted on a watched port, or connected by a watched process. */
#define MTLENS_ROLE_CLIENT 0
#define MTLENS_ROLE_UPSTREAM_DC 1
#define MTLENS_ROLE_UPSTREAM_OTHER 2
#define MTLENS_NR_ROLES 3

#define MTLENS_CLOSE_NONE 0
#define MTLENS_CLOSE_FIN 1
#define MTLENS_CLOSE_RST 2

/*
 * One record for open, close and snapshot: 128 bytes, naturally aligned, little-endian (x86).
 * Addresses: IPv4 in the first 4 bytes (network order), IPv6 in all 16. Byte counters are
 * application payload bytes: SYN and FIN sequence space already removed (see the BPF code).
 */
struct mtlens_conn_record {
	__u16 kind;        /*   0 MTLENS_REC_* */
	__u8 role;         /*   2 MTLENS_ROLE_* */
	__u8 family;       /*   3 4 or 6 */
	__u8 close_kind;   /*   4 MTLENS_CLOSE_* */
	__u8 state;        /*   5 TCP state (snapshot) or old state (close) */
	__u16 local_port;  /*   6 host order */
	__u16 peer_port;   /*   8 host order */
	__u16 pad0;        /*  10 */
	__u32 pid;         /*  12 tgid that connected (upstreams), 0 for accepted */
	__u64 cookie;      /*  16 socket cookie */
	__u64 ts_ns;       /*  24 CLOCK_MONOTONIC of the event */
	__u64 opened_ns;   /*  32 CLOCK_MONOTONIC when tracking began (connect or accept) */
	__u64 rx_bytes;    /*  40 payload received */
	__u64 tx_bytes;    /*  48 payload sent and acknowledged by the peer */
	__u32 segs_in;     /*  56 */
	__u32 segs_out;    /*  60 */
	__u32 srtt_us;     /*  64 smoothed RTT */
	__u32 min_rtt_us;  /*  68 */
	__u32 retransmits; /*  72 total_retrans */
	__u32 lost;        /*  76 */
	__u8 local_addr[16]; /*  80 */
	__u8 peer_addr[16];  /*  96 */
	char comm[16];       /* 112 process that connected (upstreams) */
};                       /* 128 */

#define MTLENS_RECORD_SIZE 128

/* Value of `conns` (socket-local storage): the kernel's table of tracked sockets. */
struct mtlens_conn_state {
	__u64 opened_ns;
	__u32 pid;
	__u8 role;
	__u8 active; /* 1: this host opened it (its SYN counts in bytes_acked) */
	__u8 open_sent;
	__u8 refused; /* 1: not tracked (table full when it came); kept so it is counted only once */
	char comm[16];
	/* 1: closed (close record written, slot released). Kept until the kernel frees the socket:
	 * the reset an abortive close sends comes after the transition to CLOSE. */
	__u8 closed;
	__u8 state; /* TCP state after the last transition seen: the old state if CLOSE is missed */
	__u8 pad[6];
};

/* Key of `dc_endpoints` (exact Telegram endpoints from discovery) and of the LPM trie `dc_nets`. */
struct mtlens_endpoint_key {
	__u8 addr[16]; /* IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d) */
	__u16 port;    /* host order */
	__u16 pad;
};

struct mtlens_net_key {
	__u32 prefixlen; /* bits of addr that must match; IPv4 prefixes are offset by 96 */
	__u8 addr[16];
};

/* `stats`: per-CPU array, index = program * MTLENS_STAT_NR + stat. seen = submitted + dropped. */
#define MTLENS_PROG_CONN_LIFECYCLE 0
#define MTLENS_PROG_BENCH_PRODUCER 1
#define MTLENS_NR_STAT_PROGS 2

#define MTLENS_STAT_SEEN 0
#define MTLENS_STAT_SUBMITTED 1
#define MTLENS_STAT_DROPPED_RINGBUF_FULL 2 /* bpf_ringbuf_reserve failed */
#define MTLENS_STAT_DROPPED_TABLE_FULL 3   /* `conns` full: connection not tracked at all */
#define MTLENS_STAT_CLOSED_AT_DESTROY 4    /* close record written when the socket was destroyed:
                                            * its move to CLOSE wrote none (conn_lifecycle only) */
#define MTLENS_STAT_NR 5

/* `health`: per-CPU array, index = role * MTLENS_HEALTH_NR + counter. */
#define MTLENS_HEALTH_RETRANSMITS 0
#define MTLENS_HEALTH_RESETS_SENT 1
#define MTLENS_HEALTH_RESETS_RECEIVED 2
#define MTLENS_HEALTH_RTT_SAMPLES 3
#define MTLENS_HEALTH_RTT_SUM_US 4
#define MTLENS_HEALTH_NR 5

/* `rtt_hist`: per-CPU array, index = role * MTLENS_RTT_BUCKETS + b; b = floor(log2(srtt_us)),
 * the last bucket also holds everything larger. */
#define MTLENS_RTT_BUCKETS 26

/* `limits`: array, [MTLENS_LIMIT_TRACKED] = sockets tracked now, [MTLENS_LIMIT_MAX] = the most
 * allowed (ebpf.max_tracked_connections, set by the loader before attaching). */
#define MTLENS_LIMIT_TRACKED 0
#define MTLENS_LIMIT_MAX 1
#define MTLENS_NR_LIMITS 2

/* Sizing of the config maps. */
#define MTLENS_MAX_WATCH_PORTS 64
#define MTLENS_MAX_WATCH_COMMS 16
#define MTLENS_MAX_DC_ENDPOINTS 4096
#define MTLENS_MAX_DC_NETS 256

#endif
