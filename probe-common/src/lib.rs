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
    /// UDP destination port whose payload is parsed as VXLAN (flannel: 8472).
    pub vxlan_port: u32,
    /// Non-zero once userspace filled this in; programs do nothing until then.
    pub valid: u32,
    pub _pad: u32,
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
        vxlan_port: 8472,
        valid: 0,
        _pad: 0,
    };
}

/// Index of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Events that could not be reserved in the ring buffer (lost).
    pub const LOST: u32 = 0;
    /// Events submitted.
    pub const SENT: u32 = 1;
    pub const LEN: u32 = 2;
}

/// Name of the global the offsets are written to.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), no padding (checked by the size assertions below).
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
}

const _: () = assert!(core::mem::size_of::<Flow>() == 40);
const _: () = assert!(core::mem::size_of::<Event>() == 8 + 8 + 6 * 4 + 16 + 2 * 40);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 20 * 4);
