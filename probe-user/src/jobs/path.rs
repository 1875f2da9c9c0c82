//! `netcheck path`: the probes from a pod (or the node) to a destination, judged hop by hop.
//! The front end plans it in two steps so that a source that cannot be found is a usage error
//! before capture loads.

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration};

use super::guard::{self, Subject};
use crate::{
    capture::Capture,
    netns,
    probes::path::{self, ApiSpec, Spec},
    verdict::{self, Check, Probe},
};

/// What `netcheck path` was asked.
pub struct Request<'a> {
    /// `host`, a network namespace (name or path) or a pod IP on this node.
    pub from: &'a str,
    pub dst: Ipv4Addr,
    pub port: Option<u16>,
    /// The peer node's agent port to ask for its kernel's events (`None`: do not ask).
    pub peer_agent: Option<u16>,
    pub host_root: PathBuf,
    pub kubeconfig: Option<PathBuf>,
}

/// The path's probes, with the source found on this node.
pub async fn plan(req: Request<'_>) -> Result<Spec, String> {
    let (from, label) = path::resolve_source(req.from, &req.host_root).await?;
    let api = Some(ApiSpec { kubeconfig: req.kubeconfig, host_root: req.host_root });
    Ok(Spec { from, label, dst: req.dst, port: req.port, api, peer_agent: req.peer_agent })
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
