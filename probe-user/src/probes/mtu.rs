//! Path MTU probe: the largest IPv4 packet that really reaches the host and comes back,
//! measured with ICMP echo requests that carry DF (as `ping -M do -s N` does), searched to the
//! byte. Every size that gets no echo is retried (loss is not a limit); an ICMP
//! fragmentation-needed for a size is remembered, so a black hole (oversized packets vanish
//! without a word) is told apart from a smaller MTU that the path signals correctly.
//!
//! The socket uses IP_PMTUDISC_PROBE: DF is set but the kernel's cached path MTU is ignored,
//! so a size can be tried again after a router said it is too big (that is how the exact
//! value is confirmed), and nothing the probe learns changes the kernel's own cache.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub use super::icmp::Answer;
use super::{
    icmp::{self, Pinger},
    tcp::source_address,
};
use crate::capture::{Capture, FlowMatcher, event::KernelEvent};

/// `ping`'s default packet: 56 bytes of data.
const BASELINE: u16 = 84;
/// The smallest MTU IPv4 allows.
const MIN_MTU: u16 = 68;

#[derive(Debug, Clone)]
pub struct Spec {
    pub host: Ipv4Addr,
    /// Upper bound of the search (default: the MTU of the interface the route uses).
    pub max: Option<u16>,
    /// The MTU the CNI configured (flannel's FLANNEL_MTU) and where it was read.
    pub cni_mtu: Option<(u32, PathBuf)>,
}

/// One size tried.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// IP packet size in bytes (header included), as MTUs count.
    pub size: u16,
    pub answer: Answer,
    pub probes: u8,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// The search ran; `path_mtu` passed. `exact` when `path_mtu + 1` failed (or `path_mtu`
    /// is the upper bound), otherwise the deadline cut it short below `upper`.
    Measured {
        path_mtu: u16,
        exact: bool,
        upper: u16,
    },
    /// Even a small packet got no echo: the path MTU cannot be measured.
    NoEcho(Answer),
    /// A raw ICMP socket needs CAP_NET_RAW.
    NoPrivilege(String),
    NoRoute(String),
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Report {
    pub spec: Spec,
    /// The interface holding the source address and its MTU: what the sender assumes.
    pub interface: Option<(String, u16)>,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub events: Vec<KernelEvent>,
}

impl Report {
    /// The first fragmentation-needed the path sent, if any.
    pub fn signalled(&self) -> Option<(u16, Ipv4Addr)> {
        self.steps.iter().find_map(|s| match s.answer {
            Answer::FragNeeded { mtu, from } => Some((mtu, from)),
            _ => None,
        })
    }
}

pub async fn run(spec: Spec, deadline: Duration, capture: Option<Arc<Capture>>) -> Report {
    let fallback = spec.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || probe(spec, deadline, capture.as_deref())).await.unwrap_or_else(|e| Report {
        spec: fallback,
        interface: None,
        steps: Vec::new(),
        outcome: Outcome::Failed(format!("probe thread: {e}")),
        elapsed: started.elapsed(),
        events: Vec::new(),
    })
}

/// The search, blocking; ends within `deadline`.
pub fn probe(spec: Spec, deadline: Duration, capture: Option<&Capture>) -> Report {
    let started = Instant::now();
    let mut report = Report {
        spec,
        interface: None,
        steps: Vec::new(),
        outcome: Outcome::Failed(String::new()),
        elapsed: Duration::ZERO,
        events: Vec::new(),
    };
    let dst = report.spec.host;
    let source = match source_address(SocketAddr::new(IpAddr::V4(dst), 9)) {
        Ok(IpAddr::V4(s)) => s,
        Ok(IpAddr::V6(s)) => {
            report.outcome = Outcome::Failed(format!("an IPv6 source ({s}) for an IPv4 destination"));
            return report;
        }
        Err(e) => {
            report.outcome = Outcome::NoRoute(e.to_string());
            return report;
        }
    };
    report.interface = interface_mtu(source);
    let mut pinger = match Pinger::new(dst, super::fresh_id()) {
        Ok(p) => p,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            report.outcome = Outcome::NoPrivilege(format!("a raw ICMP socket needs CAP_NET_RAW ({e})"));
            return report;
        }
        Err(e) => {
            report.outcome = Outcome::Failed(format!("raw ICMP socket: {e}"));
            return report;
        }
    };
    let watch = capture.map(|c| c.watch(FlowMatcher::new(1, SocketAddr::new(IpAddr::V4(source), pinger.id))));
    report.outcome = search(&mut pinger, &mut report, started, deadline);
    report.elapsed = started.elapsed();
    let events = watch.map(crate::capture::Watch::finish).unwrap_or_default();
    report.events = icmp::without_delivered_replies(events, source);
    report
}

fn search(pinger: &mut Pinger, report: &mut Report, started: Instant, deadline: Duration) -> Outcome {
    let left = || deadline.saturating_sub(started.elapsed());
    // The baseline also sets the wait: a few round trips, never less than 30 ms.
    let first = Instant::now();
    let (baseline, probes) = pinger.try_size(BASELINE, left().min(Duration::from_millis(500)), left);
    report.steps.push(Step { size: BASELINE, answer: baseline, probes });
    if baseline != Answer::Reply {
        return Outcome::NoEcho(baseline);
    }
    let rtt = first.elapsed() / u32::from(probes.max(1));
    let wait = (rtt * 4 + Duration::from_millis(20)).clamp(Duration::from_millis(30), Duration::from_millis(300));
    let iface = report.interface.as_ref().map_or(1500, |(_, m)| *m);
    let upper = report.spec.max.unwrap_or(iface).max(BASELINE);
    let (mut passed, mut failed) = (BASELINE, None::<u16>);
    let mut next = Some(upper);
    let mut hint = None;
    while let Some(size) = next {
        if left().is_zero() {
            break;
        }
        let (answer, probes) = pinger.try_size(size, wait, left);
        report.steps.push(Step { size, answer, probes });
        if answer == Answer::Reply {
            passed = passed.max(size);
        } else {
            failed = Some(failed.map_or(size, |f| f.min(size)));
        }
        let Some(f) = failed else { break };
        if f <= passed + 1 {
            break;
        }
        // A router's next-hop MTU is tried first, then the byte above it confirms it.
        next = match answer {
            Answer::FragNeeded { mtu, .. } if mtu > passed && mtu < f && mtu >= MIN_MTU => {
                hint = Some(mtu);
                Some(mtu)
            }
            Answer::Reply if hint == Some(size) => Some(size + 1),
            _ => Some(passed + (f - passed) / 2),
        };
        if next == Some(passed) {
            next = Some(passed + 1);
        }
    }
    let exact = failed.is_none_or(|f| f == passed + 1);
    Outcome::Measured { path_mtu: passed, exact, upper: failed.map_or(upper, |f| f - 1) }
}

/// The interface that holds `source` and its MTU (SIOCGIFMTU works in any namespace, unlike
/// /sys/class/net, which shows the namespace sysfs was mounted in).
pub fn interface_mtu(source: Ipv4Addr) -> Option<(String, u16)> {
    let name = nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let addr = ifa.address.as_ref()?.as_sockaddr_in()?.ip();
        (addr == source).then_some(ifa.interface_name)
    })?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifru_mtu of the ifreq we own. (The request
    // is an unsigned long in glibc and an int in musl: `as _` fits either.)
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU as _, &raw mut req) };
    if rc < 0 {
        return None;
    }
    // SAFETY: after SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Some((name, u16::try_from(mtu).unwrap_or(u16::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_interface_mtu() {
        let (name, mtu) = interface_mtu(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(name, "lo");
        assert!(mtu >= 1500);
    }
}
