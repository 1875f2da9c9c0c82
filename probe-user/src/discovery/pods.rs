//! The pods' network namespaces on this node, found the way the kernel links them: every
//! namespace file there is (named ones where `ip netns` and CNI plugins bind them, and each
//! process's `/proc/PID/ns/net`), kept when one of this namespace's veths leads into it
//! (its peer's netnsid is the id this namespace gave that namespace). Entering a namespace to
//! read its addresses needs CAP_SYS_ADMIN.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use futures_util::StreamExt as _;
use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    nsid::{NsidAttribute, NsidMessage},
};

use super::netlink::{self, Link};

/// Where named namespaces are bound: on this machine, and under a node root mounted elsewhere
/// (a `kubectl debug node` pod sees the node's at /host/run/netns).
const NAMED_DIRS: &[&str] = &["var/run/netns", "run/netns"];

/// A namespace reached by one of this namespace's veths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The file to enter it by.
    pub path: PathBuf,
    /// Its name, or `pid N` for a process's.
    pub label: String,
    /// This namespace's side of the veth.
    pub veth: Link,
}

/// Every namespace file, once per namespace: named ones first, then processes'.
pub fn namespace_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut add = |label: String, path: PathBuf| {
        if let Ok(meta) = std::fs::metadata(&path)
            && seen.insert((meta.dev(), meta.ino()))
        {
            out.push((label, path));
        }
    };
    let mut dirs: Vec<PathBuf> = NAMED_DIRS.iter().map(|d| Path::new("/").join(d)).collect();
    if root != Path::new("/") {
        dirs.extend(NAMED_DIRS.iter().map(|d| root.join(d)));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let label = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            add(label, path);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc") {
        let mut pids: Vec<u32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
        pids.sort_unstable();
        for pid in pids {
            add(format!("pid {pid}"), PathBuf::from(format!("/proc/{pid}/ns/net")));
        }
    }
    out
}

/// The id this namespace gave the namespace behind `path` (RTM_GETNSID), if any.
async fn nsid_of(handle: &mut rtnetlink::Handle, path: &Path) -> Option<i32> {
    let file = std::fs::File::open(path).ok()?;
    let mut msg = NsidMessage::default();
    msg.attributes = vec![NsidAttribute::Fd(u32::try_from(file.as_raw_fd()).ok()?)];
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut responses = handle.request(req).ok()?;
    while let Some(resp) = responses.next().await {
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) = resp.payload {
            return m.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            });
        }
        if let NetlinkPayload::Error(_) = resp.payload {
            return None;
        }
    }
    None
}

/// The namespaces this namespace's veths lead into, with the veth of each.
pub async fn attached(root: &Path) -> std::io::Result<Vec<Attached>> {
    let links = netlink::links().await?;
    let veths: Vec<&Link> =
        links.iter().filter(|l| l.kind.as_deref() == Some("veth") && l.peer_netnsid.is_some()).collect();
    if veths.is_empty() {
        return Ok(Vec::new());
    }
    let (connection, mut handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(connection);
    let mut out = Vec::new();
    for (label, path) in namespace_files(root) {
        let Some(id) = nsid_of(&mut handle, &path).await else { continue };
        if let Some(veth) = veths.iter().find(|v| v.peer_netnsid == Some(id))
            && !out.iter().any(|a: &Attached| a.veth.index == veth.index)
        {
            out.push(Attached { path, label, veth: (*veth).clone() });
        }
    }
    task.abort();
    Ok(out)
}

/// Why no pod namespace on this node holds an address.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("listing this node's veths: {0}")]
    Veths(#[source] std::io::Error),
    #[error("no pod namespace is attached to this namespace by a veth, so none holds {0}")]
    NoneAttached(Ipv4Addr),
    /// `unentered` names the first namespace that could not be entered, and how many.
    #[error("none of the {count} pod namespaces attached to this node holds {ip}{unentered}")]
    NotFound { ip: Ipv4Addr, count: usize, unentered: String },
}

/// The pod namespace on this node that holds `ip`.
pub async fn find_by_ip(ip: Ipv4Addr, root: &Path) -> Result<Attached, FindError> {
    let candidates = attached(root).await.map_err(FindError::Veths)?;
    if candidates.is_empty() {
        return Err(FindError::NoneAttached(ip));
    }
    let mut problems = Vec::new();
    for c in &candidates {
        let path = c.path.display().to_string();
        match crate::netns::run_in(Some(path), move || async move { addresses() }).await {
            Ok(addrs) if addrs.contains(&IpAddr::V4(ip)) => return Ok(c.clone()),
            Ok(_) => {}
            Err(e) => problems.push(crate::error::chain(&e)),
        }
    }
    let unentered = problems.first().map(|p| format!(" ({} could not be entered: {p})", problems.len()));
    Err(FindError::NotFound { ip, count: candidates.len(), unentered: unentered.unwrap_or_default() })
}

/// The calling thread's namespace's addresses.
fn addresses() -> Vec<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs.filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())))).collect()
        })
        .unwrap_or_default()
}
