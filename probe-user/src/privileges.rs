//! What this process may do, checked up front so netcheck can say exactly what it lacked.

use caps::{CapSet, Capability};
use serde::Serialize;

use crate::capture::btf::VMLINUX_BTF;

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
            Self::Btf => "BTF",
        })
    }
}

fn has(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
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
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        missing.push(Requirement::Btf);
    }
    missing
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
}
