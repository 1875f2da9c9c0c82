//! Types shared by the eBPF programs (`probe-ebpf`) and userspace (`probe-user`).
//!
//! Every type here is `#[repr(C)]` and padding-free (explicit `_pad` fields) so that the
//! kernel and userspace agree on the layout byte for byte, whatever the compiler does.
#![cfg_attr(not(test), no_std)]
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
///
/// 8-byte aligned (its layout is the same, 40 bytes): the eBPF programs zero and copy it with
/// five 64-bit moves, where 2-byte alignment made the compiler call a byte-wise `memset`.
#[repr(C, align(8))]
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
    /// `net_device.flags` (`IFF_LOOPBACK` tells loopback from a physical NIC: neither has
    /// link ops).
    pub dev_flags: u32,
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
        dev_flags: u32::MAX,
        locations: [LocationRange { start: 0, end: 0, reason: 0, _pad: 0 }; LOCATION_RANGES],
    };
}

/// Index of the per-CPU counters in the `COUNTERS` map.
pub mod counter {
    /// Events that could not be reserved in the ring buffer (lost).
    pub const LOST: u32 = 0;
    /// Events submitted.
    pub const SENT: u32 = 1;
    /// Events left out of the ring buffer by the `watched_only` filter (counted, not lost).
    pub const FILTERED: u32 = 2;
    pub const LEN: u32 = 3;
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

/// Where the in-kernel `AGGREGATES` counters keep each event: a per-CPU array of [`ROWS`]
/// rows (one per event kind and device class) of [`SLOTS`] counters (one per reason), so
/// counting an event is an index computation and an increment (an array lookup the verifier
/// inlines), not a hash map's lookup and insert.
pub mod aggregate {
    use super::{LOCATION_RANGES, devclass, inferred, kind};

    /// Counters per row.
    pub const SLOTS: usize = 256;
    /// Device classes per kind.
    #[expect(clippy::cast_possible_truncation, reason = "seven names")]
    const CLASSES: u32 = devclass::NAMES.len() as u32;
    /// [`LOCATION_RANGES`] as a reason offset.
    #[expect(clippy::cast_possible_truncation, reason = "eight ranges")]
    const INFERRED: u32 = LOCATION_RANGES as u32;
    /// Kinds (1..=4) × device classes.
    pub const ROWS: u32 = 4 * CLASSES;

    /// Drop reasons below this are their own slot (the kernel's `enum skb_drop_reason` stays
    /// below 0x80 in 6.18).
    const DIRECT_DROPS: u32 = 0xf0;
    /// Slot of the first inferred cause ([`inferred::BASE`]).
    const INFERRED_SLOT: u32 = 0xf0;
    /// A drop reason above the table (not inferred, not a subsystem's).
    pub const BEYOND_SLOT: u32 = 0xfd;
    /// [`inferred::UNRECORDED`].
    const UNRECORDED_SLOT: u32 = 0xfe;
    /// Drop: a subsystem's reason (above 16 bits: mac80211, openvswitch); other kinds: a value
    /// beyond their table.
    pub const OTHER_SLOT: u32 = 0xff;

    /// The row of an event kind on a device class.
    #[must_use]
    pub const fn row(event_kind: u32, class: u8) -> u32 {
        let k = if event_kind >= 1 && event_kind <= 4 { event_kind - 1 } else { 3 };
        let c = if (class as u32) < CLASSES { class as u32 } else { devclass::OTHER as u32 };
        k * CLASSES + c
    }

    /// The kind and device class of a row.
    #[must_use]
    pub const fn row_parts(row: u32) -> (u32, u8) {
        (row / CLASSES + 1, (row % CLASSES) as u8)
    }

    /// The slot of a reason within its kind's row (always below [`SLOTS`]).
    #[must_use]
    pub const fn slot(event_kind: u32, reason: u32) -> u32 {
        match event_kind {
            kind::DROP => {
                if reason < DIRECT_DROPS {
                    reason
                } else if reason >= inferred::BASE && reason < inferred::BASE + INFERRED {
                    INFERRED_SLOT + (reason - inferred::BASE)
                } else if reason == inferred::UNRECORDED {
                    UNRECORDED_SLOT
                } else if reason > 0xffff {
                    OTHER_SLOT
                } else {
                    BEYOND_SLOT
                }
            }
            kind::RST_SENT => {
                if reason < UNRECORDED_SLOT {
                    reason
                } else if reason == inferred::UNRECORDED {
                    UNRECORDED_SLOT
                } else {
                    OTHER_SLOT
                }
            }
            // `type << 8 | code`: every type and code icmp_send is given (3, 4, 5, 11, 12) fits;
            // type 15 (information request, obsolete) would reach OTHER_SLOT's value.
            kind::ICMP_SENT => {
                let (t, c) = (reason >> 8, reason & 0xff);
                if t < 15 && c < 16 { t << 4 | c } else { OTHER_SLOT }
            }
            _ => 0,
        }
    }

    /// The reason a slot stands for, as the programs give it; `None` for [`BEYOND_SLOT`] and
    /// [`OTHER_SLOT`] (reasons the table does not keep apart).
    #[must_use]
    pub const fn slot_reason(event_kind: u32, slot: u32) -> Option<u32> {
        match event_kind {
            kind::DROP => match slot {
                s if s < DIRECT_DROPS => Some(s),
                UNRECORDED_SLOT => Some(inferred::UNRECORDED),
                BEYOND_SLOT | OTHER_SLOT => None,
                s => Some(inferred::BASE + (s - INFERRED_SLOT)),
            },
            kind::RST_SENT => match slot {
                UNRECORDED_SLOT => Some(inferred::UNRECORDED),
                OTHER_SLOT => None,
                s => Some(s),
            },
            kind::ICMP_SENT => match slot {
                OTHER_SLOT => None,
                s => Some((s >> 4) << 8 | (s & 0xf)),
            },
            _ => Some(0),
        }
    }
}

/// The bit of the `WATCH_BITS` address filter an address (as [`WatchKey::addr`] holds it)
/// sets: an event whose addresses all have their bit clear is not watched, which the programs
/// learn from one array load before any hash lookup.
#[must_use]
pub const fn watch_bit(addr: &[u8; 16]) -> u32 {
    let mut folded = 0u32;
    let mut i = 0;
    while i < 16 {
        folded ^= u32::from_le_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
        i += 4;
    }
    watch_bit_folded(folded)
}

/// [`watch_bit`] from the address's four little-endian words XORed together (for IPv4, the
/// address's own word: the others are zero).
#[must_use]
pub const fn watch_bit_folded(folded: u32) -> u32 {
    // Fibonacci hashing: the top bits of the product mix every input bit.
    folded.wrapping_mul(0x9e37_79b1) >> (32 - WATCH_BITS_LOG2)
}

/// log2 of the address filter's bits.
pub const WATCH_BITS_LOG2: u32 = 16;
/// Words (`u64`) of the `WATCH_BITS` map.
pub const WATCH_WORDS: u32 = (1 << WATCH_BITS_LOG2) / 64;

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
const _: () = assert!(core::mem::offset_of!(Event, outer) % 8 == 0);
const _: () = assert!(core::mem::size_of::<WatchKey>() == 20);
const _: () = assert!(core::mem::size_of::<Event>() == 8 + 8 + 6 * 4 + 16 + 2 * 40);
const _: () = assert!(core::mem::size_of::<LocationRange>() == 24);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 24 * 4 + LOCATION_RANGES * 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_keeps_its_own_slot_or_a_named_overflow() {
        for reason in 0..0xf0 {
            let slot = aggregate::slot(kind::DROP, reason);
            assert_eq!(aggregate::slot_reason(kind::DROP, slot), Some(reason));
        }
        for i in 0..u32::try_from(LOCATION_RANGES).unwrap() {
            let reason = inferred::BASE + i;
            assert_eq!(aggregate::slot_reason(kind::DROP, aggregate::slot(kind::DROP, reason)), Some(reason));
        }
        let unrecorded = aggregate::slot(kind::DROP, inferred::UNRECORDED);
        assert_eq!(aggregate::slot_reason(kind::DROP, unrecorded), Some(inferred::UNRECORDED));
        // A subsystem's reason (mac80211: 1 << 16 | n) and one beyond the table are kept apart.
        assert_eq!(aggregate::slot(kind::DROP, 0x1_0003), aggregate::OTHER_SLOT);
        assert_eq!(aggregate::slot(kind::DROP, 0x0200), aggregate::BEYOND_SLOT);
        assert_eq!(aggregate::slot_reason(kind::DROP, aggregate::OTHER_SLOT), None);
        for reason in [0, 1, 29] {
            let slot = aggregate::slot(kind::RST_SENT, reason);
            assert_eq!(aggregate::slot_reason(kind::RST_SENT, slot), Some(reason));
        }
        let unrecorded = aggregate::slot(kind::RST_SENT, inferred::UNRECORDED);
        assert_eq!(aggregate::slot_reason(kind::RST_SENT, unrecorded), Some(inferred::UNRECORDED));
        // ICMP: port unreachable (3/3), admin prohibited (3/13), TTL exceeded (11/0).
        for (t, c) in [(3, 3), (3, 13), (11, 0), (12, 2)] {
            let reason = t << 8 | c;
            assert_eq!(aggregate::slot_reason(kind::ICMP_SENT, aggregate::slot(kind::ICMP_SENT, reason)), Some(reason));
        }
        assert_eq!(aggregate::slot(kind::ICMP_SENT, 40 << 8), aggregate::OTHER_SLOT);
        assert_eq!(aggregate::slot(kind::ICMP_SENT, 15 << 8 | 15), aggregate::OTHER_SLOT);
        for k in [kind::DROP, kind::RST_SENT, kind::RST_RECEIVED, kind::ICMP_SENT] {
            for reason in [0, 0xef, 0xff00, 0xfffe, 0xffff, 0x1_0000, u32::MAX] {
                assert!((aggregate::slot(k, reason) as usize) < aggregate::SLOTS);
            }
        }
    }

    #[test]
    fn rows_hold_every_kind_and_class() {
        let mut seen = [false; aggregate::ROWS as usize];
        for k in [kind::DROP, kind::RST_SENT, kind::RST_RECEIVED, kind::ICMP_SENT] {
            for class in 0..u8::try_from(devclass::NAMES.len()).unwrap() {
                let row = aggregate::row(k, class);
                assert!(row < aggregate::ROWS);
                assert!(!seen[row as usize], "row {row} twice");
                seen[row as usize] = true;
                assert_eq!(aggregate::row_parts(row), (k, class));
            }
        }
        assert!(aggregate::row(kind::DROP, 200) < aggregate::ROWS);
    }

    #[test]
    fn an_ipv4_address_folds_to_its_own_word() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 244, 1, 2]);
        assert_eq!(watch_bit(&addr), watch_bit_folded(u32::from_le_bytes([10, 244, 1, 2])));
        let v6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(watch_bit(&v6) < 1 << WATCH_BITS_LOG2);
        // Neighbouring pod addresses land on different bits.
        let mut other = addr;
        other[3] = 3;
        assert_ne!(watch_bit(&addr), watch_bit(&other));
    }
}
