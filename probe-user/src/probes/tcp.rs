//! TCP connect probe: one handshake to the target under a deadline, from a socket bound to a
//! known local endpoint so the kernel's drops and resets of exactly this flow can be found.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::net::{TcpSocket, TcpStream};

use super::Target;
use crate::{
    capture::{Capture, FlowMatcher, event::KernelEvent},
    discovery::conntrack::L4,
};

/// How the handshake ended.
#[derive(Debug)]
pub enum Outcome {
    Connected,
    /// The deadline passed without an answer.
    TimedOut,
    /// No route from this namespace (decided locally, nothing was sent).
    NoRoute(io::Error),
    /// The kernel reported an error for the connection attempt.
    Failed(io::Error),
    /// The host name did not resolve.
    Unresolved(io::Error),
}

/// Everything the verdict needs.
#[derive(Debug)]
pub struct Report {
    pub target: Target,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub events: Vec<KernelEvent>,
    /// Why ICMP errors cannot be in `events` though capture runs (a kernel without the
    /// `icmp_send` tracepoint), so a verdict does not read their absence as none sent.
    pub icmp_unseen: Option<String>,
}

pub async fn probe(target: &Target, deadline: Duration, capture: Option<&Capture>) -> Report {
    connect(target, deadline, capture).await.0
}

/// The handshake of [`probe`], keeping the connection for probes that speak over it (TLS).
pub async fn connect(target: &Target, deadline: Duration, capture: Option<&Capture>) -> (Report, Option<TcpStream>) {
    let started = Instant::now();
    let report = |local, remote, outcome, events| Report {
        target: target.clone(),
        local,
        remote,
        outcome,
        elapsed: started.elapsed(),
        events,
        icmp_unseen: capture.and_then(Capture::icmp_unseen),
    };
    let remote = match resolve(target, deadline).await {
        Ok(r) => r,
        Err(e) => return (report(None, None, Outcome::Unresolved(e), Vec::new()), None),
    };
    let local_ip = match source_address(remote) {
        Ok(ip) => ip,
        Err(e) => return (report(None, Some(remote), Outcome::NoRoute(e), Vec::new()), None),
    };
    let socket = match bind(SocketAddr::new(local_ip, 0)) {
        Ok(s) => s,
        Err(e) => return (report(None, Some(remote), Outcome::Failed(e), Vec::new()), None),
    };
    let local = socket.local_addr().ok();
    let watch = local.and_then(|l| capture.map(|c| c.watch(FlowMatcher::tcp(l))));
    let remaining = deadline.saturating_sub(started.elapsed());
    let handshake = async {
        tokio::select! {
            r = socket.connect(remote) => r,
            r = super::nat::follow(watch.as_ref(), L4::Tcp, local, remote, super::nat::TCP_LOOKUP_AFTER) => r,
        }
    };
    let result = tokio::time::timeout(remaining, handshake).await;
    let elapsed = started.elapsed();
    // The probe's window is the handshake: close it before closing the connection, whose
    // teardown has drops of its own (e.g. QUEUE_PURGE when the server closes first).
    let events = watch.map(crate::capture::Watch::finish_in_task).unwrap_or_default();
    let (outcome, stream) = match result {
        Ok(Ok(stream)) => (Outcome::Connected, Some(stream)),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ETIMEDOUT) => (Outcome::TimedOut, None),
        Ok(Err(e)) => (Outcome::Failed(e), None),
        Err(_elapsed) => (Outcome::TimedOut, None),
    };
    (Report { elapsed, ..report(local, Some(remote), outcome, events) }, stream)
}

async fn resolve(target: &Target, deadline: Duration) -> io::Result<SocketAddr> {
    if let Some(ip) = target.ip() {
        return Ok(SocketAddr::new(ip, target.port));
    }
    let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(deadline, lookup)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "name lookup timed out"))??
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// The source address the kernel would use for `remote`: a route lookup through a connected
/// UDP socket, which sends nothing. Fails with ENETUNREACH when there is no route.
pub fn source_address(remote: SocketAddr) -> io::Result<IpAddr> {
    let any = if remote.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    let socket = std::net::UdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(remote)?;
    Ok(socket.local_addr()?.ip())
}

fn bind(local: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if local.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(local)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn loopback_listener_connects_and_closed_port_is_refused() {
        rt().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let open = Target::parse(&listener.local_addr().unwrap().to_string()).unwrap();
            let r = probe(&open, Duration::from_secs(2), None).await;
            assert!(matches!(r.outcome, Outcome::Connected), "{r:?}");
            assert_eq!(r.local.unwrap().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

            let port = listener.local_addr().unwrap().port();
            drop(listener);
            let closed = Target::parse(&format!("127.0.0.1:{port}")).unwrap();
            let r = probe(&closed, Duration::from_secs(2), None).await;
            match r.outcome {
                Outcome::Failed(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
                other => panic!("expected refused, got {other:?}"),
            }
        });
    }
}
