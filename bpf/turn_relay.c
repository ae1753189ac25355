// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//
// floe's XDP fast path for TURN ChannelData over UDP allocations, IPv4 (RFC 8656 §12).
//
// client -> peer: a ChannelData message (RFC 8656 §12.4) from a client 5-tuple with a channel
//   that user space mirrored into `chans` loses its 4-byte header and leaves as a UDP datagram
//   from the allocation's relayed address to the channel's peer.
// peer -> client: a UDP datagram from a peer to a relayed address whose (peer, relay) pair user
//   space mirrored into `peers` gains the ChannelData header and leaves from the server's
//   listening address to the client.
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

// Counter indexes in `stats` (mirrored in crates/xdp/src/maps.rs).
enum {
	STAT_TO_PEER = 0,      // ChannelData relayed client -> peer
	STAT_TO_CLIENT = 1,    // datagrams relayed peer -> client
	STAT_PASS_NO_ROUTE = 2, // known flow, but no next hop from user space (yet)
	STAT_PASS_TOO_BIG = 3, // known flow, but bigger than the egress MTU
	STAT_PASS_LENGTH = 4,  // known channel, but the ChannelData length does not match
	STAT_REDIRECT_FAILED = 5,
	STAT_MAX = 8,
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
	count(stat);
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
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

// client -> peer: strip the ChannelData header.
static __always_inline int to_peer(struct xdp_md *ctx, struct headers *h, struct chan_val *v,
				   __u16 chan_hdr0, __u16 chan_hdr1, __u16 data_len)
{
	__u16 udp_len = data_len + sizeof(struct udphdr);
	__u16 tot_len = udp_len + sizeof(struct iphdr);
	struct nexthop *nh = route(v->peer_ip, tot_len);
	if (!nh)
		return XDP_PASS;
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
	set_l2(h, nh);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, data_len);
	if (bpf_xdp_adjust_head(ctx, CHANNEL_HDR))
		return XDP_ABORTED;
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
	return XDP_PASS;
}

// Dual-licensed (see the SPDX line); the kernel is told GPL, as GPL-only helpers require.
char LICENSE[] SEC("license") = "GPL";
