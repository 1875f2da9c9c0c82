//! Kernel events decoded for people and scripts: names instead of numbers.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use probe_common::{Event, Flow, flags, inferred, kind};
use serde::{Deserialize, Serialize};

use super::{btf::ReasonNames, location};
use crate::netns::NetnsNames;

/// A 5-tuple as shown in evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowView {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    #[serde(untagged)]
    Other(u8),
}

impl Proto {
    pub fn from_number(n: u8) -> Self {
        match n {
            6 => Self::Tcp,
            17 => Self::Udp,
            1 => Self::Icmp,
            58 => Self::Icmpv6,
            other => Self::Other(other),
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Icmp => f.write_str("icmp"),
            Self::Icmpv6 => f.write_str("icmpv6"),
            Self::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

impl std::fmt::Display for FlowView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.proto, self.src, self.dst)
    }
}

impl FlowView {
    fn from_raw(flow: &Flow) -> Option<Self> {
        let (src, dst) = match flow.family {
            4 => {
                let s: [u8; 4] = flow.saddr[..4].try_into().ok()?;
                let d: [u8; 4] = flow.daddr[..4].try_into().ok()?;
                (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
            }
            6 => (IpAddr::V6(Ipv6Addr::from(flow.saddr)), IpAddr::V6(Ipv6Addr::from(flow.daddr))),
            _ => return None,
        };
        Some(Self {
            proto: Proto::from_number(flow.proto),
            src: SocketAddr::new(src, flow.sport),
            dst: SocketAddr::new(dst, flow.dport),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Drop,
    Rst,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
}

/// One decoded kernel event (read back from an agent's `/events` too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelEvent {
    pub kind: EventKind,
    /// Drop or reset reason name from the kernel's BTF (or inferred from where the packet was
    /// dropped, see `reason_note`); for ICMP a description of type/code; null when the kernel
    /// gave none (`reason_note` says why).
    #[serde(default)]
    pub reason: Option<String>,
    /// Why `reason` is null, or how it was inferred on a kernel that records none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason_note: Option<String>,
    /// Where the kernel freed the packet (`function+0xoffset`, from /proc/kallsyms), when the
    /// reason alone does not say.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Namespace name (from /var/run/netns) or its inode number.
    pub netns: String,
    pub netns_inode: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowView>,
    /// The encapsulated flow when `flow` is VXLAN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inner: Option<FlowView>,
    #[serde(skip, default)]
    pub ts_ns: u64,
    #[serde(skip, default)]
    pub from_socket: bool,
}

impl KernelEvent {
    pub fn decode(ev: &Event, names: &ReasonNames, netns: &NetnsNames) -> Option<Self> {
        let mut note = None;
        let (kind, reason, direction, icmp) = match ev.kind {
            kind::DROP if ev.reason == inferred::UNRECORDED => {
                note = Some("this kernel's kfree_skb passes no drop reason (before 5.17)".to_string());
                (EventKind::Drop, None, None, None)
            }
            kind::DROP => {
                if let Some(c) = location::cause(ev.reason) {
                    note = Some(format!("inferred from where it was dropped: {}", c.why));
                }
                (EventKind::Drop, Some(names.drop_name(ev.reason)), None, None)
            }
            kind::RST_SENT if ev.reason == inferred::UNRECORDED => {
                note = Some("this kernel's tcp_send_reset passes no reset reason (before 6.10)".to_string());
                (EventKind::Rst, None, Some(Direction::Sent), None)
            }
            kind::RST_SENT => (EventKind::Rst, Some(names.reset_name(ev.reason)), Some(Direction::Sent), None),
            kind::RST_RECEIVED => (EventKind::Rst, None, Some(Direction::Received), None),
            kind::ICMP_SENT => {
                let [_, _, t, c] = ev.reason.to_be_bytes();
                (EventKind::Icmp, Some(icmp_name(t, c).to_string()), Some(Direction::Sent), Some((t, c)))
            }
            _ => return None,
        };
        let device = (ev.flags & flags::HAS_DEVICE != 0).then(|| {
            let end = ev.dev.iter().position(|&b| b == 0).unwrap_or(ev.dev.len());
            String::from_utf8_lossy(&ev.dev[..end]).into_owned()
        });
        let flow = if ev.flags & flags::HAS_FLOW != 0 { FlowView::from_raw(&ev.outer) } else { None };
        let inner = if ev.flags & flags::HAS_INNER != 0 { FlowView::from_raw(&ev.inner) } else { None };
        Some(Self {
            kind,
            reason,
            reason_note: note,
            location: None,
            direction,
            icmp_type: icmp.map(|(t, _)| t),
            icmp_code: icmp.map(|(_, c)| c),
            device,
            netns: netns.name(ev.netns),
            netns_inode: ev.netns,
            flow,
            inner,
            ts_ns: ev.ts_ns,
            from_socket: ev.flags & flags::FROM_SOCKET != 0,
        })
    }

    /// Names where a drop happened when its reason does not say enough: none recorded, an
    /// inferred one (the function it came from), or NOT_SPECIFIED.
    pub fn locate(&mut self, raw: &Event, symbols: Option<&mut location::Symbols>) {
        let vague = raw.reason == inferred::UNRECORDED
            || location::cause(raw.reason).is_some()
            || self.reason.as_deref() == Some("NOT_SPECIFIED");
        if self.kind != EventKind::Drop || !vague || raw.location == 0 {
            return;
        }
        let Some(symbols) = symbols else {
            if self.reason.is_none() {
                append(&mut self.reason_note, "/proc/kallsyms hides where it was dropped");
            }
            return;
        };
        self.location = symbols.name(raw.location);
        if self.reason.is_none() {
            let function = self.location_function().unwrap_or_default().to_string();
            match location::candidates(&function) {
                Some(causes) => append(&mut self.reason_note, &format!("{function} drops for {causes}")),
                None if self.location.is_none() => append(&mut self.reason_note, "its location is not a known symbol"),
                None => {}
            }
        }
    }

    /// The function of [`Self::location`] (`tcp_v4_rcv` of `tcp_v4_rcv+0x4d2`).
    pub fn location_function(&self) -> Option<&str> {
        self.location.as_deref().map(|l| l.split('+').next().unwrap_or(l))
    }

    /// One line for people: `drop NETFILTER_DROP dev eth0 netns n2 tcp a -> b (inner ...)`.
    pub fn summary(&self) -> String {
        let mut s = match self.kind {
            EventKind::Drop => match (&self.reason, self.location_function()) {
                (Some(r), _) => format!("drop {r}"),
                (None, Some(f)) => format!("drop in {f} (no reason recorded)"),
                (None, None) => "drop (no reason recorded)".to_string(),
            },
            EventKind::Rst => match self.direction {
                Some(Direction::Received) => "rst received".to_string(),
                _ => format!("rst sent ({})", self.reason.as_deref().unwrap_or("no reason recorded")),
            },
            EventKind::Icmp => format!("icmp sent {}", self.reason.as_deref().unwrap_or("?")),
        };
        if let Some(d) = &self.device {
            let _ = write!(s, " dev {d}");
        }
        let _ = write!(s, " netns {}", self.netns);
        if let Some(f) = &self.flow {
            let _ = write!(s, " {f}");
        }
        if let Some(i) = &self.inner {
            let _ = write!(s, " [vxlan inner {i}]");
        }
        s
    }
}

fn append(note: &mut Option<String>, more: &str) {
    match note {
        Some(n) => {
            n.push_str("; ");
            n.push_str(more);
        }
        None => *note = Some(more.to_string()),
    }
}

/// Names of the ICMP (v4) destination-unreachable codes operators meet; others by number.
pub fn icmp_name(icmp_type: u8, code: u8) -> &'static str {
    match (icmp_type, code) {
        (3, 0) => "net-unreachable",
        (3, 1) => "host-unreachable",
        (3, 2) => "protocol-unreachable",
        (3, 3) => "port-unreachable",
        (3, 4) => "fragmentation-needed",
        (3, 9) => "net-prohibited",
        (3, 10) => "host-prohibited",
        (3, 13) => "admin-prohibited",
        (3, _) => "destination-unreachable",
        (11, _) => "time-exceeded",
        (12, _) => "parameter-problem",
        _ => "icmp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: u32, reason: u32) -> Event {
        let mut outer = Flow { family: 4, proto: 6, sport: 40000, dport: 80, ..Flow::default() };
        outer.saddr[..4].copy_from_slice(&[10, 244, 1, 2]);
        outer.daddr[..4].copy_from_slice(&[10, 244, 2, 2]);
        let mut dev = [0u8; 16];
        dev[..4].copy_from_slice(b"eth0");
        Event {
            ts_ns: 1,
            location: 0,
            kind,
            reason,
            ifindex: 2,
            netns: 4_026_531_840,
            flags: flags::HAS_FLOW | flags::HAS_DEVICE,
            len: 60,
            dev,
            outer,
            inner: Flow::default(),
        }
    }

    #[test]
    fn decodes_drop_with_names() {
        let mut names = ReasonNames::default();
        names.drop.insert(6, "NETFILTER_DROP".into());
        let ev = KernelEvent::decode(&raw(kind::DROP, 6), &names, &NetnsNames::default()).unwrap();
        assert_eq!(ev.reason.as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(ev.device.as_deref(), Some("eth0"));
        assert_eq!(ev.netns, "4026531840");
        assert_eq!(ev.flow.unwrap().to_string(), "tcp 10.244.1.2:40000 -> 10.244.2.2:80");
        assert!(ev.inner.is_none());
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["kind"], "drop");
        assert_eq!(json["flow"]["proto"], "tcp");
    }

    #[test]
    fn decodes_icmp_type_and_code() {
        let ev = KernelEvent::decode(&raw(kind::ICMP_SENT, 0x030a), &ReasonNames::default(), &NetnsNames::default())
            .unwrap();
        assert_eq!(ev.reason.as_deref(), Some("host-prohibited"));
        assert_eq!((ev.icmp_type, ev.icmp_code), (Some(3), Some(10)));
    }

    /// 5.10: no reason passed; the program named a netfilter drop from its location.
    #[test]
    fn unrecorded_and_inferred_reasons() {
        let none = KernelEvent::decode(
            &raw(kind::DROP, inferred::UNRECORDED),
            &ReasonNames::default(),
            &NetnsNames::default(),
        )
        .unwrap();
        assert_eq!(none.reason, None);
        assert!(none.reason_note.as_deref().unwrap().contains("no drop reason"), "{none:?}");
        let json = serde_json::to_value(&none).unwrap();
        assert_eq!(json["reason"], serde_json::Value::Null, "a drop without reason says null: {json}");
        assert_eq!(none.summary().split(" dev").next(), Some("drop (no reason recorded)"));

        let nf = KernelEvent::decode(&raw(kind::DROP, inferred::BASE), &ReasonNames::default(), &NetnsNames::default())
            .unwrap();
        assert_eq!(nf.reason.as_deref(), Some("NETFILTER_DROP"));
        assert!(nf.reason_note.as_deref().unwrap().contains("nf_hook_slow"), "{nf:?}");

        let rst = KernelEvent::decode(
            &raw(kind::RST_SENT, inferred::UNRECORDED),
            &ReasonNames::default(),
            &NetnsNames::default(),
        )
        .unwrap();
        assert_eq!(rst.reason, None);
        assert!(rst.summary().starts_with("rst sent (no reason recorded)"));
    }

    /// Without symbols the note says where the location went; the event deserializes back
    /// (an agent's `/events`).
    #[test]
    fn location_hidden_is_said_and_round_trips() {
        let mut r = raw(kind::DROP, inferred::UNRECORDED);
        r.location = 0xffff_ffff_8100_0000;
        let mut ev = KernelEvent::decode(&r, &ReasonNames::default(), &NetnsNames::default()).unwrap();
        ev.locate(&r, None);
        assert!(ev.reason_note.as_deref().unwrap().ends_with("/proc/kallsyms hides where it was dropped"), "{ev:?}");
        let back: KernelEvent = serde_json::from_value(serde_json::to_value(&ev).unwrap()).unwrap();
        assert_eq!(back.reason_note, ev.reason_note);
    }

    #[test]
    fn unknown_kind_is_ignored() {
        assert!(KernelEvent::decode(&raw(99, 0), &ReasonNames::default(), &NetnsNames::default()).is_none());
    }
}
