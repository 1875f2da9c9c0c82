//! The container image (issue 5, acceptance 8): the archive `cargo xtask image` built, inspected
//! with skopeo, unpacked with umoci, and netcheck run from its root filesystem against the lab.
//! `cargo xtask test` builds the image first and names it in `NETCHECK_IMAGE`.

use std::process::Command;

use netlab::{Lab, TempDir, needs_root};

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn image_runs_netcheck_from_its_unpacked_rootfs() {
    needs_root("image_runs_netcheck_from_its_unpacked_rootfs");
    // `cargo xtask test` names the archive it has just built; an archive found by guessing
    // could be an old one, so the test does not look for it.
    let archive = std::path::PathBuf::from(netlab::needs_env(
        "NETCHECK_IMAGE",
        &format!(
            "`cargo xtask test` builds the image and sets it; by hand, `cargo xtask image` builds \
             target/image/netcheck-{}.oci.tar, then NETCHECK_IMAGE=$PWD/target/image/netcheck-{0}.oci.tar",
            env!("CARGO_PKG_VERSION")
        ),
    ));
    assert!(archive.is_file(), "NETCHECK_IMAGE={}: no such archive (`cargo xtask image` builds it)", archive.display());
    let archive = archive.as_path();
    let source = format!("oci-archive:{}", archive.display());
    let config: serde_json::Value =
        serde_json::from_str(&output(Command::new("skopeo").args(["inspect", "--config", &source]))).unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/netcheck");
    assert_eq!(config["config"]["Cmd"][0], "node");
    let manifest: serde_json::Value =
        serde_json::from_str(&output(Command::new("skopeo").args(["inspect", "--raw", &source]))).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

    // Unpacked as a runtime would (umoci: OCI layout to runtime bundle).
    let dir = TempDir::new("image");
    let layout = dir.path.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    output(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap().to_string();
    let bundle = dir.path.join("bundle");
    output(Command::new("umoci").args(["unpack", "--image"]).arg(format!("{}:{tag}", layout.display())).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let binary = rootfs.join("usr/local/bin/netcheck");
    let file = output(Command::new("file").arg(&binary));
    assert!(file.contains("static"), "a static binary: {file}");
    // The completions and man pages the image ships, as its netcheck wrote them.
    for file in [
        "usr/share/bash-completion/completions/netcheck",
        "usr/share/zsh/vendor-completions/_netcheck",
        "usr/share/fish/vendor_completions.d/netcheck.fish",
        "usr/share/man/man1/netcheck.1",
        "usr/share/man/man1/netcheck-check-service.1",
    ] {
        let len = std::fs::metadata(rootfs.join(file)).map_or(0, |m| m.len());
        assert!(len > 100, "{file} in the image: {len} bytes");
    }
    let bash = std::fs::read_to_string(rootfs.join("usr/share/bash-completion/completions/netcheck")).unwrap();
    assert!(bash.contains("complete -F _netcheck"), "{bash}");
    // The shell `kubectl debug -it` gets, and netcheck on its PATH.
    let shell = output(Command::new("chroot").arg(&rootfs).args([
        "/bin/sh",
        "-c",
        "netcheck --version && ls /host && echo ok",
    ]));
    assert_eq!(shell, format!("netcheck {}\nok\n", env!("CARGO_PKG_VERSION")), "/host is empty in the image");

    // The image's netcheck against the lab: a pod-to-pod path with kernel evidence.
    let _ = netlab::clean_stale();
    let mut lab = Lab::new().unwrap();
    lab.start_servers().unwrap();
    let (a, b) = (lab.pod("a").clone(), lab.pod("b").clone());
    let path = || {
        let out = Command::new(&binary)
            .args(["-o", "json", "--netns", &lab.node(1).netns, "--timeout", "2s", "path", "--from", &a.netns])
            .arg(format!("{}:8080", b.ip))
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out.status.code(), report, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, report, stderr) = path();
    assert_eq!(code, Some(0), "{report}\n{stderr}");
    assert_eq!(report["capture"]["available"], true, "the static binary loads the eBPF programs: {report}");
    assert_eq!(report["checks"][0]["hops"].as_array().unwrap().len(), 10, "{report}");
    lab.drop_vxlan(2).unwrap();
    let (code, report, _) = path();
    assert_eq!(code, Some(1), "{report}");
    assert!(report["verdict"].as_str().unwrap().starts_with("peer-underlay: dropped by netfilter"), "{report}");
}
