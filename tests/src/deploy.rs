//! What deploy/ grants the agent, read from the manifests themselves, so tests run netcheck with
//! exactly that and nothing more.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The deploy/ folder of this checkout.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a YAML file under deploy/.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capabilities the DaemonSet adds, as setpriv names them ("bpf", "perfmon", ...), plus
/// those an overlay's patches add (`kernel-5.10`).
pub fn capabilities(overlay: Option<&str>) -> Vec<String> {
    let ds = documents(&dir().join("base/daemonset.yaml")).remove(0);
    let mut caps: Vec<String> =
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array()
            .expect("the DaemonSet adds capabilities")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_ascii_lowercase))
            .collect();
    if let Some(o) = overlay {
        let k = documents(&dir().join(o).join("kustomization.yaml")).remove(0);
        for patch in k["patches"].as_array().into_iter().flatten() {
            let ops: Vec<Value> = serde_saphyr::from_str(patch["patch"].as_str().unwrap_or("[]")).expect("patch ops");
            for op in ops {
                if op["op"] == "add" && op["path"].as_str().is_some_and(|p| p.ends_with("/capabilities/add/-")) {
                    caps.push(op["value"].as_str().expect("a capability").to_ascii_lowercase());
                }
            }
        }
    }
    caps
}

/// `-all,+bpf,+perfmon,...`: setpriv's bounding set for those capabilities.
pub fn bounding_set(overlay: Option<&str>) -> String {
    let caps: Vec<String> = capabilities(overlay).iter().map(|c| format!("+{c}")).collect();
    format!("-all,{}", caps.join(","))
}

/// Linux's capability numbers (include/uapi/linux/capability.h), by setpriv's names.
const CAPABILITIES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The capability set as /proc/PID/status shows it (`CapBnd:` and the like): one bit per
/// capability the DaemonSet (and `overlay`) adds.
pub fn mask(overlay: Option<&str>) -> u64 {
    capabilities(overlay)
        .iter()
        .map(|c| {
            let n = CAPABILITIES.iter().position(|k| k == c).unwrap_or_else(|| panic!("unknown capability {c}"));
            1u64 << n
        })
        .fold(0, |m, bit| m | bit)
}

/// The names of the capabilities in a /proc/PID/status mask, in number order.
pub fn names(mask: u64) -> Vec<&'static str> {
    CAPABILITIES.iter().enumerate().filter(|(n, _)| mask & (1 << n) != 0).map(|(_, c)| *c).collect()
}

/// A `Cap*:` field of /proc/PID/status (`CapBnd`, `CapEff`, ...) as a mask.
pub fn status_mask(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    u64::from_str_radix(line.trim(), 16).ok()
}
