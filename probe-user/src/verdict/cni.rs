//! The CNI verdict of `netcheck node`: the configuration the runtime would use, its plugins'
//! binaries, flannel's subnet.env and the bridge's address, each failure in the words the
//! kubelet, containerd or the plugin print for it.

use std::{fmt::Write as _, path::Path};

use super::{Cause, Check, Probe, Verdict};
use crate::discovery::{
    cni::{CniError, Found},
    flannel::{SUBNET_ENV, SubnetEnv},
    netlink::Link,
};

pub fn verdict(found: &Found, subnet_env: Option<&SubnetEnv>, root: &Path, links: &[Link]) -> Check {
    let fail = |detail: String| Verdict::fail(Cause::CniMisconfigured, detail);
    let (target, verdict) = match &found.config {
        Err(CniError::NoConfig) => {
            let dirs: Vec<String> = found.dirs.iter().map(|d| d.display().to_string()).collect();
            let detail = format!(
                "no CNI configuration in {}: the kubelet reports the node NotReady (\"network plugin is not ready: cni \
                 config uninitialized\") and no pod gets a network",
                dirs.join(" or ")
            );
            ("node".to_string(), fail(detail))
        }
        Err(e) => ("node".to_string(), fail(format!("{e}: the runtime cannot set up pod networks"))),
        Ok(config) => {
            let target = config.file.display().to_string();
            let kinds: Vec<&str> = config.plugins.iter().map(|p| p.kind.as_str()).collect();
            let verdict = if let Some(kind) = found.missing_binaries.first() {
                // The runtime's configured folders, as libcni's FindInPath lists them; without a
                // runtime configuration, the usual folders that exist (or the first of them).
                let shown = if found.source.is_some() {
                    &found.looked_in[..]
                } else if found.bin_dirs.is_empty() {
                    &found.looked_in[..1.min(found.looked_in.len())]
                } else {
                    &found.bin_dirs[..]
                };
                let dirs: Vec<String> = shown.iter().map(|d| d.display().to_string()).collect();
                let mut d = format!(
                    "failed to find plugin \"{kind}\" in path [{}]: every pod sandbox on this node fails to start",
                    dirs.join(" ")
                );
                if let Some(source) = &found.source {
                    let _ = write!(d, " (plugin folders from {source})");
                }
                fail(d)
            } else {
                let flannel = kinds.contains(&"flannel");
                match (flannel, subnet_env) {
                    (true, None) => fail(format!(
                        "the flannel plugin needs {}, which is missing (\"loadFlannelSubnetEnv failed: open \
                         /{SUBNET_ENV}: no such file or directory\"): flanneld is not running or has not started \
                         on this node",
                        root.join(SUBNET_ENV).display()
                    )),
                    _ => bridge_verdict(config, subnet_env, links).unwrap_or_else(|| {
                        let mut d = format!("network {:?}: {}", config.name, kinds.join(" -> "));
                        if let Some(s) = subnet_env.and_then(|e| e.subnet.as_deref()) {
                            let _ = write!(d, "; pod subnet {s}");
                        }
                        Verdict::pass(d)
                    }),
                }
            };
            (target, verdict)
        }
    };
    let mut verdict = verdict;
    if let Some(problem) = &found.runtime_problem {
        // A runtime whose configuration does not parse does not start; but the file may be an
        // unused runtime's, so a warning, not a failure.
        if verdict.status == super::Status::Pass {
            verdict = Verdict::new(super::Status::Warn, Some(Cause::CniMisconfigured), verdict.detail);
        }
        let _ = write!(
            verdict.detail,
            "; the container runtime's configuration was not used ({problem}): looked in the usual folders"
        );
    }
    Check::file(Probe::Cni, target, verdict)
}

/// The bridge plugin refuses a bridge that already has another address than the gateway of
/// the node's pod subnet (after a node's subnet changed): the classic "cni0 already has an IP
/// address different from ..." error.
fn bridge_verdict(
    config: &crate::discovery::cni::Config,
    subnet_env: Option<&SubnetEnv>,
    links: &[Link],
) -> Option<Verdict> {
    let subnet = subnet_env?.subnet.as_deref()?;
    let (ip, prefix) = subnet.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let device = config.plugins.iter().find_map(crate::discovery::cni::Plugin::bridge_device)?;
    let bridge = links.iter().find(|l| l.name == device)?;
    if bridge.addresses.is_empty() || bridge.addresses.contains(&(ip, prefix)) {
        return None;
    }
    let has: Vec<String> = bridge.addresses.iter().map(|(a, p)| format!("{a}/{p}")).collect();
    Some(Verdict::fail(
        Cause::CniMisconfigured,
        format!(
            "failed to set bridge addr: \"{device}\" already has an IP address different from {subnet} (it has {}): \
             new pods on this node fail to start; the bridge is left from an earlier pod subnet",
            has.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::cni::{Config, Plugin};
    use crate::verdict::Status;

    fn found(config: Result<Config, CniError>, missing: &[&str]) -> Found {
        Found {
            dirs: vec!["/r/etc/cni/net.d".into()],
            config,
            missing_binaries: missing.iter().map(ToString::to_string).collect(),
            bin_dirs: vec!["/r/opt/cni/bin".into()],
            looked_in: vec!["/r/opt/cni/bin".into()],
            source: None,
            runtime_problem: None,
        }
    }

    fn flannel() -> Config {
        Config {
            file: "/r/etc/cni/net.d/10-flannel.conflist".into(),
            name: "cbr0".into(),
            cni_version: None,
            plugins: vec![
                Plugin { kind: "flannel".into(), bridge: None },
                Plugin { kind: "portmap".into(), bridge: None },
            ],
        }
    }

    fn env() -> SubnetEnv {
        SubnetEnv { subnet: Some("10.244.1.1/24".into()), ..SubnetEnv::default() }
    }

    fn cni0(addr: [u8; 4]) -> Link {
        Link { name: "cni0".into(), addresses: vec![(addr.into(), 24)], ..Link::default() }
    }

    #[test]
    fn healthy_flannel_passes() {
        let c = verdict(&found(Ok(flannel()), &[]), Some(&env()), Path::new("/r"), &[cni0([10, 244, 1, 1])]);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(c.detail, "network \"cbr0\": flannel -> portmap; pod subnet 10.244.1.1/24");
    }

    #[test]
    fn each_failure_in_the_runtime_s_words() {
        let root = Path::new("/r");
        let none = verdict(&found(Err(CniError::NoConfig), &[]), None, root, &[]);
        assert_eq!(none.cause, Some(Cause::CniMisconfigured));
        assert!(none.detail.contains("cni config uninitialized"), "{}", none.detail);
        let binary = verdict(&found(Ok(flannel()), &["flannel"]), Some(&env()), root, &[]);
        assert!(
            binary.detail.starts_with("failed to find plugin \"flannel\" in path [/r/opt/cni/bin]"),
            "{}",
            binary.detail
        );
        let no_env = verdict(&found(Ok(flannel()), &[]), None, root, &[]);
        assert!(no_env.detail.contains("loadFlannelSubnetEnv failed"), "{}", no_env.detail);
        let bridge = verdict(&found(Ok(flannel()), &[]), Some(&env()), root, &[cni0([10, 244, 7, 1])]);
        assert!(
            bridge.detail.starts_with(
                "failed to set bridge addr: \"cni0\" already has an IP address different from 10.244.1.1/24"
            ),
            "{}",
            bridge.detail
        );
        // No bridge yet (no pod started on the node): nothing to judge.
        assert_eq!(verdict(&found(Ok(flannel()), &[]), Some(&env()), root, &[]).status, Status::Pass);
    }

    #[test]
    fn the_runtime_s_folders_and_its_unusable_configuration() {
        let root = Path::new("/r");
        // The runtime's configured folders, every one, and where they came from.
        let mut gke = found(Ok(flannel()), &["flannel"]);
        gke.looked_in = vec!["/r/home/kubernetes/bin".into(), "/r/opt/cni/bin".into()];
        gke.source = Some("containerd's /r/etc/containerd/config.toml".into());
        assert_eq!(
            verdict(&gke, Some(&env()), root, &[]).detail,
            "failed to find plugin \"flannel\" in path [/r/home/kubernetes/bin /r/opt/cni/bin]: every pod sandbox on \
             this node fails to start (plugin folders from containerd's /r/etc/containerd/config.toml)"
        );
        // A configuration that does not parse: a warning on a setup that otherwise passes.
        let mut broken = found(Ok(flannel()), &[]);
        broken.runtime_problem = Some("/r/etc/containerd/config.toml:2:8: not valid TOML: x".into());
        let c = verdict(&broken, Some(&env()), root, &[cni0([10, 244, 1, 1])]);
        assert_eq!((c.status, c.cause), (Status::Warn, Some(Cause::CniMisconfigured)), "{c:?}");
        assert!(c.detail.ends_with("not valid TOML: x): looked in the usual folders"), "{}", c.detail);
    }
}
