//! What this process may do, checked up front so netcheck can say exactly what it lacked.

use caps::{CapSet, Capability};
use serde::Serialize;

/// Where the kernel exposes its own BTF (capture reads it; its absence is a missing feature).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A capability or kernel feature a part of netcheck needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Requirement {
    #[serde(rename = "CAP_BPF")]
    CapBpf,
    #[serde(rename = "CAP_PERFMON")]
    CapPerfmon,
    #[serde(rename = "CAP_NET_RAW")]
    CapNetRaw,
    #[serde(rename = "CAP_NET_ADMIN")]
    CapNetAdmin,
    #[serde(rename = "CAP_SYS_ADMIN")]
    CapSysAdmin,
    /// Raising RLIMIT_MEMLOCK, which kernels before 5.11 charge eBPF maps to.
    #[serde(rename = "CAP_SYS_RESOURCE")]
    CapSysResource,
    /// The kernel's own BTF at /sys/kernel/btf/vmlinux.
    #[serde(rename = "BTF")]
    Btf,
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CapBpf => "CAP_BPF",
            Self::CapPerfmon => "CAP_PERFMON",
            Self::CapNetRaw => "CAP_NET_RAW",
            Self::CapNetAdmin => "CAP_NET_ADMIN",
            Self::CapSysAdmin => "CAP_SYS_ADMIN",
            Self::CapSysResource => "CAP_SYS_RESOURCE",
            Self::Btf => "BTF",
        })
    }
}

fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

/// Whether this process may read the kernel's netfilter state (iptables rules, conntrack,
/// nftables): every nfnetlink message and x_tables' getsockopt need CAP_NET_ADMIN.
pub fn net_admin() -> bool {
    has(Capability::CAP_NET_ADMIN)
}

/// What the eBPF capture lacks here: tracing programs (tp_btf) need CAP_BPF and CAP_PERFMON
/// (CAP_SYS_ADMIN implies both), and the kernel's BTF. Empty when capture can load.
pub fn capture_missing() -> Vec<Requirement> {
    let mut missing = Vec::new();
    if !has(Capability::CAP_SYS_ADMIN) {
        if !has(Capability::CAP_BPF) {
            missing.push(Requirement::CapBpf);
        }
        if !has(Capability::CAP_PERFMON) {
            missing.push(Requirement::CapPerfmon);
        }
    }
    if !btf_present(std::path::Path::new(VMLINUX_BTF)) {
        missing.push(Requirement::Btf);
    }
    missing
}

/// The soft RLIMIT_MEMLOCK in bytes when it is finite and this process cannot raise it (no
/// CAP_SYS_RESOURCE). Kernels before 5.11 charge eBPF maps to it (5.11 moved the charge to the
/// memory cgroup, kernel/bpf/syscall.c), so capture's maps do not fit a container's default.
pub fn memlock_limited() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    (!has(Capability::CAP_SYS_RESOURCE)).then_some(lim.rlim_cur)
}

/// Whether the file starts like BTF (magic 0xeB9F, either byte order). A kernel without
/// CONFIG_DEBUG_INFO_BTF has no file; a container may have an empty or unreadable one.
fn btf_present(path: &std::path::Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 2];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && (magic == [0x9f, 0xeb] || magic == [0xeb, 0x9f])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_names_are_the_capability_names() {
        assert_eq!(serde_json::to_value(Requirement::CapBpf).unwrap(), "CAP_BPF");
        assert_eq!(Requirement::CapPerfmon.to_string(), "CAP_PERFMON");
        assert_eq!(Requirement::Btf.to_string(), "BTF");
    }

    #[test]
    fn btf_is_recognised_by_its_magic() {
        let dir = std::env::temp_dir().join(format!("netcheck-btf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (real, empty, other) = (dir.join("btf"), dir.join("empty"), dir.join("other"));
        std::fs::write(&real, [0x9f, 0xeb, 1, 0]).unwrap();
        std::fs::write(&empty, []).unwrap();
        std::fs::write(&other, b"ELF").unwrap();
        assert!(btf_present(&real));
        assert!(!btf_present(&empty));
        assert!(!btf_present(&other));
        assert!(!btf_present(&dir.join("missing")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
