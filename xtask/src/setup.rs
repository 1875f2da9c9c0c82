//! Installs what a fresh machine lacks; each step checks first, so a second run does nothing.
//! The recipe is the one verified in docs/toolchain.md.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::sh;

/// Debian packages: LLVM 22 for bpf-linker, and the tools the lab drives.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",            // bpf-linker 0.13 links against it (rustc's LLVM is 22)
    "iproute2",               // ip, bridge: namespaces, veth, bridges, VXLAN
    "iptables",               // fault injection (iptables-nft)
    "procps",                 // sysctl inside lab namespaces
    "util-linux",             // setpriv: the unprivileged scenario
    "dnsmasq-base",           // the lab's CoreDNS stand-ins and upstream resolver
    "iputils-ping",           // ping -M do: the MTU tests' independent check
    "iputils-tracepath",      // the MTU test shows tracepath's wrong answer
    "prometheus",             // a real Prometheus scrapes the lab's agents; promtool checks the exposition
    "musl-tools",             // the image's static netcheck (C parts of ring built with musl-gcc)
    "busybox-static",         // the image's shell and tools
    "gcc",                    // cc -static: the stand-in kubelet of tests/tests/kubelet_process.rs
    "conntrack",              // the service test runs the conntrack -D netcheck prints for a stale entry
    "nftables",               // nft: kube-proxy's nftables mode in the lab, read by netcheck
    "ipvsadm",                // kube-proxy's IPVS mode in the kernel-matrix guests (tests/tests/ipvs.rs)
    "ipset",                  // the sets that mode's iptables rules match
    "man-db",                 // man renders the generated pages (tests/tests/cli.rs)
    "libc6-dev",              // its static libc
    "openssl",                // X.509 v1 certificates for tests/tests/cert.rs (rcgen makes only v3)
    "skopeo",                 // CI inspects the image archive
    "umoci",                  // CI unpacks the image and runs netcheck from its root filesystem
    "file",                   // the image test checks the binary is static
    "qemu-system-x86",        // cargo xtask kernels boots Debian's kernels (TCG)
    "bpftrace",               // cargo xtask bench: the baseline kfree_skb one-liner
    "kmod",                   // depmod on the guest kernels' modules
    "cpio",                   // the guests' initramfs
    "xz-utils",               // guest modules ship as .ko.xz (trixie)
    "zstd",                   // or as .ko.zst
    "debian-archive-keyring", // verifies the kernels' apt sources (also on a non-Debian host)
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> Result<()> {
    apt()?;
    rust_src()?;
    musl_target()?;
    kubernetes_validate()?;
    bpf_linker()?;
    cargo_fuzz()?;
    Ok(())
}

fn cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("setup: cargo install cargo-fuzz");
    sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix_is_root() {
        bail!("missing Debian packages {missing:?}: run as root, or install them with apt-get");
    }
    println!("setup: apt-get install {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

fn rust_src() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("rustup (the machine's Rust toolchain manager) is needed")?;
    if !installed.status.success() {
        bail!("the nightly toolchain is not installed: `rustup toolchain install nightly` (the eBPF build needs it)");
    }
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: rustup component add rust-src --toolchain nightly");
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// Validates deploy/ against the Kubernetes OpenAPI schemas (offline: the schemas ship inside).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

fn kubernetes_validate() -> Result<()> {
    let installed = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    println!("setup: pip install {KUBERNETES_VALIDATE}");
    sh(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--root-user-action=ignore",
        KUBERNETES_VALIDATE,
    ]))
}

/// The standard library for the image's static build.
fn musl_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output()?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l == crate::image::TARGET) {
        return Ok(());
    }
    println!("setup: rustup target add {}", crate::image::TARGET);
    sh(Command::new("rustup").args(["target", "add", crate::image::TARGET]))
}

fn bpf_linker() -> Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    // Its default feature is llvm-23; this machine's rustc uses LLVM 22 (docs/toolchain.md).
    println!("setup: cargo install bpf-linker {BPF_LINKER_VERSION} (LLVM 22)");
    sh(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--no-default-features"])
        .args(["--features", "llvm-22"])
        .env("LLVM_PREFIX", LLVM_PREFIX))
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
