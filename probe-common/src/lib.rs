//! Types shared by the eBPF programs (`probe-ebpf`) and userspace (`probe-user`).
//!
//! Every type here is `#[repr(C)]` and padding-free (explicit `_pad` fields) so that the
//! kernel and userspace agree on the layout byte for byte, whatever the compiler does.
#![no_std]
#![expect(clippy::pub_underscore_fields, reason = "explicit padding fields keep the layout identical on both sides")]

/// What produced an [`Event`].
pub mod kind {
    /// `skb:kfree_skb`: the kernel freed a packet because it was dropped.
    pub const DROP: u32 = 1;
    /// `tcp:tcp_send_reset`: this kernel sent a TCP RST.
    pub const RST_SENT: u32 = 2;
    /// `tcp:tcp_receive_reset`: a socket of this kernel received a TCP RST.
    pub const RST_RECEIVED: u32 = 3;
    /// `icmp:icmp_send`: this kernel sent an ICMP error (e.g. an iptables REJECT).
    pub const ICMP_SENT: u32 = 4;
}

/// Bits of [`Event::flags`].
pub mod flags {
    /// [`super::Event::outer`] holds a parsed flow.
    pub const HAS_FLOW: u32 = 1;
    /// The outer flow is VXLAN (UDP to the configured port) and [`super::Event::inner`] holds
    /// the encapsulated flow.
    pub const HAS_INNER: u32 = 1 << 1;
    /// The flow was read from the socket, not from a packet.
    pub const FROM_SOCKET: u32 = 1 << 2;
    /// The device name and ifindex are valid.
    pub const HAS_DEVICE: u32 = 1 << 3;
}

/// An IPv4 or IPv6 5-tuple as seen in a packet. Ports are in host byte order (for ICMP echo
/// request/reply both hold the identifier, for other ICMP they are 0); addresses are
/// in network byte order (IPv4 uses the first 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// 4 or 6; 0 when no flow was parsed.
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub proto: u8,
    pub _pad: [u8; 2],
}

/// One event from the kernel, sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`).
    pub ts_ns: u64,
    /// Kernel address that freed the packet (drops only).
    pub location: u64,
    /// One of [`kind`].
    pub kind: u32,
    /// Drop: `enum skb_drop_reason`; RST sent: `enum sk_rst_reason`; ICMP: `type << 8 | code`.
    pub reason: u32,
    pub ifindex: u32,
    /// Inode number of the network namespace (as in `/proc/PID/ns/net`), 0 if unknown.
    pub netns: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    /// Packet length (`skb->len`), 0 when read from a socket.
    pub len: u32,
    /// Device name, NUL padded.
    pub dev: [u8; 16],
    pub outer: Flow,
    pub inner: Flow,
}

/// flannel's VXLAN UDP port (the Linux kernel's own default is 8472 too; IANA's is 4789): the
/// port whose payload capture decodes unless told otherwise, and the probes' default.
pub const FLANNEL_VXLAN_PORT: u16 = 8472;

/// Kernel structure offsets, read by userspace from the running kernel's BTF and written
/// into the eBPF object before it loads (a global), so one object works on every kernel
/// without compiled-in layouts. An offset of `u32::MAX` means "not present on this kernel".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub dev_name: u32,
    pub dev_ifindex: u32,
    /// `net_device.nd_net.net`
    pub dev_net: u32,
    /// `net.ns.inum`
    pub net_inum: u32,
    /// `sock_common.skc_net.net`
    pub sk_net: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_family: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `net_device.rtnl_link_ops` (NULL for physical devices and loopback)
    pub dev_link_ops: u32,
    /// `rtnl_link_ops.kind` ("veth", "bridge", "vxlan", ...)
    pub link_ops_kind: u32,
    /// UDP destination port whose payload is parsed as VXLAN (flannel: 8472).
    pub vxlan_port: u32,
    /// Non-zero: only events whose flow touches an address in the `WATCHED` map reach the ring
    /// buffer (the agent); every event is still counted in `AGGREGATES`. Zero: every event is
    /// sent (one-shot runs and `netcheck capture`).
    pub watched_only: u32,
    /// Non-zero once userspace filled this in; programs do nothing until then.
    pub valid: u32,
    /// This kernel's `SKB_DROP_REASON_NOT_SPECIFIED`: such drops are named by
    /// [`Self::locations`] when their location falls in one (`u32::MAX`: no such reason).
    pub not_specified: u32,
    pub _pad: u32,
    /// Functions whose drops have one cause, for kernels that pass no reason (before 5.17) or
    /// lack that reason in their enum; empty ranges (start = end = 0) match nothing.
    pub locations: [LocationRange; LOCATION_RANGES],
}

/// A kernel function's text, `[start, end)`, and the reason its drops are given:
/// [`inferred::BASE`] + the index of the cause in userspace's table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocationRange {
    pub start: u64,
    pub end: u64,
    pub reason: u32,
    pub _pad: u32,
}

/// Capacity of [`KernelOffsets::locations`].
pub const LOCATION_RANGES: usize = 8;

/// Reason values the programs give when the kernel gave none; above every reason of the
/// kernel's own enums (`enum skb_drop_reason` stays below 0x100 in 6.18) and below the
/// subsystem reasons (value >> 16 != 0).
pub mod inferred {
    /// A cause inferred from the drop's location: `BASE + i` is entry `i` of userspace's table.
    pub const BASE: u32 = 0xff00;
    /// The kernel passed no reason (the hook's prototype has none) and no location matched.
    pub const UNRECORDED: u32 = 0xfffe;
}

impl KernelOffsets {
    pub const UNSET: Self = Self {
        skb_head: u32::MAX,
        skb_network_header: u32::MAX,
        skb_len: u32::MAX,
        skb_dev: u32::MAX,
        skb_sk: u32::MAX,
        dev_name: u32::MAX,
        dev_ifindex: u32::MAX,
        dev_net: u32::MAX,
        net_inum: u32::MAX,
        sk_net: u32::MAX,
        sk_daddr: u32::MAX,
        sk_rcv_saddr: u32::MAX,
        sk_dport: u32::MAX,
        sk_num: u32::MAX,
        sk_family: u32::MAX,
        sk_v6_daddr: u32::MAX,
        sk_v6_rcv_saddr: u32::MAX,
        dev_link_ops: u32::MAX,
        link_ops_kind: u32::MAX,
        vxlan_port: FLANNEL_VXLAN_PORT as u32,
        watched_only: 0,
        valid: 0,
        not_specified: u32::MAX,
        _pad: 0,
        locations: [LocationRange { start: 0, end: 0, reason: 0, _pad: 0 }; LOCATION_RANGES],
    };
}

/// Index of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Events that could not be reserved in the ring buffer (lost).
    pub const LOST: u32 = 0;
    /// Events submitted.
    pub const SENT: u32 = 1;
    /// Events not counted in `AGGREGATES` because the map was full.
    pub const AGGREGATE_FULL: u32 = 2;
    /// Events left out of the ring buffer by the `watched_only` filter (counted, not lost).
    pub const FILTERED: u32 = 3;
    pub const LEN: u32 = 4;
}

/// The class of device an event happened on, judged in the kernel from the device's link kind
/// (`rtnl_link_ops->kind`), so counters can be kept per class without a label per device.
pub mod devclass {
    /// No device: the packet was freed at socket level (or the device could not be read).
    pub const NONE: u8 = 0;
    pub const LOOPBACK: u8 = 1;
    /// veth: a pod's interface or its host-side peer.
    pub const VETH: u8 = 2;
    /// A Linux bridge (flannel's cni0).
    pub const BRIDGE: u8 = 3;
    /// A VXLAN device (flannel.1).
    pub const VXLAN: u8 = 4;
    /// No link kind: a physical NIC (the underlay).
    pub const PHYSICAL: u8 = 5;
    /// Any other virtual kind (dummy, macvlan, ipvlan, wireguard, ...).
    pub const OTHER: u8 = 6;
    pub const NAMES: [&str; 7] = ["none", "loopback", "veth", "bridge", "vxlan", "physical", "other"];
}

/// Key of the in-kernel `AGGREGATES` counters: event kind, device class and reason, packed as
/// `kind << 24 | class << 16 | reason`. Drop reasons of a subsystem (above 16 bits: mac80211,
/// openvswitch, named by module enums) share [`SUBSYSTEM_REASON`].
#[must_use]
pub const fn aggregate_key(kind: u32, class: u8, reason: u32) -> u32 {
    let reason = if reason > 0xffff { SUBSYSTEM_REASON } else { reason };
    u32::from_be_bytes([kind.to_be_bytes()[3], class, 0, 0]) | reason
}

/// The reason an [`aggregate_key`] holds for a subsystem's drop reason.
pub const SUBSYSTEM_REASON: u32 = 0xffff;

/// The parts of an [`aggregate_key`]: kind, class, reason.
#[must_use]
pub const fn aggregate_parts(key: u32) -> (u32, u8, u32) {
    let bytes = key.to_be_bytes();
    (key >> 24, bytes[1], key & 0xffff)
}

/// Key of the `WATCHED` map: an endpoint (address, port, IP protocol) whose packets reach
/// userspace under `watched_only`, or a whole address when `port` and `proto` are 0. IPv4 uses
/// the first 4 bytes of `addr`; for ICMP echo the port is the identifier (as in [`Flow`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WatchKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Capacity of the `WATCHED` map.
pub const WATCHED_MAX: u32 = 16_384;

/// Capacity of the `AGGREGATES` map: kinds × classes × reasons seen is far below it.
pub const AGGREGATES_MAX: u32 = 4096;

/// Name of the global the offsets are written to.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), no padding (checked by the size assertions below).
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WatchKey {}
}

const _: () = assert!(core::mem::size_of::<Flow>() == 40);
const _: () = assert!(core::mem::size_of::<WatchKey>() == 20);
const _: () = assert!(core::mem::size_of::<Event>() == 8 + 8 + 6 * 4 + 16 + 2 * 40);
const _: () = assert!(core::mem::size_of::<LocationRange>() == 24);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 24 * 4 + LOCATION_RANGES * 24);
