//! `node` reads the kubelet's configuration from the kubelet's own command line: a process
//! named `kubelet` whose root directory is the node root (here a stand-in kubelet chrooted
//! into a fixture root, as the real one's `/proc/PID/root` is a debug pod's `/host`). Its
//! `--config`, `--config-dir` drop-ins (by name) and legacy flags, in the kubelet's order,
//! each value with its source; the well-known paths are not used when the flags name others.
//! Every address is loopback: the DNS check asks the clusterDNS it finds.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};
use netlab::netcheck;

/// A static program that only waits (bounded: 120 s), compiled at test time so it runs in a
/// root holding nothing else.
fn stand_in_kubelet(root: &Path) -> Result<()> {
    let dir = root.join("usr/bin");
    std::fs::create_dir_all(&dir)?;
    let source = root.join("stub.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\nint main(void) { for (int i = 0; i < 120; i++) sleep(1); return 0; }\n",
    )?;
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("kubelet"))
        .arg(&source)
        .output()
        .context("cc (a static C compiler is needed to build the stand-in kubelet)")?;
    ensure!(out.status.success(), "cc -static failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(root: &Path, args: &[&str]) -> Result<Running> {
    let root_c = root.to_path_buf();
    let mut cmd = Command::new("/usr/bin/kubelet");
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: chroot and chdir are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::chroot(&root_c)?;
            nix::unistd::chdir("/")?;
            Ok(())
        });
    }
    Ok(Running(cmd.spawn().context("starting the stand-in kubelet")?))
}

/// `netcheck node` on the fixture root, as JSON.
fn node(root: &Path) -> Result<netcheck::Run> {
    let root = root.to_str().context("root path")?;
    netcheck::run(&["-o", "json", "--no-capture", "--timeout", "1s", "node", "--host-root", root])
}

#[test]
fn the_kubelets_flags_name_its_configuration() -> Result<()> {
    netlab::needs_root("the_kubelets_flags_name_its_configuration");
    let root = std::env::temp_dir().join(format!("netcheck-kubelet-process-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    stand_in_kubelet(&root)?;
    for dir in ["etc/kubelet/conf.d", "var/lib/kubelet"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    // kubeadm's path holds something else: the flags win over the well-known file.
    std::fs::write(root.join("var/lib/kubelet/config.yaml"), "clusterDNS: [127.0.0.10]\nclusterDomain: wrong.path\n")?;
    std::fs::write(
        root.join("etc/kubelet/config.yaml"),
        "clusterDNS: [127.0.0.2]\nclusterDomain: base.test\nhealthzPort: 10248\n",
    )?;
    std::fs::write(root.join("etc/kubelet/conf.d/10-a.conf"), "clusterDomain: ten.test\n")?;
    std::fs::write(root.join("etc/kubelet/conf.d/20-b.conf"), "healthzPort: 10258\n")?;
    std::fs::write(root.join("etc/kubelet/conf.d/30-not-a-drop-in.yaml"), "clusterDomain: ignored\n")?;
    let kubelet = start(
        &root,
        &[
            "--config=/etc/kubelet/config.yaml",
            "--config-dir",
            "/etc/kubelet/conf.d",
            "--cluster-dns=127.0.0.53",
            "--kubeconfig=/etc/kubelet/kubeconfig",
            "--v=2",
        ],
    )?;
    let pid = kubelet.0.id();
    // The process must have chrooted before it is looked for.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/root"))? != root {
        ensure!(std::time::Instant::now() < deadline, "the stand-in kubelet did not chroot");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let run = node(&root)?;
    let rows = run.json["checks"].as_array().context(run.stderr.clone())?;
    let row = rows.iter().find(|c| c["probe"] == "kubelet-config").context(run.stdout.clone())?;
    assert_eq!(row["target"], format!("kubelet pid {pid}"), "{row}");
    assert_eq!(row["status"], "pass", "{row}");
    assert_eq!(
        row["detail"],
        format!(
            "clusterDNS=127.0.0.53 (flag of kubelet pid {pid}); \
             clusterDomain=ten.test (/etc/kubelet/conf.d/10-a.conf (drop-in, --config-dir of kubelet pid {pid})); \
             healthzPort=10258 (/etc/kubelet/conf.d/20-b.conf (drop-in, --config-dir of kubelet pid {pid})); \
             kubeconfig=/etc/kubelet/kubeconfig (--kubeconfig of kubelet pid {pid})"
        )
    );
    // The DNS check asks the flag's server, not kubeadm's file's.
    let dns = rows.iter().find(|c| c["probe"] == "dns").context(run.stdout.clone())?;
    assert!(dns.to_string().contains("127.0.0.53"), "{dns}");
    drop(kubelet);

    // Without the process, kubeadm's path stands in (and says so).
    let run = node(&root)?;
    let rows = run.json["checks"].as_array().context(run.stderr.clone())?;
    let row = rows.iter().find(|c| c["probe"] == "kubelet-config").context(run.stdout.clone())?;
    assert_eq!(row["target"], "kubelet configuration");
    assert_eq!(
        row["detail"],
        "clusterDNS=127.0.0.10 (/var/lib/kubelet/config.yaml, kubeadm's path); \
         clusterDomain=wrong.path (/var/lib/kubelet/config.yaml, kubeadm's path)"
    );
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
