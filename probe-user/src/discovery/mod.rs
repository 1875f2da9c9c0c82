//! What netcheck learns about the node it runs on, without the cluster API.

pub mod api;
pub mod flannel;
pub mod netlink;
pub mod pki;

use std::path::{Path, PathBuf};

/// The node's root filesystem: `--host-root`, else `/host` when it holds a node root (a
/// `kubectl debug node` pod mounts it there), else `/`.
pub fn host_root(arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    let debug_mount = Path::new("/host");
    if debug_mount.join("etc/os-release").exists() || debug_mount.join("usr/lib/os-release").exists() {
        return debug_mount.to_path_buf();
    }
    PathBuf::from("/")
}
