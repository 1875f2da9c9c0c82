//! What the running kernel's tracepoints pass, read from tracefs: the kernel's own description
//! of each event (`events/<group>/<name>/format`). Tests whose expectations differ between
//! kernels (`cargo xtask kernels` runs them on 5.10, 6.1 and 6.12) take them from here, a source
//! independent of the BTF netcheck reads, and never from a version number.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// The features of the running kernel's tracepoints that change what netcheck can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[expect(clippy::struct_excessive_bools, reason = "independent facts of the kernel, each read from tracefs")]
pub struct Tracepoints {
    /// `skb:kfree_skb` passes a drop reason (5.17+, and 5.15.y).
    pub drop_reason: bool,
    /// `tcp:tcp_send_reset` passes a reset reason (6.10+); the same change made it fire for a
    /// packet without a socket (net/ipv4/tcp_ipv4.c), so this also says whether a refused
    /// connection's RST is seen.
    pub reset_reason: bool,
    /// `icmp:icmp_send` exists (6.10+, and 6.1.y and 6.6.y backports).
    pub icmp_send: bool,
    /// The kernel's drop reasons include QUEUE_PURGE (6.6+): before, a closing socket's purged
    /// queue is a NOT_SPECIFIED drop (or no reason at all).
    pub queue_purge: bool,
}

impl Tracepoints {
    /// Reads tracefs once per process (tests run in parallel), mounting it on a temporary
    /// folder when it is not mounted (root only).
    pub fn running() -> Result<Self> {
        static ONCE: std::sync::OnceLock<Result<Tracepoints, String>> = std::sync::OnceLock::new();
        ONCE.get_or_init(|| Self::probe().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
    }

    fn probe() -> Result<Self> {
        let mounted = Path::new("/sys/kernel/tracing/events/skb");
        if mounted.exists() {
            return Self::read(Path::new("/sys/kernel/tracing"));
        }
        let dir = PathBuf::from(format!("/tmp/netlab-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let status = std::process::Command::new("mount").args(["-t", "tracefs", "nodev"]).arg(&dir).status()?;
        if !status.success() {
            bail!("mount -t tracefs failed: the kernel oracle needs root and tracefs");
        }
        let r = Self::read(&dir);
        let _ = std::process::Command::new("umount").arg(&dir).status();
        let _ = std::fs::remove_dir(&dir);
        r
    }

    fn read(root: &Path) -> Result<Self> {
        let format = |event: &str| -> Result<String> {
            let p = root.join("events").join(event).join("format");
            std::fs::read_to_string(&p).with_context(|| format!("{}", p.display()))
        };
        let has_reason = |f: &str| f.lines().any(|l| l.contains("field:") && l.contains(" reason;"));
        let kfree_skb = format("skb/kfree_skb")?;
        Ok(Self {
            drop_reason: has_reason(&kfree_skb),
            queue_purge: kfree_skb.contains("\"QUEUE_PURGE\""),
            reset_reason: has_reason(&format("tcp/tcp_send_reset")?),
            icmp_send: root.join("events/icmp/icmp_send").exists(),
        })
    }
}

/// Whether this kernel charges eBPF maps to RLIMIT_MEMLOCK (before 5.11, when commit "bpf:
/// eliminate rlimit-based memory accounting" moved the charge to the memory cgroup): then
/// capture needs CAP_SYS_RESOURCE to raise the limit. Mainline behaviour, not backported, so the
/// release number is the oracle here.
pub fn memlock_charged() -> bool {
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) < (5, 11)
}
