//! ICMP echo from a raw socket (CAP_NET_RAW): sending DF echo requests of a given size and
//! reading what comes back about them (echo replies, destination-unreachable quoting them).
//! Used by the path MTU probe and, for receiving, by the VXLAN probe.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use pnet_packet::{
    Packet,
    icmp::{IcmpPacket, IcmpTypes, destination_unreachable::DestinationUnreachablePacket, echo_request},
    ipv4::Ipv4Packet,
};

use crate::capture::event::{EventKind, KernelEvent, Proto};

/// What one size got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Reply,
    /// No echo reply and no ICMP error, after every retry.
    Silent,
    /// ICMP fragmentation needed (type 3 code 4) with the next-hop MTU the router gave.
    FragNeeded {
        mtu: u16,
        from: Ipv4Addr,
    },
    /// Another ICMP destination unreachable.
    Unreachable {
        code: u8,
        from: Ipv4Addr,
    },
    /// The local kernel refused the size (EMSGSIZE: above the interface MTU).
    LocalLimit,
}

impl Answer {
    pub fn code(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::Silent => "silent",
            Self::FragNeeded { .. } => "frag_needed",
            Self::Unreachable { .. } => "unreachable",
            Self::LocalLimit => "local_limit",
        }
    }
}

/// A raw ICMP socket towards one host.
pub struct Pinger {
    fd: OwnedFd,
    dst: Ipv4Addr,
    pub id: u16,
    seq: u16,
}

impl Pinger {
    pub fn new(dst: Ipv4Addr, id: u16) -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let probe_mode: libc::c_int = libc::IP_PMTUDISC_PROBE;
        // SAFETY: a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&raw const probe_mode).cast(),
                libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, dst, id, seq: 0 })
    }

    /// Sends one probe of `size` bytes, then (when silent) two more, each round waiting up to
    /// `wait` for the echo or an ICMP error about it.
    pub fn try_size(&mut self, size: u16, wait: Duration, left: impl Fn() -> Duration) -> (Answer, u8) {
        let mut sent = 0u8;
        let mut mine = HashSet::new();
        for round in 0..2 {
            for _ in 0..(if round == 0 { 1 } else { 2 }) {
                self.seq = self.seq.wrapping_add(1);
                match self.send(size, self.seq) {
                    Ok(()) => {
                        sent += 1;
                        mine.insert(self.seq);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => return (Answer::LocalLimit, sent),
                    Err(_) => {}
                }
            }
            let until = Instant::now() + wait.min(left());
            while let Some(remaining) = until.checked_duration_since(Instant::now()) {
                if let Some((seq, answer)) = self.recv(remaining)
                    && mine.contains(&seq)
                {
                    return (answer, sent);
                }
            }
            if left().is_zero() {
                break;
            }
        }
        (Answer::Silent, sent)
    }

    pub fn send(&self, size: u16, seq: u16) -> io::Result<()> {
        let len = usize::from(size).saturating_sub(20).max(8);
        let mut buf = vec![0u8; len];
        let mut packet = echo_request::MutableEchoRequestPacket::new(&mut buf).expect("8 bytes or more");
        packet.set_icmp_type(IcmpTypes::EchoRequest);
        packet.set_identifier(self.id);
        packet.set_sequence_number(seq);
        let checksum = pnet_packet::icmp::checksum(&IcmpPacket::new(packet.packet()).expect("an ICMP packet"));
        packet.set_checksum(checksum);
        let addr = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2),
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(self.dst.octets()) },
            sin_zero: [0; 8],
        };
        // SAFETY: the buffer and the sockaddr_in outlive the call; lengths match them.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&raw const addr).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(16),
            )
        };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The next ICMP message about one of our probes: (sequence, answer).
    pub fn recv(&self, timeout: Duration) -> Option<(u16, Answer)> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&raw mut pfd, 1, ms) } <= 0 {
            return None;
        }
        let mut buf = [0u8; 2048];
        // SAFETY: the buffer outlives the call and its length is passed.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        let n = usize::try_from(n).ok()?;
        classify(&buf[..n], self.dst, self.id)
    }
}

/// An echo's result: answered (with the round trip) or not, or why it could not be sent.
#[derive(Debug, Clone)]
pub enum EchoOutcome {
    Answered { answer: Answer, rtt: Duration },
    NoPrivilege(String),
    NoRoute(String),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Echo {
    pub dst: Ipv4Addr,
    pub outcome: EchoOutcome,
    pub elapsed: Duration,
    pub events: Vec<KernelEvent>,
}

/// One ICMP echo (`ping -c 1`, retried twice when silent) within `deadline`, blocking.
pub fn echo(dst: Ipv4Addr, deadline: Duration, capture: Option<&crate::capture::Capture>) -> Echo {
    let started = Instant::now();
    let done = |outcome, events| Echo { dst, outcome, elapsed: started.elapsed(), events };
    let source = match super::tcp::source_address(std::net::SocketAddr::new(IpAddr::V4(dst), 9)) {
        Ok(IpAddr::V4(s)) => s,
        Ok(IpAddr::V6(s)) => return done(EchoOutcome::Failed(format!("IPv6 source {s} for {dst}")), Vec::new()),
        Err(e) => return done(EchoOutcome::NoRoute(e.to_string()), Vec::new()),
    };
    let mut pinger = match Pinger::new(dst, super::fresh_id()) {
        Ok(p) => p,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            return done(EchoOutcome::NoPrivilege(format!("a raw ICMP socket needs CAP_NET_RAW ({e})")), Vec::new());
        }
        Err(e) => return done(EchoOutcome::Failed(format!("raw ICMP socket: {e}")), Vec::new()),
    };
    let watch = capture.map(|c| {
        c.watch(crate::capture::FlowMatcher::new(1, std::net::SocketAddr::new(IpAddr::V4(source), pinger.id)))
    });
    let left = || deadline.saturating_sub(started.elapsed());
    let (answer, _) = pinger.try_size(84, (deadline / 3).min(Duration::from_secs(1)), left);
    let rtt = started.elapsed();
    let events = watch.map(crate::capture::Watch::finish).unwrap_or_default();
    done(EchoOutcome::Answered { answer, rtt }, without_delivered_replies(events, source))
}

/// Reads an IPv4 packet a raw ICMP socket received: our echo reply, or an ICMP error quoting
/// one of our echo requests. Anything else is `None`.
pub fn classify(packet: &[u8], dst: Ipv4Addr, id: u16) -> Option<(u16, Answer)> {
    let ip = Ipv4Packet::new(packet)?;
    let header_len = usize::from(ip.get_header_length()) * 4;
    let icmp_bytes = packet.get(header_len..)?;
    let icmp = IcmpPacket::new(icmp_bytes)?;
    let from = ip.get_source();
    match icmp.get_icmp_type() {
        IcmpTypes::EchoReply => {
            let reply = pnet_packet::icmp::echo_reply::EchoReplyPacket::new(icmp_bytes)?;
            (from == dst && reply.get_identifier() == id).then(|| (reply.get_sequence_number(), Answer::Reply))
        }
        IcmpTypes::DestinationUnreachable => {
            let unreachable = DestinationUnreachablePacket::new(icmp_bytes)?;
            // The quoted packet: our request's IP header and at least 8 bytes of its ICMP.
            let quoted = Ipv4Packet::new(unreachable.payload())?;
            let quoted_len = usize::from(quoted.get_header_length()) * 4;
            let inner = unreachable.payload().get(quoted_len..quoted_len + 8)?;
            let request = echo_request::EchoRequestPacket::new(inner)?;
            if quoted.get_destination() != dst
                || request.get_icmp_type() != IcmpTypes::EchoRequest
                || request.get_identifier() != id
            {
                return None;
            }
            let code = icmp.get_icmp_code().0;
            let answer = if code == 4 {
                Answer::FragNeeded { mtu: unreachable.get_next_hop_mtu(), from }
            } else {
                Answer::Unreachable { code, from }
            };
            Some((request.get_sequence_number(), answer))
        }
        _ => None,
    }
}

/// Echo replies reach a raw socket as copies; the kernel's own ICMP handler then frees the
/// original with NO_SOCKET (no ping socket wants it). That is delivery, not loss. Kernels that
/// pass no drop reason (before 5.17) free it in icmp_rcv (net/ipv4/icmp.c) with none.
pub fn without_delivered_replies(mut events: Vec<KernelEvent>, local: Ipv4Addr) -> Vec<KernelEvent> {
    events.retain(|e| {
        let handler_freed = match e.reason.as_deref() {
            Some(r) => r == "NO_SOCKET",
            None => e.location_function().is_some_and(|f| f.split('.').next() == Some("icmp_rcv")),
        };
        let delivered_reply = e.kind == EventKind::Drop
            && handler_freed
            && e.inner.is_none()
            && e.flow.as_ref().is_some_and(|f| f.proto == Proto::Icmp && f.dst.ip() == IpAddr::V4(local));
        !delivered_reply
    });
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler's free of a reply the raw socket already has: by reason (5.17+) or, without
    /// one, by where (icmp_rcv); a drop elsewhere, or of another protocol, stays.
    #[test]
    fn delivered_echo_replies_are_left_out_on_every_kernel() {
        use crate::capture::event::FlowView;
        let local = Ipv4Addr::new(10, 244, 1, 0);
        let drop = |reason: Option<&str>, location: Option<&str>, proto: Proto| KernelEvent {
            kind: EventKind::Drop,
            reason: reason.map(String::from),
            reason_note: None,
            location: location.map(String::from),
            direction: None,
            icmp_type: None,
            icmp_code: None,
            device: Some("flannel.1".into()),
            netns: "n1".into(),
            netns_inode: 1,
            flow: Some(FlowView { proto, src: "10.244.2.0:7".parse().unwrap(), dst: "10.244.1.0:7".parse().unwrap() }),
            inner: None,
            ts_ns: 0,
            from_socket: false,
        };
        let events = vec![
            drop(Some("NO_SOCKET"), None, Proto::Icmp),
            drop(None, Some("icmp_rcv+0x16f"), Proto::Icmp),
            drop(None, Some("ip_rcv_core+0x10"), Proto::Icmp),
            drop(None, Some("icmp_rcv+0x16f"), Proto::Udp),
            drop(Some("NETFILTER_DROP"), None, Proto::Icmp),
        ];
        let kept = without_delivered_replies(events, local);
        let left: Vec<(Option<&str>, Option<&str>)> =
            kept.iter().map(|e| (e.reason.as_deref(), e.location.as_deref())).collect();
        assert_eq!(
            left,
            [(None, Some("ip_rcv_core+0x10")), (None, Some("icmp_rcv+0x16f")), (Some("NETFILTER_DROP"), None)]
        );
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        use pnet_packet::ipv4::MutableIpv4Packet;
        let mut buf = vec![0u8; 20 + payload.len()];
        let mut p = MutableIpv4Packet::new(&mut buf).unwrap();
        p.set_version(4);
        p.set_header_length(5);
        p.set_total_length(u16::try_from(20 + payload.len()).unwrap());
        p.set_next_level_protocol(pnet_packet::ip::IpNextHeaderProtocols::Icmp);
        p.set_source(src);
        p.set_destination(dst);
        p.set_payload(payload);
        buf
    }

    fn echo(kind: pnet_packet::icmp::IcmpType, id: u16, seq: u16) -> Vec<u8> {
        let mut buf = vec![0u8; 16];
        let mut p = echo_request::MutableEchoRequestPacket::new(&mut buf).unwrap();
        p.set_icmp_type(kind);
        p.set_identifier(id);
        p.set_sequence_number(seq);
        buf
    }

    #[test]
    fn replies_and_frag_needed_are_matched_to_our_probe() {
        let (me, dst, router): (Ipv4Addr, Ipv4Addr, Ipv4Addr) =
            ("10.244.1.2".parse().unwrap(), "10.244.2.2".parse().unwrap(), "10.244.1.1".parse().unwrap());
        let reply = ipv4(dst, me, &echo(IcmpTypes::EchoReply, 77, 5));
        assert_eq!(classify(&reply, dst, 77), Some((5, Answer::Reply)));
        assert_eq!(classify(&reply, dst, 78), None, "another pinger's reply");

        let quoted = ipv4(me, dst, &echo(IcmpTypes::EchoRequest, 77, 9));
        let mut err = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0x46];
        err.extend_from_slice(&quoted[..28]);
        let frag = ipv4(router, me, &err);
        assert_eq!(classify(&frag, dst, 77), Some((9, Answer::FragNeeded { mtu: 1350, from: router })));
        err[1] = 10;
        let prohibited = ipv4(router, me, &err);
        assert_eq!(classify(&prohibited, dst, 77), Some((9, Answer::Unreachable { code: 10, from: router })));
        assert_eq!(classify(&frag[..30], dst, 77), None, "truncated");
        assert_eq!(classify(&[], dst, 77), None);
    }
}
