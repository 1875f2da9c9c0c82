//! Filters for `netcheck capture`, applied to decoded events (all must hold; an empty list
//! of a kind means "any").

use std::net::IpAddr;

use super::event::{FlowView, KernelEvent};

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The event's flow (outer or VXLAN inner) has one of these addresses.
    pub hosts: Vec<IpAddr>,
    /// The event's flow (outer or VXLAN inner) has one of these ports.
    pub ports: Vec<u16>,
    /// Only these reasons (kernel names, case-insensitive).
    pub reasons: Vec<String>,
    /// Never these reasons (e.g. NOT_SPECIFIED, the kernel's unlabelled frees).
    pub exclude_reasons: Vec<String>,
}

impl Filter {
    pub fn matches(&self, ev: &KernelEvent) -> bool {
        let flows = || ev.flow.iter().chain(ev.inner.iter());
        let reason = ev.reason.as_deref().unwrap_or("");
        (self.hosts.is_empty() || flows().any(|f| has_host(f, &self.hosts)))
            && (self.ports.is_empty()
                || flows().any(|f| self.ports.contains(&f.src.port()) || self.ports.contains(&f.dst.port())))
            && (self.reasons.is_empty() || self.reasons.iter().any(|r| r.eq_ignore_ascii_case(reason)))
            && !self.exclude_reasons.iter().any(|r| r.eq_ignore_ascii_case(reason))
    }
}

fn has_host(f: &FlowView, hosts: &[IpAddr]) -> bool {
    hosts.contains(&f.src.ip()) || hosts.contains(&f.dst.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::event::{EventKind, Proto};

    fn ev(reason: &str, src: &str, dst: &str, inner: Option<(&str, &str)>) -> KernelEvent {
        let fv = |s: &str, d: &str, proto| FlowView { proto, src: s.parse().unwrap(), dst: d.parse().unwrap() };
        KernelEvent {
            kind: EventKind::Drop,
            reason: Some(reason.into()),
            reason_note: None,
            location: None,
            direction: None,
            icmp_type: None,
            icmp_code: None,
            device: None,
            netns: "n".into(),
            netns_inode: 1,
            flow: Some(fv(src, dst, Proto::Udp)),
            inner: inner.map(|(s, d)| fv(s, d, Proto::Tcp)),
            ts_ns: 0,
            from_socket: false,
        }
    }

    #[test]
    fn empty_filter_passes_everything() {
        assert!(Filter::default().matches(&ev("NOT_SPECIFIED", "1.1.1.1:1", "2.2.2.2:2", None)));
    }

    #[test]
    fn host_and_port_look_inside_vxlan() {
        let e =
            ev("NETFILTER_DROP", "192.168.50.11:1000", "192.168.50.12:8472", Some(("10.244.1.2:5", "10.244.2.2:8080")));
        let f = Filter { hosts: vec!["10.244.2.2".parse().unwrap()], ports: vec![8080], ..Filter::default() };
        assert!(f.matches(&e));
        let f = Filter { hosts: vec!["10.9.9.9".parse().unwrap()], ..Filter::default() };
        assert!(!f.matches(&e));
        let f = Filter { ports: vec![53], ..Filter::default() };
        assert!(!f.matches(&e));
    }

    #[test]
    fn reasons_include_and_exclude() {
        let e = ev("NOT_SPECIFIED", "1.1.1.1:1", "2.2.2.2:2", None);
        let only = Filter { reasons: vec!["netfilter_drop".into()], ..Filter::default() };
        assert!(!only.matches(&e));
        let quiet = Filter { exclude_reasons: vec!["not_specified".into()], ..Filter::default() };
        assert!(!quiet.matches(&e));
        assert!(quiet.matches(&ev("NO_SOCKET", "1.1.1.1:1", "2.2.2.2:2", None)));
    }
}
