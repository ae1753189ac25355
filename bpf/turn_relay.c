// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//
// floe's XDP fast path for TURN over UDP allocations, IPv4 (RFC 8656 §11, §12).
//
// client -> peer: a ChannelData message (RFC 8656 §12.4) from a client 5-tuple with a channel
//   that user space mirrored into `chans` loses its 4-byte header and leaves as a UDP datagram
//   from the allocation's relayed address to the channel's peer; a Send indication (§11.1,
//   shape: header, XOR-PEER-ADDRESS, DATA) to a peer IP mirrored into `perms` likewise loses its
//   STUN header, attribute headers and padding.
// peer -> client: a UDP datagram from a peer to a relayed address whose (peer, relay) pair user
//   space mirrored into `peers` gains the ChannelData header; one from a permitted peer IP
//   without a channel (`dperms`) becomes a Data indication (§11.4) built here; both leave from
//   the server's listening address to the client.
// relay-to-relay: when a client's message is addressed to another of our relayed addresses
//   that permits the sender's, the second step follows at once (see relay_to_relay).
//
// User space (crates/xdp, driven by floe-turn's FastPath events) is the single source of truth:
// an entry exists only while the channel is bound, the peer's permission lives and the allocation
// exists. Anything this program does not handle is passed unchanged (XDP_PASS) to the kernel
// stack and so to floe's user-space relay: non-IPv4, IP options, fragments, non-UDP, unknown
// 5-tuples or channels, a ChannelData length that does not match the datagram (padding or
// garbage), a destination with no route or no resolved neighbour on an attached interface, or
// a packet too big for the egress MTU.
//
// The next hop (egress interface, MAC addresses, MTU) of every client and peer IP comes from
// user space (`nexthops`), which reads the kernel's routes and neighbours: bpf_fib_lookup()
// refuses to answer (BPF_FIB_LKUP_RET_FWD_DISABLED) unless IP forwarding is enabled on the
// interface, and a TURN server must not need forwarding. A destination without a resolved next
// hop is passed to user space, whose socket send resolves the neighbour; user space then adds
// the next hop and later packets take the fast path.
//
// Checksums are updated incrementally (RFC 1624): the UDP checksum of the received packet must
// be complete, which it is for packets from a wire. (A sender on the same host using veth with TX
// checksum offload hands over a partial checksum; see docs/xdp.md.)

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define CHANNEL_HDR 4

// Every address and port below is in network byte order, as on the wire.

struct chan_key {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
};

struct chan_val {
	__u32 relay_ip;
	__u32 peer_ip;
	__u16 relay_port;
	__u16 peer_port;
	__u32 pad;
	__u64 packets;
	__u64 bytes;
};

// Where a destination IP is reached: filled by user space from the routes and neighbours.
struct nexthop {
	__u32 ifindex;
	__u8 dmac[ETH_ALEN];
	__u8 smac[ETH_ALEN];
	__u16 mtu;
	__u16 pad;
};

struct peer_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

struct peer_val {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 pad;
	__u64 packets;
	__u64 bytes;
};

// A permission (RFC 8656 §9) of a client, for its Send indications: client 5-tuple + peer IP.
struct perm_key {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u32 peer_ip;
};

struct perm_val {
	__u32 relay_ip;
	__u16 relay_port;
	__u16 pad;
	__u64 packets;
	__u64 bytes;
};

// The same permission seen from the peer side, for Data indications: any port of the peer IP
// sending to the relayed address (when no channel carries that peer address).
struct dperm_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 relay_port;
	__u16 pad;
};

struct dperm_val {
	__u32 client_ip;
	__u32 server_ip;
	__u16 client_port;
	__u16 server_port;
	__u32 pad;
	__u64 packets;
	__u64 bytes;
};

// Counter indexes in `stats` (mirrored in crates/xdp/src/maps.rs).
enum {
	STAT_TO_PEER = 0,      // ChannelData relayed client -> peer
	STAT_TO_CLIENT = 1,    // datagrams relayed peer -> client
	STAT_PASS_NO_ROUTE = 2, // known flow, but no next hop from user space (yet)
	STAT_PASS_TOO_BIG = 3, // known flow, but bigger than the egress MTU
	STAT_PASS_LENGTH = 4,  // known channel, but the ChannelData length does not match
	STAT_REDIRECT_FAILED = 5,
	STAT_SEND_TO_PEER = 6,    // Send indications relayed client -> peer (as plain UDP)
	STAT_DATA_TO_CLIENT = 7,  // datagrams relayed peer -> client as Data indications
	STAT_PASS_SEND_FORMAT = 8, // a Send indication of another shape (see send_to_peer)
	STAT_PASS_TAIL = 9,       // no room at either end of the frame for a Data indication
	STAT_DATA_SHIFTED = 10,   // Data indications built by moving the data (no tailroom)
	STAT_RELAY_TO_RELAY = 11, // client -> our own relayed address, handed to its client at once
	STAT_MAX = 16,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct chan_key);
	__type(value, struct chan_val);
} chans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct peer_val);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct perm_key);
	__type(value, struct perm_val);
} perms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct dperm_key);
	__type(value, struct dperm_val);
} dperms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct nexthop);
} nexthops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline __u32 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

// One's complement sum of an IPv4 address's two 16-bit words (byte order independent).
static __always_inline __u32 ip_words(__u32 ip)
{
	return (ip & 0xffff) + (ip >> 16);
}

// ~x in one's complement for a sum of `n` 16-bit words: add 0xffff per word minus the sum.
// Callers pass folded sums, so `n * 0xffff - s` never underflows.
static __always_inline __u32 neg(__u32 folded_sum)
{
	return 0xffff - folded_sum;
}

static __always_inline __u16 ip_checksum(void *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		if (i != 5)
			s += w[i];
	return ~fold(s) & 0xffff;
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). `old_sum` and `new_sum` are one's complement sums of
// the 16-bit words that changed (pseudo-header and UDP header fields, the ChannelData header).
static __always_inline __u16 udp_csum_update(__u16 csum, __u32 old_sum, __u32 new_sum)
{
	if (csum == 0)
		return 0; // IPv4 UDP without a checksum stays without one (RFC 768)
	__u32 s = (~csum & 0xffff) + neg(fold(old_sum)) + fold(new_sum);
	__u16 r = ~fold(s) & 0xffff;
	return r == 0 ? 0xffff : r;
}

// The next hop towards `dst` for an IP packet of `tot_len` bytes; counts and returns NULL when
// there is none yet or the packet is bigger than its MTU.
static __always_inline struct nexthop *route(__u32 dst, __u16 tot_len)
{
	struct nexthop *nh = bpf_map_lookup_elem(&nexthops, &dst);
	if (!nh || nh->ifindex == 0) {
		count(STAT_PASS_NO_ROUTE);
		return 0;
	}
	if (tot_len > nh->mtu) {
		count(STAT_PASS_TOO_BIG);
		return 0;
	}
	return nh;
}

struct headers {
	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed));

// Writes `h` at the packet's (new) start and sends it out of `ifindex`.
static __always_inline int emit(struct xdp_md *ctx, struct headers *h, __u32 ifindex, __u32 stat)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(*h) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, h, sizeof(*h));
	if (stat < STAT_MAX)
		count(stat);
	// Also back out of the ingress interface (relay-to-relay, or client and peer behind one
	// link) by redirect, not XDP_TX: a veth flushes XDP_TX frames to its far end only when
	// that end runs an XDP program itself, and they would wait there (measured on 6.18).
	int rc = bpf_redirect(ifindex, 0);
	if (rc != XDP_REDIRECT)
		count(STAT_REDIRECT_FAILED);
	return rc;
}

static __always_inline void set_l2(struct headers *h, struct nexthop *nh)
{
	__builtin_memcpy(h->eth.h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(h->eth.h_source, nh->smac, ETH_ALEN);
	h->eth.h_proto = bpf_htons(ETH_P_IP);
}

static __always_inline void set_ip(struct headers *h, __u32 src, __u32 dst, __u16 tot_len)
{
	h->ip.tot_len = bpf_htons(tot_len);
	h->ip.saddr = src;
	h->ip.daddr = dst;
	h->ip.ttl = 64; // the relay originates the datagram
	h->ip.frag_off &= bpf_htons(0x4000); // keep DF only
	h->ip.check = 0;
	h->ip.check = ip_checksum((void *)h + sizeof(struct ethhdr));
}

// STUN (RFC 8489 §5): the magic cookie, and the indications relayed here (RFC 8656 §17).
#define STUN_HDR 20
#define MAGIC_COOKIE 0x2112A442
#define TYPE_SEND_IND 0x0016
#define TYPE_DATA_IND 0x0017
#define ATTR_XOR_PEER_ADDRESS 0x0012
#define ATTR_DATA 0x0013
// Header + XOR-PEER-ADDRESS (IPv4: 4 + 8) + DATA's attribute header: what a Send indication
// loses and a Data indication gains in front of the application data.
#define IND_HDR (STUN_HDR + 12 + 4)
// Application data longer than this stays in user space (keeps the verifier's bounds simple;
// far above any MTU this program sends to).
#define MAX_DATA 0x3fff

static __always_inline int to_client(struct xdp_md *ctx, struct headers *h, struct peer_val *v,
				     __u16 data_len);
static __always_inline int data_to_client(struct xdp_md *ctx, struct headers *h,
					  struct dperm_val *v, __u16 data_len);

// Bytes of a Data indication's message (header, XOR-PEER-ADDRESS, DATA, padding) for `data_len`.
#define DATA_IND_LEN(data_len) (IND_HDR + (((data_len) + 3) & ~3u))

// Relay-to-relay: when the datagram a client's message becomes (src = our relayed address
// `src`, dst = `dst`) is addressed to another of our relayed addresses whose allocation permits
// `src` (a channel bound to it, or a permission for its IP), the program produces the packet
// toward that allocation's client at once (ChannelData or Data indication), as user space's
// in-process handover does. Returns 1 and sets *pv (channel) or *dv (permission) when so, and
// only when that client's next hop is known, so that the caller can still pass the untouched
// packet otherwise.
struct r2r {
	struct peer_val *pv;
	struct dperm_val *dv;
};

static __always_inline int relay_to_relay(__u32 src_ip, __u16 src_port, __u32 dst_ip,
					  __u16 dst_port, __u16 data_len, struct r2r *r)
{
	struct peer_key pk = {
		.peer_ip = src_ip,
		.relay_ip = dst_ip,
		.peer_port = src_port,
		.relay_port = dst_port,
	};
	r->pv = bpf_map_lookup_elem(&peers, &pk);
	r->dv = 0;
	__u32 client_ip;
	__u16 tot_len;
	if (r->pv) {
		client_ip = r->pv->client_ip;
		tot_len = sizeof(struct iphdr) + sizeof(struct udphdr) + CHANNEL_HDR + data_len;
	} else {
		struct dperm_key dk = {
			.peer_ip = src_ip,
			.relay_ip = dst_ip,
			.relay_port = dst_port,
		};
		r->dv = bpf_map_lookup_elem(&dperms, &dk);
		// (data_to_client's own limits, checked here while the packet is untouched)
		if (!r->dv || data_len == 0 || data_len > MAX_DATA)
			return 0;
		client_ip = r->dv->client_ip;
		tot_len = sizeof(struct iphdr) + sizeof(struct udphdr) + DATA_IND_LEN(data_len);
	}
	if (!route(client_ip, tot_len))
		return 0;
	count(STAT_RELAY_TO_RELAY);
	return 1;
}

// client -> peer: strip the ChannelData header.
static __always_inline int to_peer(struct xdp_md *ctx, struct headers *h, struct chan_val *v,
				   __u16 chan_hdr0, __u16 chan_hdr1, __u16 data_len)
{
	__u16 udp_len = data_len + sizeof(struct udphdr);
	__u16 tot_len = udp_len + sizeof(struct iphdr);
	struct r2r r;
	struct nexthop *nh = 0;
	int own = relay_to_relay(v->relay_ip, v->relay_port, v->peer_ip, v->peer_port, data_len, &r);
	if (!own) {
		nh = route(v->peer_ip, tot_len);
		if (!nh)
			return XDP_PASS;
	}
	__u32 old_sum = ip_words(h->ip.saddr) + ip_words(h->ip.daddr) + h->udp.source +
			h->udp.dest + 2 * (__u32)h->udp.len + chan_hdr0 + chan_hdr1;
	__u16 new_len = bpf_htons(udp_len);
	__u32 new_sum = ip_words(v->relay_ip) + ip_words(v->peer_ip) + v->relay_port +
			v->peer_port + 2 * (__u32)new_len;
	h->udp.check = udp_csum_update(h->udp.check, old_sum, new_sum);
	h->udp.source = v->relay_port;
	h->udp.dest = v->peer_port;
	h->udp.len = new_len;
	set_ip(h, v->relay_ip, v->peer_ip, tot_len);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, data_len);
	if (bpf_xdp_adjust_head(ctx, CHANNEL_HDR))
		return XDP_ABORTED;
	if (own)
		return r.pv ? to_client(ctx, h, r.pv, data_len) : data_to_client(ctx, h, r.dv, data_len);
	set_l2(h, nh);
	return emit(ctx, h, nh->ifindex, STAT_TO_PEER);
}

// peer -> client: prepend the ChannelData header.
static __always_inline int to_client(struct xdp_md *ctx, struct headers *h, struct peer_val *v,
				     __u16 data_len)
{
	__u16 udp_len = data_len + sizeof(struct udphdr) + CHANNEL_HDR;
	__u16 tot_len = udp_len + sizeof(struct iphdr);
	if (data_len > 0xffff - 64)
		return XDP_PASS;
	struct nexthop *nh = route(v->client_ip, tot_len);
	if (!nh)
		return XDP_PASS;
	__u16 chan_len = bpf_htons(data_len);
	__u32 old_sum = ip_words(h->ip.saddr) + ip_words(h->ip.daddr) + h->udp.source +
			h->udp.dest + 2 * (__u32)h->udp.len;
	__u16 new_len = bpf_htons(udp_len);
	__u32 new_sum = ip_words(v->server_ip) + ip_words(v->client_ip) + v->server_port +
			v->client_port + 2 * (__u32)new_len + v->channel + chan_len;
	h->udp.check = udp_csum_update(h->udp.check, old_sum, new_sum);
	h->udp.source = v->server_port;
	h->udp.dest = v->client_port;
	h->udp.len = new_len;
	set_ip(h, v->server_ip, v->client_ip, tot_len);
	set_l2(h, nh);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, data_len);
	if (bpf_xdp_adjust_head(ctx, -CHANNEL_HDR))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 *chdr = data + sizeof(*h);
	if ((void *)(chdr + 2) > data_end)
		return XDP_ABORTED;
	chdr[0] = v->channel;
	chdr[1] = chan_len;
	return emit(ctx, h, nh->ifindex, STAT_TO_CLIENT);
}


// Scratch space to move a datagram's data inside the frame (see shift_left).
#define SHIFT_CHUNK 256
struct scratch {
	__u8 b[SHIFT_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

// Moves `len` bytes of the frame from offset `from` to the lower offset `to`, a chunk at a time
// (each chunk is read whole before it is written, so the overlap is safe). 0 or -1.
static __always_inline int shift_left(struct xdp_md *ctx, __u32 to, __u32 from, __u32 len)
{
	__u32 zero = 0;
	struct scratch *buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!buf)
		return -1;
#pragma clang loop unroll(disable)
	for (__u32 done = 0; done < (MAX_DATA + 1); done += SHIFT_CHUNK) {
		if (done >= len)
			break;
		__u32 n = len - done;
		if (n > SHIFT_CHUNK)
			n = SHIFT_CHUNK;
		asm volatile("" : "+r"(n)); // keep the bound checks below for the verifier
		n &= 0x1ff;
		if (n == 0 || n > SHIFT_CHUNK)
			return -1;
		if (bpf_xdp_load_bytes(ctx, from + done, buf->b, n))
			return -1;
		if (bpf_xdp_store_bytes(ctx, to + done, buf->b, n))
			return -1;
	}
	return 0;
}

// Zeroes the `pad` (0..3) bytes at offset `off` (at most sizeof(headers) + IND_HDR + MAX_DATA).
static __always_inline int zero_pad(struct xdp_md *ctx, __u32 off, __u32 pad)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	// The mask bounds the offset for the verifier; the empty asm keeps clang from dropping it
	// as redundant (callers' offsets are smaller).
	asm volatile("" : "+r"(off));
	__u8 *p = data + (off & 0x7fff);
#pragma unroll
	for (int i = 0; i < 3; i++) {
		if (i < pad) {
			if ((void *)(p + i + 1) > data_end)
				return -1;
			p[i] = 0;
		}
	}
	return 0;
}

// One's complement sum of `n` 16-bit words (n even count of bytes / 2, unrolled).
static __always_inline __u32 sum_words(__u16 *w, int n)
{
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < n; i++)
		s += w[i];
	return s;
}

// client -> peer: a Send indication (RFC 8656 §11.1) whose permission user space mirrored into
// `perms` becomes a UDP datagram from the relayed address to the XOR-PEER-ADDRESS carrying the
// DATA value. Handled shape (what clients send): header, XOR-PEER-ADDRESS (IPv4), DATA, nothing
// else, padding zero. Any other shape (DONT-FRAGMENT, FINGERPRINT, unknown attributes, another
// order, IPv6 peer) returns -1 and the caller passes it to user space.
static __always_inline int send_to_peer(struct xdp_md *ctx, struct headers *h, __u16 payload_len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 *m = data + sizeof(*h);
	if ((void *)(m + IND_HDR / 2) > data_end)
		return -1;
	// A Send indication (type, cookie) ...
	if (m[0] != bpf_htons(TYPE_SEND_IND) || m[2] != bpf_htons(MAGIC_COOKIE >> 16) ||
	    m[3] != bpf_htons(MAGIC_COOKIE & 0xffff))
		return -1;
	// ... whose first attribute is XOR-PEER-ADDRESS of length 8, family IPv4. Others (DATA
	// first, as coturn's uclient sends, or an IPv6 peer) are counted and passed.
	if (m[10] != bpf_htons(ATTR_XOR_PEER_ADDRESS) || m[11] != bpf_htons(8) ||
	    m[12] != bpf_htons(0x0001)) {
		count(STAT_PASS_SEND_FORMAT);
		return -1;
	}
	__u32 peer_ip = (*(__u32 *)(m + 14)) ^ bpf_htonl(MAGIC_COOKIE);
	__u16 peer_port = m[13] ^ bpf_htons(MAGIC_COOKIE >> 16);
	struct perm_key k = {
		.client_ip = h->ip.saddr,
		.server_ip = h->ip.daddr,
		.client_port = h->udp.source,
		.server_port = h->udp.dest,
		.peer_ip = peer_ip,
	};
	struct perm_val *v = bpf_map_lookup_elem(&perms, &k);
	if (!v)
		return -1;
	// From here it is our client's permitted Send: any other shape is counted.
	__u32 data_len = bpf_ntohs(m[17]);
	__u32 padded = (data_len + 3) & ~3u;
	if (m[16] != bpf_htons(ATTR_DATA) || bpf_ntohs(m[1]) + STUN_HDR != payload_len ||
	    IND_HDR + padded != payload_len || data_len == 0 || data_len > MAX_DATA || peer_port == 0) {
		count(STAT_PASS_SEND_FORMAT);
		return -1;
	}
	// The padding must be zero: then dropping it leaves the UDP checksum's sum unchanged (the
	// data starts at an even offset before and after). Check the last word of the padded value.
	__u32 pad = padded - data_len;
	if (pad) {
		__u32 last = (padded - 4) & MAX_DATA;
		__u8 *w = (__u8 *)m + IND_HDR + last;
		if ((void *)(w + 4) > data_end)
			return -1;
		if ((pad >= 3 && w[1]) || (pad >= 2 && w[2]) || w[3]) {
			count(STAT_PASS_SEND_FORMAT);
			return -1;
		}
	}
	__u16 udp_len = data_len + sizeof(struct udphdr);
	__u16 tot_len = udp_len + sizeof(struct iphdr);
	struct r2r r;
	struct nexthop *nh = 0;
	int own = relay_to_relay(v->relay_ip, v->relay_port, peer_ip, peer_port, data_len, &r);
	if (!own) {
		nh = route(peer_ip, tot_len);
		if (!nh)
			return -1;
	}
	__u32 old_sum = ip_words(h->ip.saddr) + ip_words(h->ip.daddr) + h->udp.source +
			h->udp.dest + 2 * (__u32)h->udp.len + sum_words(m, IND_HDR / 2);
	__u16 new_len = bpf_htons(udp_len);
	__u32 new_sum = ip_words(v->relay_ip) + ip_words(peer_ip) + v->relay_port + peer_port +
			2 * (__u32)new_len;
	h->udp.check = udp_csum_update(h->udp.check, old_sum, new_sum);
	h->udp.source = v->relay_port;
	h->udp.dest = peer_port;
	h->udp.len = new_len;
	set_ip(h, v->relay_ip, peer_ip, tot_len);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, data_len);
	if (pad && bpf_xdp_adjust_tail(ctx, -(int)pad))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, IND_HDR))
		return XDP_ABORTED;
	count(STAT_SEND_TO_PEER);
	if (own)
		return r.pv ? to_client(ctx, h, r.pv, data_len) : data_to_client(ctx, h, r.dv, data_len);
	set_l2(h, nh);
	return emit(ctx, h, nh->ifindex, STAT_MAX);
}

// peer -> client without a channel: a datagram from a permitted peer IP becomes a Data
// indication (RFC 8656 §11.4): a STUN header with a fresh transaction id, XOR-PEER-ADDRESS (the
// peer's address), DATA with its value padded with zeros to 4 bytes.
static __always_inline int data_to_client(struct xdp_md *ctx, struct headers *h,
					  struct dperm_val *v, __u16 data_len)
{
	if (data_len == 0 || data_len > MAX_DATA)
		return XDP_PASS;
	__u32 dlen = data_len & MAX_DATA;
	__u32 padded = (dlen + 3) & ~3u;
	__u32 pad = padded - dlen;
	__u16 udp_len = IND_HDR + padded + sizeof(struct udphdr);
	__u16 tot_len = udp_len + sizeof(struct iphdr);
	struct nexthop *nh = route(v->client_ip, tot_len);
	if (!nh)
		return XDP_PASS;
	// Grow the tail for the padding first: when the frame has no room the packet is still
	// untouched. A frame with no tailroom (veth hands XDP the sender's skb, sized to fit) grows
	// at the head by the padding too, and the data moves `pad` bytes towards the front.
	int shifted = 0;
	if (pad) {
		if (bpf_xdp_adjust_tail(ctx, pad) == 0) {
			if (zero_pad(ctx, sizeof(*h) + dlen, pad))
				return XDP_ABORTED;
		} else if (bpf_xdp_adjust_head(ctx, -(int)(IND_HDR + pad)) == 0) {
			__u32 to = sizeof(*h) + IND_HDR;
			if (shift_left(ctx, to, to + pad, dlen) || zero_pad(ctx, to + dlen, pad))
				return XDP_ABORTED;
			shifted = 1;
			count(STAT_DATA_SHIFTED);
		} else {
			count(STAT_PASS_TAIL);
			return XDP_PASS;
		}
	}
	__u16 m[IND_HDR / 2];
	__u32 tid0 = bpf_get_prandom_u32(), tid1 = bpf_get_prandom_u32(),
	      tid2 = bpf_get_prandom_u32();
	m[0] = bpf_htons(TYPE_DATA_IND);
	m[1] = bpf_htons(IND_HDR - STUN_HDR + padded);
	m[2] = bpf_htons(MAGIC_COOKIE >> 16);
	m[3] = bpf_htons(MAGIC_COOKIE & 0xffff);
	m[4] = tid0;
	m[5] = tid0 >> 16;
	m[6] = tid1;
	m[7] = tid1 >> 16;
	m[8] = tid2;
	m[9] = tid2 >> 16;
	m[10] = bpf_htons(ATTR_XOR_PEER_ADDRESS);
	m[11] = bpf_htons(8);
	m[12] = bpf_htons(0x0001);
	m[13] = h->udp.source ^ bpf_htons(MAGIC_COOKIE >> 16);
	__u32 xip = h->ip.saddr ^ bpf_htonl(MAGIC_COOKIE);
	m[14] = xip;
	m[15] = xip >> 16;
	m[16] = bpf_htons(ATTR_DATA);
	m[17] = bpf_htons(dlen);

	__u32 old_sum = ip_words(h->ip.saddr) + ip_words(h->ip.daddr) + h->udp.source +
			h->udp.dest + 2 * (__u32)h->udp.len;
	__u16 new_len = bpf_htons(udp_len);
	__u32 new_sum = ip_words(v->server_ip) + ip_words(v->client_ip) + v->server_port +
			v->client_port + 2 * (__u32)new_len + sum_words(m, IND_HDR / 2);
	h->udp.check = udp_csum_update(h->udp.check, old_sum, new_sum);
	h->udp.source = v->server_port;
	h->udp.dest = v->client_port;
	h->udp.len = new_len;
	set_ip(h, v->server_ip, v->client_ip, tot_len);
	set_l2(h, nh);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, dlen);
	if (!shifted && bpf_xdp_adjust_head(ctx, -IND_HDR))
		return XDP_ABORTED;
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *stun = data + sizeof(*h);
	if (stun + IND_HDR > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(stun, m, IND_HDR);
	return emit(ctx, h, nh->ifindex, STAT_DATA_TO_CLIENT);
}

SEC("xdp")
int floe_turn_relay(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct headers h;

	if (data + sizeof(h) > data_end)
		return XDP_PASS;
	__builtin_memcpy(&h, data, sizeof(h));
	if (h.eth.h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	// No IP options, no fragments (MF or an offset), UDP only.
	if (h.ip.ihl != 5 || h.ip.version != 4 || (h.ip.frag_off & bpf_htons(0x3fff)) ||
	    h.ip.protocol != IPPROTO_UDP)
		return XDP_PASS;
	__u16 tot_len = bpf_ntohs(h.ip.tot_len);
	__u16 udp_len = bpf_ntohs(h.udp.len);
	if (udp_len < sizeof(struct udphdr) || tot_len != udp_len + sizeof(struct iphdr))
		return XDP_PASS;
	if (data + sizeof(struct ethhdr) + tot_len > data_end)
		return XDP_PASS; // truncated
	__u16 payload_len = udp_len - sizeof(struct udphdr);
	__u16 *payload = data + sizeof(h);

	// client -> peer: RFC 7983, a first byte of 0x40..0x7F is ChannelData.
	if ((void *)(payload + 2) <= data_end && payload_len >= CHANNEL_HDR &&
	    (*(__u8 *)payload & 0xc0) == 0x40) {
		struct chan_key k = {
			.client_ip = h.ip.saddr,
			.server_ip = h.ip.daddr,
			.client_port = h.udp.source,
			.server_port = h.udp.dest,
			.channel = payload[0],
		};
		struct chan_val *v = bpf_map_lookup_elem(&chans, &k);
		if (v) {
			__u16 hdr0 = payload[0], hdr1 = payload[1];
			__u16 len = bpf_ntohs(hdr1);
			// RFC 8656 §12.5: over UDP the datagram holds exactly the message; padding
			// (allowed but not needed) or a short datagram go to user space.
			if (len + CHANNEL_HDR != payload_len) {
				count(STAT_PASS_LENGTH);
				return XDP_PASS;
			}
			return to_peer(ctx, &h, v, hdr0, hdr1, len);
		}
	}

	// client -> peer: a Send indication (RFC 7983: a first byte of 0..3 is STUN).
	if (payload_len >= IND_HDR) {
		int rc = send_to_peer(ctx, &h, payload_len);
		if (rc >= 0)
			return rc;
	}

	// peer -> client.
	struct peer_key pk = {
		.peer_ip = h.ip.saddr,
		.relay_ip = h.ip.daddr,
		.peer_port = h.udp.source,
		.relay_port = h.udp.dest,
	};
	struct peer_val *pv = bpf_map_lookup_elem(&peers, &pk);
	if (pv)
		return to_client(ctx, &h, pv, payload_len);
	struct dperm_key dk = {
		.peer_ip = h.ip.saddr,
		.relay_ip = h.ip.daddr,
		.relay_port = h.udp.dest,
	};
	struct dperm_val *dv = bpf_map_lookup_elem(&dperms, &dk);
	if (dv)
		return data_to_client(ctx, &h, dv, payload_len);
	return XDP_PASS;
}

// Dual-licensed (see the SPDX line); the kernel is told GPL, as GPL-only helpers require.
char LICENSE[] SEC("license") = "GPL";
