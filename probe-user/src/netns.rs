//! Network namespaces: entering one (`--netns`) and naming them in evidence.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};

/// Where `ip netns` and CNI plugins bind-mount named namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// `NAME` (under /var/run/netns) or a path such as `/proc/PID/ns/net`.
pub fn resolve(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') { PathBuf::from(name_or_path) } else { Path::new(NETNS_DIR).join(name_or_path) }
}

/// Moves the calling thread into the namespace. Threads it creates afterwards inherit it, so
/// call this before starting the async runtime.
pub fn enter(name_or_path: &str) -> Result<()> {
    let _ = initial_inode();
    let path = resolve(name_or_path);
    let file = File::open(&path).map_err(|e| Error::Netns {
        name: name_or_path.to_string(),
        why: format!("cannot open {}", path.display()),
        source: Some(e),
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Netns {
        name: name_or_path.to_string(),
        why: if errno == nix::errno::Errno::EPERM {
            "entering it needs CAP_SYS_ADMIN".to_string()
        } else {
            format!("setns: {errno}")
        },
        source: Some(std::io::Error::from(errno)),
    })
}

/// Runs `work` on a thread of its own inside the namespace (`None`: the caller's), on a
/// single-threaded runtime; sockets, netlink and threads it creates belong to that namespace.
/// The rest of the process stays where it is, so one run can look at two namespaces.
pub async fn run_in<T, F, Fut>(netns: Option<String>, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let label = netns.clone().unwrap_or_else(|| "current".into());
    let spawned = std::thread::Builder::new().name("netcheck-netns".into()).spawn(move || {
        // A panic in `work` goes back to the caller as a panic (below), so the task guard there
        // turns it into a failed check with its message, as for work on the caller's thread.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(ns) = &netns {
                enter(ns)?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                Error::Netns { name: netns.clone().unwrap_or_default(), why: "runtime".into(), source: Some(e) }
            })?;
            Ok(runtime.block_on(work()))
        }));
        let _ = tx.send(result);
    });
    if let Err(e) = spawned {
        return Err(Error::Netns { name: label, why: "cannot start a thread".into(), source: Some(e) });
    }
    match rx.await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(Error::Netns { name: label, why: "its thread ended without a result".into(), source: None }),
    }
}

/// Inode of the namespace netcheck started in (recorded before any `enter`).
pub fn initial_inode() -> Option<u64> {
    static INITIAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *INITIAL.get_or_init(current_inode)
}

/// Inode of the calling thread's network namespace.
pub fn current_inode() -> Option<u64> {
    std::fs::metadata("/proc/thread-self/ns/net").ok().map(|m| m.ino())
}

/// Names of network namespaces by inode: the named ones under /var/run/netns, and "host" for
/// the namespace of PID 1 when it has no other name.
#[derive(Debug, Default, Clone)]
pub struct NetnsNames {
    by_inode: HashMap<u64, String>,
}

impl NetnsNames {
    pub fn scan() -> Self {
        let mut by_inode = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
            for entry in entries.flatten() {
                if let (Ok(meta), Some(name)) = (std::fs::metadata(entry.path()), entry.file_name().to_str()) {
                    by_inode.insert(meta.ino(), name.to_string());
                }
            }
        }
        // The host's namespace: PID 1's, or (when /proc/1 is not ours to read) the one netcheck
        // started in, which is the host's on a node and in a `kubectl debug node` pod.
        let host = std::fs::metadata("/proc/1/ns/net").ok().map(|m| m.ino()).or_else(initial_inode);
        if let Some(ino) = host {
            by_inode.entry(ino).or_insert_with(|| "host".to_string());
        }
        Self { by_inode }
    }

    /// The name, or the inode number as text when the namespace has none (0: unknown).
    pub fn name(&self, inode: u32) -> String {
        self.by_inode
            .get(&u64::from(inode))
            .cloned()
            .unwrap_or_else(|| if inode == 0 { "unknown".to_string() } else { inode.to_string() })
    }

    /// Adds a namespace that appeared after the scan.
    pub fn insert(&mut self, inode: u64, name: String) {
        self.by_inode.insert(inode, name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(resolve("pod-a"), PathBuf::from("/var/run/netns/pod-a"));
        assert_eq!(resolve("/proc/1/ns/net"), PathBuf::from("/proc/1/ns/net"));
        let mut names = NetnsNames::default();
        names.insert(42, "n2".into());
        assert_eq!(names.name(42), "n2");
        assert_eq!(names.name(7), "7");
        assert_eq!(names.name(0), "unknown");
    }

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let err = enter("netcheck-does-not-exist").unwrap_err();
        assert!(err.to_string().contains("netcheck-does-not-exist"), "{err}");
    }
}
