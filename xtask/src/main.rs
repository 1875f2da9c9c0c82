//! Project tasks: `cargo xtask <setup|test|demo|lab|bench|image|kernels|fuzz>`.
//!
//! Every task that builds starts with `setup`, which installs what a fresh machine lacks
//! (idempotent: it checks before it installs), so `cargo xtask demo` and `cargo xtask test` are
//! the only two commands a new machine needs.

mod demo;
mod image;
mod kernels;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "netcheck's build, lab and release tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the lab need (apt packages, rust-src, bpf-linker).
    Setup,
    /// Set up, lint, build and run every test (unit, eBPF, lab scenarios) and a short benchmark.
    Test,
    /// Set up, build, bring up the lab and show real verdicts for each fault scenario.
    Demo {
        /// Also run every command with `-o json` under this older netcheck binary and fail when
        /// a document differs (timings, ports and namespace names aside): a refactor's check.
        #[arg(long, value_name = "NETCHECK")]
        compare_with: Option<PathBuf>,
    },
    /// The lab for manual use.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Run every fuzz target (cargo fuzz, nightly) for a while each.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Build the container image (OCI archive, no engine needed) under target/image.
    Image,
    /// Boot Debian's 5.10, 6.1 and 6.12 kernels under QEMU and run the capture lab tests in each.
    Kernels {
        /// Only these (repeatable): a series (5.10, 6.1, 6.12) or `pair`, the two-kernel lab.
        #[arg(long)]
        only: Vec<String>,
        /// Only these test binaries in each guest (repeatable: tcp, capture, path, vxlan, ipvs).
        #[arg(long = "test")]
        tests: Vec<String>,
    },
    /// Capture cost per event (kernel bpf_stats) and userspace events/s under a drop flood.
    Bench {
        /// A short run (seconds), as CI does.
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Subcommand)]
enum LabAction {
    /// Create the lab and keep it (with its servers) until Ctrl-C, then remove it.
    Up,
    /// Remove lab namespaces left by processes that are gone.
    Clean,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Checked before anything is installed or built: without root the build would take
    // minutes and most of what follows would then fail (a lab test that cannot run fails).
    let root_for = match &cli.task {
        Task::Test => Some((
            "test",
            "the lab tests build network namespaces, veths and iptables rules, capture loads eBPF programs, \
             the image test unpacks the image and runs its netcheck in a chroot, and the kernel matrix's \
             guests run the capture tests as root",
        )),
        Task::Bench { .. } => Some(("bench", "the benchmarks run on the lab (network namespaces) with eBPF capture")),
        Task::Demo { .. } => Some(("demo", "the lab is built of network namespaces and capture loads eBPF programs")),
        Task::Lab { .. } => Some(("lab", "the lab is built of network namespaces")),
        Task::Kernels { .. } => Some(("kernels", "each guest runs the lab's capture tests as root")),
        Task::Setup | Task::Fuzz { .. } | Task::Image => None,
    };
    if let Some((task, why)) = root_for {
        need_root(task, why)?;
    }
    match cli.task {
        Task::Setup => setup::run(),
        Task::Test => test(),
        Task::Demo { compare_with } => {
            setup::run()?;
            cargo(&["build", "--release", "-p", "probe-user"])?;
            demo::run(&demo::Netcheck::new(root().join("target/release/netcheck"), compare_with))
        }
        Task::Lab { action: LabAction::Up } => demo::lab_up(),
        Task::Lab { action: LabAction::Clean } => {
            for ns in netlab::clean_stale()? {
                println!("removed {ns}");
            }
            Ok(())
        }
        Task::Fuzz { seconds } => {
            setup::run()?;
            fuzz(seconds)
        }
        Task::Image => {
            setup::run()?;
            image::build(&root(), env!("CARGO_PKG_VERSION")).map(|_| ())
        }
        Task::Kernels { only, tests } => {
            setup::run()?;
            kernels::run(&only, &tests)
        }
        Task::Bench { quick } => {
            setup::run()?;
            let quick: &[&str] = if quick { &["--quick"] } else { &[] };
            cargo(&bench_args("capture", &[&["--bpftrace"], quick].concat()))?;
            // `node` and the others run the real binary: the image's static release build, as
            // users get it.
            cargo(&["build", "--release", "-p", "probe-user", "--target", image::TARGET])?;
            let bin = root().join("target").join(image::TARGET).join("release/netcheck");
            for bench in ["node", "path", "agent", "startup"] {
                cargo_with_bin(&bench_args(bench, quick), &bin)?;
            }
            Ok(())
        }
    }
}

/// `cargo bench` of one of tests/benches, built for the image's static target: the release
/// build of the dependencies is then the one the image step made (built for the host's target,
/// the benches cost a second optimized build of every crate, five minutes of CI here).
fn bench_args<'a>(bench: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["bench", "-p", "netcheck-tests", "--target", image::TARGET, "--bench", bench];
    if !args.is_empty() {
        v.push("--");
        v.extend(args);
    }
    v
}

/// Fails unless this runs as root, saying which task needs it and why.
fn need_root(task: &str, why: &str) -> Result<()> {
    if !netlab::is_root() {
        bail!(
            "`cargo xtask {task}` needs root (euid 0) and runs as euid {}: {why}. It stopped before building or \
             running anything; run it as root",
            netlab::euid()
        );
    }
    Ok(())
}

/// What `cargo xtask test` writes on a fresh clone, in GiB (measured: target/debug 7.4 with line
/// tables, release 1.4, the musl image build 0.9, the kernels' guest images 1.3, the fuzz
/// targets' sanitizer builds 6.0), with some room.
const TEST_DISK_GIB: u64 = 20;

/// Fails before building when the disk cannot hold the builds: the linker otherwise dies of a
/// bus error (SIGBUS writing its mapped output) half an hour in, saying nothing about disk. A
/// build already there is reused, so it needs less, but never under [`REBUILD_DISK_GIB`] (the
/// release, static, guest and fuzz builds may still be missing).
fn need_disk(gib: u64) -> Result<()> {
    let target = root().join("target");
    let need = disk_needed(&target, gib);
    let at = if target.exists() { target } else { root() };
    let free = check_disk(&at, need)?;
    println!("disk: {free} GiB free under {}", at.display());
    Ok(())
}

/// What a run over an earlier build needs at least, in GiB.
const REBUILD_DISK_GIB: u64 = 8;

/// An earlier build is told by the netcheck binary it left, not by `target/debug`: `cargo
/// xtask` has just built itself there, on a fresh clone too.
fn disk_needed(target: &Path, gib: u64) -> u64 {
    if target.join("debug").join("netcheck").is_file() { REBUILD_DISK_GIB.min(gib) } else { gib }
}

/// GiB free on the filesystem of `at`; an error when fewer than `gib`.
fn check_disk(at: &Path, gib: u64) -> Result<u64> {
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())?;
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statvfs {}", at.display()));
    }
    let free = st.f_bavail.saturating_mul(st.f_frsize) >> 30;
    if free < gib {
        bail!(
            "the builds of `cargo xtask test` need about {gib} GiB free; the filesystem of {} has {free} GiB. \
             Free some and run it again",
            at.display()
        );
    }
    Ok(free)
}

fn test() -> Result<()> {
    need_disk(TEST_DISK_GIB)?;
    setup::run()?;
    step("format", || {
        cargo(&["fmt", "--all", "--check"])?;
        cargo(&["fmt", "--check", "--manifest-path", "probe-user/fuzz/Cargo.toml"])
    })?;
    step("clippy (host crates)", || {
        // The guest feature adds the tests only the kernel matrix runs (tests/tests/ipvs.rs).
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--all-targets",
            "--features",
            "netcheck-tests/guest",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("clippy (eBPF crate)", || {
        cargo(&[
            "+nightly",
            "clippy",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "-p",
            "probe-ebpf",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    // The lab scenarios run the real binary, so build it before the tests.
    step("build", || cargo(&["build", "-p", "probe-user"]))?;
    // The image's own test (tests/tests/image.rs) inspects it and runs its netcheck on the lab.
    let mut archive = PathBuf::new();
    step("image", || {
        archive = image::build(&root(), env!("CARGO_PKG_VERSION"))?;
        Ok(())
    })?;
    let _ = netlab::clean_stale();
    step("tests", || {
        sh(Command::new("cargo")
            .args(["test", "--workspace", "--exclude", "probe-ebpf"])
            .env("NETCHECK_IMAGE", &archive)
            .current_dir(root()))
    })?;
    // The capture tests again, on the kernels nodes run (5.10, 6.1, 6.12) under QEMU.
    step("kernels", || kernels::run(&[], &[]))?;
    step("benchmark (quick)", || {
        cargo(&bench_args("capture", &["--quick"]))?;
        // The debug binary the tests used: no release build in CI just for this.
        let bin = root().join("target/debug/netcheck");
        for bench in ["node", "path", "startup", "agent"] {
            cargo_with_bin(&bench_args(bench, &["--quick"]), &bin)?;
        }
        Ok(())
    })?;
    step("fuzz (10 s per target)", || fuzz(10))?;
    let left: Vec<String> = netlab::list_netns()?.into_iter().filter(|n| n.starts_with("nclab")).collect();
    if !left.is_empty() {
        bail!("tests left network namespaces behind: {left:?}");
    }
    Ok(())
}

/// The parsers netcheck owns, each a cargo-fuzz target in probe-user/fuzz.
const FUZZ_TARGETS: &[&str] = &[
    "target",
    "pem",
    "http_response",
    "kubeconfig",
    "event",
    "resolv_conf",
    "dns_response",
    "subnet_env",
    "icmp",
    "cni_config",
    "runtime_config",
    "agent_query",
    "kubelet_config",
    "cert_judge",
    "peer_events",
    "kubeconfig_rebase",
    "duration",
];

fn fuzz(seconds: u32) -> Result<()> {
    let dir = root().join("probe-user/fuzz");
    // One build of every target (cargo builds the 17 binaries in parallel, the sanitized
    // dependencies once); `cargo fuzz run` per target spent minutes re-entering cargo.
    sh(Command::new("rustup").args(["run", "nightly", "cargo", "fuzz", "build", "-O"]).current_dir(&dir))?;
    let bin_dir = dir.join("target/x86_64-unknown-linux-gnu/release");
    let logs = dir.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    // Two at a time: libFuzzer runs one process on one core, the machine has two.
    for pair in FUZZ_TARGETS.chunks(2) {
        let mut running = Vec::new();
        for target in pair {
            println!("fuzz {target}: {seconds} s");
            // New inputs go to the first folder (not kept); the second holds the seeds kept in
            // the repository (a long run's corpus, minimised), so a short run starts from its
            // coverage.
            let corpus = dir.join("corpus").join(target);
            let seeds = dir.join("seeds").join(target);
            let artifacts = dir.join("artifacts").join(target);
            std::fs::create_dir_all(&corpus)?;
            std::fs::create_dir_all(&artifacts)?;
            anyhow::ensure!(seeds.is_dir(), "no seed corpus at {}", seeds.display());
            let log = logs.join(format!("{target}.log"));
            let file = std::fs::File::create(&log)?;
            let child = Command::new(bin_dir.join(target))
                .arg(&corpus)
                .arg(&seeds)
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg(format!("-max_total_time={seconds}"))
                .args(["-rss_limit_mb=2048", "-print_final_stats=1"])
                // As `cargo fuzz run` sets it for its address-sanitizer builds: the ODR check
                // reports globals duplicated across Rust's codegen units, not a bug.
                .env("ASAN_OPTIONS", std::env::var("ASAN_OPTIONS").unwrap_or_else(|_| "detect_odr_violation=0".into()))
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .with_context(|| format!("fuzz target {target} (built by cargo fuzz build)"))?;
            running.push((target, log, child));
        }
        for (target, log, mut child) in running {
            let status = child.wait()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let final_stats: Vec<&str> = text.lines().filter(|l| l.starts_with("stat::")).collect();
            println!("fuzz {target}: {status}; {}", final_stats.join(" "));
            if !status.success() {
                bail!("fuzz target {target} failed ({status}); its log, {}:\n{text}", log.display());
            }
        }
    }
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("==> {name}");
    let started = std::time::Instant::now();
    f().with_context(|| format!("step {name:?} failed"))?;
    println!("==> {name}: ok ({:.0?})", started.elapsed());
    Ok(())
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Runs cargo (through rustup when the first argument is `+toolchain`) in the workspace root.
fn cargo(args: &[&str]) -> Result<()> {
    let (program, args): (&str, Vec<&str>) = match args.first() {
        Some(tc) if tc.starts_with('+') => ("rustup", [&["run", &tc[1..], "cargo"], &args[1..]].concat()),
        _ => ("cargo", args.to_vec()),
    };
    sh(Command::new(program).args(&args).current_dir(root()))
}

/// `cargo ARGS` with `NETCHECK_BIN` set: lab tests and benches run that netcheck binary.
fn cargo_with_bin(args: &[&str], bin: &std::path::Path) -> Result<()> {
    sh(Command::new("cargo").args(args).env("NETCHECK_BIN", bin).current_dir(root()))
}

fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asking for more than any disk has stops with the figures; asking for nothing goes on; a
    /// path that does not exist is an error naming it.
    #[test]
    fn the_disk_check_says_what_it_needs() {
        let err = check_disk(&root(), u64::MAX).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("the builds of `cargo xtask test` need about {} GiB free", u64::MAX)),
            "{err}"
        );
        assert!(check_disk(&root(), 0).is_ok());
        let missing = root().join("no-such-folder");
        let err = format!("{:#}", check_disk(&missing, 0).unwrap_err());
        assert!(err.starts_with(&format!("statvfs {}: ", missing.display())), "{err}");
    }

    #[test]
    fn a_fresh_clone_is_told_by_the_missing_netcheck_binary() {
        let target = std::env::temp_dir().join(format!("xtask-disk-{}", std::process::id()));
        let debug = target.join("debug");
        std::fs::create_dir_all(debug.join("deps")).unwrap();
        // What a fresh clone has once `cargo xtask` has run: xtask's own build.
        std::fs::write(debug.join("xtask"), b"").unwrap();
        assert_eq!(disk_needed(&target, TEST_DISK_GIB), TEST_DISK_GIB);
        std::fs::write(debug.join("netcheck"), b"").unwrap();
        assert_eq!(disk_needed(&target, TEST_DISK_GIB), REBUILD_DISK_GIB);
        std::fs::remove_dir_all(&target).unwrap();
    }
}
