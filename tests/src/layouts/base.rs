//! The files every node root has, kubeadm's or k3s's.

use anyhow::Result;

use super::{NodeSpec, writer::Writer};

/// The files every node has, whatever laid Kubernetes out: os-release (how netcheck tells a
/// mounted node root at `/host`), systemd-resolved's stub and real resolv.conf.
pub(super) fn base_system(w: &mut Writer, node: &NodeSpec) -> Result<()> {
    for dir in ["/etc", "/usr/lib", "/run", "/var/lib", "/opt", "/tmp"] {
        w.dir(dir, 0o755)?;
    }
    w.dir("/tmp", 0o1777)?;
    w.file(
        "/usr/lib/os-release",
        "PRETTY_NAME=\"Ubuntu 24.04.3 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n",
        0o644,
    )?;
    w.link("/etc/os-release", "../usr/lib/os-release")?;
    w.file("/etc/hostname", &format!("{}\n", node.name), 0o644)?;
    w.file(
        "/run/systemd/resolve/stub-resolv.conf",
        "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
        0o644,
    )?;
    w.file("/run/systemd/resolve/resolv.conf", &format!("nameserver {}\nsearch .\n", node.upstream), 0o644)?;
    w.link("/etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")?;
    w.file("/run/flannel/subnet.env", &node.subnet_env(), 0o644)?;
    Ok(())
}
