//! The flow of a packet (its IP header and ports, and a VXLAN datagram's inner packet) or of a
//! socket.

use probe_common::{Flow, flags, watch_bit_folded};

use crate::read::{self, Form, Res};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_DSTOPTS: u8 = 60;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// `skb->network_header` when it was never set (`(typeof(skb->network_header))~0U`).
const HEADER_UNSET: u16 = 0xffff;

/// Bytes read at once: an IPv6 header and an ICMPv6 echo's identifier (46), an IPv4 header
/// without options and its ports. The read may run past a short packet's end; it stays inside
/// the packet's buffer (`skb_shared_info` follows the data, include/linux/skbuff.h), and only
/// bytes the headers account for are used.
const HEADERS: usize = 48;

/// Words of [`HEADERS`].
const HEADER_WORDS: usize = HEADERS / 8;
/// Where a VXLAN datagram's inner IP header starts after its UDP header: UDP (8) + VXLAN (8) +
/// inner Ethernet (14). The read for it starts at the Ethernet type, two bytes earlier.
const VXLAN_INNER_IP: u64 = 8 + 8 + 14;

/// Parses the packet's flow into `outer` and a VXLAN datagram's into `inner` (each zeroed here
/// before it is parsed); returns the `flags` bits that say which were found, or [`UNWATCHED`]
/// when the filter leaves the packet out (neither flow built).
#[inline(always)]
pub fn from_skb<const F: Form, const VXLAN: bool>(skb: u64, outer: &mut Flow, inner: &mut Flow) -> u32 {
    let Ok(head) = read::field::<F, u64>(skb, off!(skb_head)) else { return 0 };
    let Ok(network_header) = read::field::<F, u16>(skb, off!(skb_network_header)) else { return 0 };
    if network_header == HEADER_UNSET || head == 0 {
        return 0;
    }
    // Words, so that addresses are copied a word at a time. Not zeroed first: every form writes
    // all of it (the helper zeroes it when it fails).
    let mut raw = core::mem::MaybeUninit::<[u64; HEADER_WORDS]>::uninit();
    let ip = head + u64::from(network_header);
    // SAFETY: `headers` writes every word of the buffer.
    let buf = unsafe {
        if headers::<F, 0>(ip, &mut *raw.as_mut_ptr()).is_err() {
            return 0;
        }
        &mut *raw.as_mut_ptr()
    };
    if off!(watched_only) != 0 && unwatched_ipv4::<VXLAN>(bytes(buf)) {
        return UNWATCHED;
    }
    read::zero::<5>(core::ptr::from_mut(outer).cast());
    let Ok(l4) = ip_flow::<F, 0>(bytes(buf), ip, outer) else { return 0 };
    let vxlan_port = off!(vxlan_port);
    if VXLAN && outer.proto == IPPROTO_UDP && u32::from(outer.dport) == vxlan_port && l4 != 0 {
        read::zero::<5>(core::ptr::from_mut(inner).cast());
        let at = l4 + VXLAN_INNER_IP;
        if headers::<F, 2>(at - 2, buf).is_ok() {
            let b = bytes(buf);
            let ethertype = u16::from_be_bytes([b[0], b[1]]);
            if (ethertype == ETH_P_IP || ethertype == ETH_P_IPV6) && ip_flow::<F, 2>(b, at, inner).is_ok() {
                return flags::HAS_FLOW | flags::HAS_INNER;
            }
        }
    }
    flags::HAS_FLOW
}

/// Returned by [`from_skb`] for a packet the filter leaves out, before its flow is built (not
/// one of `flags`' bits, never sent).
pub const UNWATCHED: u32 = 1 << 31;

/// Whether an IPv4 packet that carries no VXLAN payload has neither address in the filter's
/// bits, decided from the header words as read: most of a node's drops end here, without the
/// flow being built. Anything else (IPv6, VXLAN, a watched bit) goes the whole way.
#[inline(always)]
fn unwatched_ipv4<const VXLAN: bool>(b: &[u8; HEADERS]) -> bool {
    if b[0] != 0x45 {
        // Not IPv4, or IPv4 with options.
        return false;
    }
    if VXLAN && b[9] == IPPROTO_UDP && u32::from(u16::from_be_bytes([b[22], b[23]])) == off!(vxlan_port) {
        return false;
    }
    let saddr = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    let daddr = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    !crate::bit_set(watch_bit_folded(saddr)) && !crate::bit_set(watch_bit_folded(daddr))
}

/// Reads the headers at `at` into `buf`, an IP header starting at byte `AT`. Loaded directly,
/// four words first (an IPv4 header and its ports), the rest only for IPv6 (its words are
/// zeroed otherwise); through the helper, all at once (a call costs more than the bytes).
#[inline(always)]
fn headers<const F: Form, const AT: usize>(at: u64, buf: &mut [u64; HEADER_WORDS]) -> read::Res<()> {
    if F < read::PACKET {
        return read::words::<F, HEADER_WORDS>(at, buf);
    }
    let (first, rest) = buf.split_at_mut(4);
    let first: &mut [u64; 4] = first.try_into().map_err(|_| -1)?;
    let rest: &mut [u64; HEADER_WORDS - 4] = rest.try_into().map_err(|_| -1)?;
    read::words::<F, 4>(at, first)?;
    if bytes4(first)[AT] >> 4 == 6 {
        read::words::<F, { HEADER_WORDS - 4 }>(at + 32, rest)
    } else {
        *rest = [0; HEADER_WORDS - 4];
        Ok(())
    }
}

#[inline(always)]
fn bytes4(words: &[u64; 4]) -> &[u8; 32] {
    // SAFETY: the same memory, read as bytes.
    unsafe { &*core::ptr::from_ref(words).cast::<[u8; 32]>() }
}

/// The header words as bytes.
#[inline(always)]
fn bytes(words: &[u64; HEADER_WORDS]) -> &[u8; HEADERS] {
    // SAFETY: the same memory, read as bytes.
    unsafe { &*core::ptr::from_ref(words).cast::<[u8; HEADERS]>() }
}

/// Parses the IPv4/IPv6 header at `buf[AT..]` (read from kernel address `ip`) and the TCP/UDP
/// ports or ICMP echo identifier after it into `flow`. Returns the transport header's address,
/// or 0 when there is none to read (a later fragment). Indexes into `buf` are constants: a
/// variable offset into the stack is refused before 5.12's verifier.
#[inline(always)]
fn ip_flow<const F: Form, const AT: usize>(buf: &[u8; HEADERS], ip: u64, flow: &mut Flow) -> Res<u64> {
    // The transport header's first six bytes (in a word: zeroing a byte array calls a
    // byte-wise memset), copied from the buffer when it holds them.
    let mut word = [0u64; 1];
    // SAFETY: the same memory, as bytes.
    let t = unsafe { &mut *core::ptr::from_mut(&mut word).cast::<[u8; 8]>() };
    let mut have_t = false;
    let l4 = match buf[AT] >> 4 {
        4 => {
            flow.family = 4;
            flow.proto = buf[AT + 9];
            flow.saddr[..4].copy_from_slice(&buf[AT + 12..AT + 16]);
            flow.daddr[..4].copy_from_slice(&buf[AT + 16..AT + 20]);
            let fragment_offset = u16::from_be_bytes([buf[AT + 6], buf[AT + 7]]) & 0x1fff;
            if fragment_offset != 0 {
                return Ok(0);
            }
            let ihl = buf[AT] & 0x0f;
            if ihl == 5 {
                t[..6].copy_from_slice(&buf[AT + 20..AT + 26]);
                have_t = true;
            }
            ip + u64::from(ihl) * 4
        }
        6 => {
            flow.family = 6;
            flow.saddr.copy_from_slice(&buf[AT + 8..AT + 24]);
            flow.daddr.copy_from_slice(&buf[AT + 24..AT + 40]);
            let mut next = buf[AT + 6];
            let mut l4 = ip + 40;
            // One extension header is skipped (hop-by-hop carries every MLD report); deeper
            // chains keep the extension header as the protocol.
            if matches!(next, IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS) {
                next = buf[AT + 40];
                l4 += (u64::from(buf[AT + 41]) + 1) * 8;
            } else {
                t[..6].copy_from_slice(&buf[AT + 40..AT + 46]);
                have_t = true;
            }
            flow.proto = next;
            l4
        }
        _ => return Err(-1),
    };
    let known = matches!(flow.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP | IPPROTO_ICMPV6);
    if !have_t && known {
        // Eight bytes, two past the six used: still inside the packet's buffer (see HEADERS).
        read::words::<F, 1>(l4, &mut word)?;
    }
    // SAFETY: as above.
    let t = unsafe { *core::ptr::from_ref(&word).cast::<[u8; 8]>() };
    if flow.proto == IPPROTO_TCP || flow.proto == IPPROTO_UDP {
        flow.sport = u16::from_be_bytes([t[0], t[1]]);
        flow.dport = u16::from_be_bytes([t[2], t[3]]);
        return Ok(l4);
    }
    if flow.proto == IPPROTO_ICMP || flow.proto == IPPROTO_ICMPV6 {
        // Echo request/reply: the identifier stands in for both ports, so a ping-style probe
        // is matched by (address, identifier) like a socket by (address, port).
        if matches!((flow.proto, t[0]), (IPPROTO_ICMP, 0 | 8) | (IPPROTO_ICMPV6, 128 | 129)) {
            let id = u16::from_be_bytes([t[4], t[5]]);
            flow.sport = id;
            flow.dport = id;
        }
    }
    Ok(0)
}

/// The connection's flow from the socket: local address/port as source.
#[inline(always)]
pub fn from_socket<const F: Form>(sk: u64, flow: &mut Flow) -> Res<()> {
    let family: u16 = read::field::<F, _>(sk, off!(sk_family))?;
    let num: u16 = read::field::<F, _>(sk, off!(sk_num))?;
    let dport: u16 = read::field::<F, _>(sk, off!(sk_dport))?;
    match family {
        AF_INET => {
            let saddr: u32 = read::field::<F, _>(sk, off!(sk_rcv_saddr))?;
            let daddr: u32 = read::field::<F, _>(sk, off!(sk_daddr))?;
            flow.saddr[..4].copy_from_slice(&saddr.to_ne_bytes());
            flow.daddr[..4].copy_from_slice(&daddr.to_ne_bytes());
            flow.family = 4;
        }
        AF_INET6 => {
            let saddr: [u64; 2] = read::field::<F, _>(sk, off!(sk_v6_rcv_saddr))?;
            let daddr: [u64; 2] = read::field::<F, _>(sk, off!(sk_v6_daddr))?;
            flow.saddr[..8].copy_from_slice(&saddr[0].to_ne_bytes());
            flow.saddr[8..].copy_from_slice(&saddr[1].to_ne_bytes());
            flow.daddr[..8].copy_from_slice(&daddr[0].to_ne_bytes());
            flow.daddr[8..].copy_from_slice(&daddr[1].to_ne_bytes());
            flow.family = 6;
        }
        _ => return Err(-1),
    }
    flow.sport = num;
    flow.dport = u16::from_be(dport);
    flow.proto = IPPROTO_TCP;
    Ok(())
}
