//! `netcheck path`: the probes from a pod (or the node) to a destination, judged hop by hop.
//! The front end plans it in two steps so that a source that cannot be found is a usage error
//! before capture loads.

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use super::guard::{self, Subject};
use crate::{
    capture::Capture,
    discovery::{
        conntrack::L4,
        services::{self, Wanted},
    },
    netns,
    probes::path::{self, ApiSpec, Spec},
    verdict::{self, Check, Probe},
};

/// What `netcheck path` was asked.
pub struct Request<'a> {
    /// `host`, a network namespace (name or path) or a pod IP on this node.
    pub from: &'a str,
    pub dst: Destination,
    /// The peer node's agent port to ask for its kernel's events (`None`: do not ask).
    pub peer_agent: Option<u16>,
    pub host_root: PathBuf,
    pub kubeconfig: Option<PathBuf>,
}

/// Where the path goes, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `IP[:PORT]`: a pod, a node, or a Service IP.
    Address(Ipv4Addr, Option<u16>),
    /// `NAMESPACE/NAME[:PORT]`: a Service, whose cluster IP and port the API gives.
    Service(Wanted),
}

impl Destination {
    /// `IP[:PORT]` or `NAMESPACE/NAME[:PORT]`.
    pub fn parse(input: &str) -> Result<Self, String> {
        match path::parse_destination(input) {
            Ok((ip, port)) => Ok(Self::Address(ip, port)),
            Err(_) if input.contains('/') && input.parse::<std::net::SocketAddr>().is_err() => {
                Wanted::parse(input).map(Self::Service)
            }
            Err(e) => Err(e),
        }
    }
}

/// The path's probes, with the source found on this node and a Service's name resolved to its
/// cluster IP and port (within `timeout`).
pub async fn plan(req: Request<'_>, timeout: Duration) -> Result<Spec, String> {
    let (from, label) = path::resolve_source(req.from, &req.host_root).await?;
    let api = ApiSpec { kubeconfig: req.kubeconfig, host_root: req.host_root };
    let (dst, port) = match req.dst {
        Destination::Address(ip, port) => (ip, port),
        Destination::Service(wanted) => service_address(&api, &wanted, timeout).await?,
    };
    Ok(Spec { from, label, dst, port, api: Some(api), peer_agent: req.peer_agent })
}

/// A Service's cluster IP and TCP port, from the API.
async fn service_address(api: &ApiSpec, wanted: &Wanted, timeout: Duration) -> Result<(Ipv4Addr, Option<u16>), String> {
    let asked = async {
        let client = crate::discovery::api::client(api.kubeconfig.as_deref(), &api.host_root, timeout)
            .await
            .map_err(|e| crate::error::chain(&e))?;
        services::find(client, wanted, Some(L4::Tcp)).await.map_err(|e| crate::error::chain(&e))
    };
    let port = tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| format!("{wanted}: the API did not answer within {timeout:?}"))?
        .map_err(|e| format!("{wanted}: {e}"))?;
    match port.vip() {
        Some(std::net::SocketAddr::V4(vip)) => Ok((*vip.ip(), Some(vip.port()))),
        Some(vip) => Err(format!("{wanted}: its cluster IP {vip} is IPv6; IPv6 paths are not supported yet")),
        None => Err(format!("{wanted}: the Service has no cluster IP (headless): give one of its pods' IPs")),
    }
}

/// Runs the probes and judges them: the path's check with its hops, and the verdict line. The
/// probes run on a task of their own: if it crashes, the path is one failed check saying so
/// (`internal_error`), never a missing report.
pub async fn run(
    spec: Spec,
    timeout: Duration,
    capture: Option<Arc<Capture>>,
) -> crate::error::Result<(Check, String)> {
    let capture_on = capture.is_some();
    let dst = match spec.port {
        Some(p) => format!("{}:{p}", spec.dst),
        None => spec.dst.to_string(),
    };
    let subject = Subject::new(Probe::Path, format!("{} -> {dst}", spec.label));
    let probes = tokio::spawn(async move {
        crate::failpoint::crash_if(Probe::Path.as_str());
        path::run(spec, timeout, capture).await
    });
    let report = match probes.await {
        Ok(report) => report?,
        Err(crashed) => {
            let check = guard::crashed(subject, &guard::why(crashed));
            let line = check.detail.clone();
            return Ok((check, line));
        }
    };
    let node_netns = netns::current_inode()
        .and_then(|i| u32::try_from(i).ok())
        .map_or_else(|| "host".to_string(), |i| netns::NetnsNames::scan().name(i));
    Ok(verdict::path::verdict(&report, capture_on, &node_netns))
}
