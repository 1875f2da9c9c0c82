//! `cargo xtask kernels`: the lab's capture tests on the kernels nodes run, not only the host's.
//!
//! Debian's own kernels (5.10 bullseye, 6.1 bookworm, 6.12 trixie) boot under
//! `qemu-system-x86_64 -accel tcg -cpu max` (no KVM: nested KVM hangs on these machines) with
//! the host's root shared read-only over 9p, so the guest runs this checkout's own test binaries
//! and the host's iproute2, iptables and dnsmasq as they are, on its own kernel and modules.
//! Each guest runs the lab tests whose verdicts stand on the kernel's evidence (`tests/tests/`
//! `tcp.rs`, `capture.rs`, `path.rs`, `vxlan.rs`), those that need IP_VS, which the host's kernel
//! lacks (`ipvs.rs`), and the capture benchmark, then this prints,
//! per kernel, the programs chosen, the load time and the cost per event, and a table of what
//! capture gives. Then the two-kernel lab (`pair.rs`): two guests, two kernels, one link.

mod fetch;
mod pair;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use self::fetch::{Kernel, Series};
use crate::{root, sh};

/// The matrix: the kernels most nodes run (5.10: Amazon Linux 2, Debian 11; 6.1: Debian 12,
/// AL2023, COS, Bottlerocket; 6.12: Debian 13).
const MATRIX: &[Series] = &[
    Series { version: "5.10", suites: &["bullseye", "bullseye-security"] },
    Series { version: "6.1", suites: &["bookworm", "bookworm-security"] },
    Series { version: "6.12", suites: &["trixie", "trixie-security"] },
];

/// Modules the lab needs in the guest (the kernel asks for the rest, e.g. iptables' targets).
const GUEST_MODULES: &[&str] = &[
    "veth",
    "bridge",
    "vxlan",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "xt_tcpudp",
    "xt_comment",
    "xt_conntrack",
    "xt_addrtype",
    "xt_MASQUERADE",
    "iptable_filter",
    "iptable_nat",
    "nf_conntrack_netlink",
    // kube-proxy's IPVS mode (tests/tests/ipvs.rs): the host's kernel has no IP_VS.
    "ip_vs",
    "ip_vs_rr",
    "dummy",
    "xt_set",
    "ip_set_hash_ipport",
    "ip_set_bitmap_port",
];

/// Test binaries run in each guest (`ipvs` is built only here, with the tests' `guest` feature).
const TESTS: &[&str] = &["tcp", "capture", "path", "vxlan", "ipvs"];

/// How long one guest may take, boot to power-off (about 6 minutes under TCG here). The guests
/// run one after another: two at once (2 vCPUs each on the host's 2 cores) made each guest's
/// tests three times slower (tests/tcp.rs on 6.12: 384 s beside the 5.10 guest, 126 s alone on
/// 6.1), more than running them in turn.
const GUEST_DEADLINE: Duration = Duration::from_mins(20);

/// Emulation is this much slower than the host: latency bounds in tests scale by it.
const TIME_SCALE: u32 = 5;

/// What `--only` may name besides the matrix's series: the two-kernel lab.
const PAIR: &str = "pair";

/// Runs the matrix and the two-kernel lab, or only those in `only` (`5.10`, `6.1`, `6.12`,
/// `pair`); in each guest every test binary, or only those in `tests`.
pub fn run(only: &[String], tests: &[String]) -> Result<()> {
    if let Some(t) = tests.iter().find(|t| !TESTS.contains(&t.as_str())) {
        bail!("--test {t:?}: the guests run {TESTS:?}");
    }
    let known = |o: &str| o == PAIR || MATRIX.iter().any(|s| s.version == o);
    let unknown: Vec<&String> = only.iter().filter(|o| !known(o)).collect();
    if !unknown.is_empty() {
        let mut names: Vec<&str> = MATRIX.iter().map(|s| s.version).collect();
        names.push(PAIR);
        bail!("--only {unknown:?}: the matrix has {names:?}");
    }
    let selected = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let dir = root().join("target/kernels");
    std::fs::create_dir_all(&dir)?;
    let mut binaries = build()?;
    if !tests.is_empty() {
        binaries.tests.retain(|(name, _)| tests.contains(name));
    }
    let init = include_str!("init.sh");
    let mut results = Vec::new();
    let mut failed = Vec::new();
    let mut prepared = BTreeMap::new();
    for series in MATRIX
        .iter()
        .filter(|s| selected(s.version) || (selected(PAIR) && [pair::LOCAL, pair::PEER].contains(&s.version)))
    {
        prepared.insert(series.version, fetch::prepare(&dir, *series, init)?);
    }
    for series in MATRIX.iter().filter(|s| selected(s.version)) {
        let kernel = &prepared[series.version];
        println!("==> kernel {} ({})", kernel.release, series.suites[0]);
        let started = Instant::now();
        let result = boot(&dir, kernel, &binaries)?;
        println!("{}", result.summary(started.elapsed()));
        if !result.ok() {
            failed.push(kernel.release.clone());
        }
        results.push(result);
    }
    if !results.is_empty() {
        println!("\nWhat capture gives, per kernel (docs/kernels.md's table):\n\n{}", table(&results));
    }
    if selected(PAIR) {
        let kernels = [&prepared[pair::LOCAL], &prepared[pair::PEER]];
        println!("==> the two-kernel lab: n1 on {}, n2 on {}", kernels[0].release, kernels[1].release);
        let started = Instant::now();
        let result = pair::run(&dir, kernels, &binaries)?;
        println!("{}", result.summary(started.elapsed()));
        if !result.ok() {
            failed.push(PAIR.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("kernels failed: {} (logs under {})", failed.join(", "), dir.join("run").display());
    }
    Ok(())
}

/// The netcheck binary, the test binaries and the capture benchmark, as the guests run them.
struct Binaries {
    netcheck: PathBuf,
    tests: Vec<(String, PathBuf)>,
    bench: PathBuf,
    /// The two-kernel lab's program (`tests/src/bin/two-kernels.rs`).
    two_kernels: PathBuf,
}

fn build() -> Result<Binaries> {
    // The image's static binary (CI built it in the image step): what nodes run, and under TCG
    // its capture loads in a fraction of the debug build's time.
    let target = crate::image::TARGET;
    sh(Command::new("cargo").args(["build", "--release", "-p", "probe-user", "--target", target]).current_dir(root()))?;
    let mut args = vec!["test", "-p", "netcheck-tests", "--features", "guest", "--no-run", "--message-format=json"];
    for t in TESTS {
        args.extend(["--test", t]);
    }
    let tests = executables(&args, "test")?;
    let names: Vec<&str> = tests.iter().map(|(n, _)| n.as_str()).collect();
    if names.len() != TESTS.len() || !TESTS.iter().all(|t| names.contains(t)) {
        bail!("the guests' test binaries are {TESTS:?}, cargo built {names:?}");
    }
    // For the image's static target, as the image step built the dependencies (a build for the
    // host's target cost a second optimized build of every crate: 5 minutes of CI).
    let mut bench_args = crate::bench_args("capture", &[]);
    bench_args.extend(["--no-run", "--message-format=json"]);
    let bench = executables(&bench_args, "bench")?;
    let two_kernels =
        executables(&["build", "-p", "netcheck-tests", "--bin", "two-kernels", "--message-format=json"], "bin")?;
    Ok(Binaries {
        netcheck: root().join("target").join(target).join("release/netcheck"),
        tests,
        bench: bench.into_iter().next().context("the capture benchmark's executable")?.1,
        two_kernels: two_kernels.into_iter().next().context("the two-kernel lab's executable")?.1,
    })
}

/// `(target name, executable)` of the targets of `kind` (`test`, `bench`, `bin`) that a
/// `cargo ... --message-format=json` built (a test or bench build also builds the package's
/// binaries, for `CARGO_BIN_EXE_*`: those are not the tests).
fn executables(args: &[&str], kind: &str) -> Result<Vec<(String, PathBuf)>> {
    let out = Command::new("cargo").args(args).current_dir(root()).stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let of_kind = v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == kind));
        if !of_kind {
            continue;
        }
        if let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str()) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

/// What one guest did.
struct GuestResult {
    release: String,
    finished: bool,
    /// Per test binary: (passed, failed, names of the failures).
    tests: BTreeMap<String, (usize, usize, Vec<String>)>,
    /// Per test binary: whether it exited 0 (a crash after some `ok` lines has no FAILED line).
    exited_ok: BTreeMap<String, bool>,
    /// `netcheck -o json check tcp 127.0.0.1:9`'s capture status in the guest.
    status: Value,
    /// The capture benchmark's figures.
    bench: Value,
    bench_ok: bool,
    out: PathBuf,
}

fn boot(dir: &Path, kernel: &Kernel, bin: &Binaries) -> Result<GuestResult> {
    let out = dir.join("run").join(&kernel.release);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("modules"), GUEST_MODULES.join("\n"))?;
    std::fs::write(out.join("run.sh"), script(&out, bin))?;
    let mut child = qemu(kernel, &out, &Guest { cpus: 2, memory_mib: 2048, ..Guest::default() })?;
    if !wait(&mut child, GUEST_DEADLINE)? {
        println!("kernels: {} did not power off within {GUEST_DEADLINE:?}", kernel.release);
    }
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let mut tests = BTreeMap::new();
    let mut exited_ok = BTreeMap::new();
    for (name, _) in &bin.tests {
        tests.insert(name.clone(), libtest_results(&read(&format!("{name}.log"))));
        exited_ok.insert(name.clone(), read(&format!("{name}.rc")).trim() == "0");
    }
    Ok(GuestResult {
        release: kernel.release.clone(),
        finished: out.join("finished").exists(),
        tests,
        exited_ok,
        status: serde_json::from_str::<Value>(&read("status.json")).map_or(Value::Null, |v| v["capture"].clone()),
        bench: serde_json::from_str(&read("bench.json")).unwrap_or(Value::Null),
        bench_ok: read("bench.rc").trim() == "0",
        out,
    })
}

/// How a guest is booted beyond its kernel and run folder.
#[derive(Default)]
struct Guest {
    cpus: u8,
    memory_mib: u32,
    /// The script in the run folder the guest runs (`run.sh` when empty).
    script: &'static str,
    /// The console's file in the run folder (`console.log` when empty).
    console: &'static str,
    /// QEMU arguments for a network card (the two-kernel lab's link).
    nic: Vec<String>,
}

/// `qemu-system-x86_64` booting `kernel` with the host's root over 9p (read-only) and `out`
/// (read-write), its console to a file in `out`.
fn qemu(kernel: &Kernel, out: &Path, guest: &Guest) -> Result<std::process::Child> {
    let console = if guest.console.is_empty() { "console.log" } else { guest.console };
    let console = std::fs::File::create(out.join(console))?;
    let script = if guest.script.is_empty() { "run.sh" } else { guest.script };
    Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-nographic", "-no-reboot"])
        .args(["-m", &guest.memory_mib.to_string(), "-smp", &guest.cpus.to_string()])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&kernel.initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 rdinit=/init netcheck.out={} netcheck.kroot={} netcheck.run={script}",
            out.display(),
            kernel.root.display()
        ))
        .args(["-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap"])
        .arg("-virtfs")
        .arg(format!("local,path={},mount_tag=out,security_model=none", out.display()))
        .args(&guest.nic)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("qemu-system-x86_64 (apt: qemu-system-x86)")
}

/// Waits for a guest to power off, at most `deadline` (then kills it): whether it did.
fn wait(child: &mut std::process::Child, deadline: Duration) -> Result<bool> {
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The guest's script: the capture status, each test binary, the benchmark; results beside it.
fn script(out: &Path, bin: &Binaries) -> String {
    let o = out.display();
    let mut s = String::from(
        "#!/bin/bash\n# Written by `cargo xtask kernels`; runs in the guest, chrooted into the host's root.\n",
    );
    let _ = writeln!(s, "cd {}", root().display());
    let _ = writeln!(s, "export NETLAB_TIME_SCALE={TIME_SCALE} NETCHECK_BIN={}", bin.netcheck.display());
    // The loader's debug log: each form's verifier log where the kernel refused it.
    let _ = writeln!(
        s,
        "NETCHECK_LOG=netcheck::capture=debug \"$NETCHECK_BIN\" -o json check tcp 127.0.0.1:9 > {o}/status.json 2> {o}/status.err"
    );
    for (name, exe) in &bin.tests {
        // Three at once: the tests mostly wait on their probes' deadlines.
        let _ = writeln!(s, "{} --test-threads=3 > {o}/{name}.log 2>&1; echo $? > {o}/{name}.rc", exe.display());
    }
    let _ = writeln!(
        s,
        "{} --quick --json {o}/bench.json > {o}/bench.log 2>&1; echo $? > {o}/bench.rc",
        bin.bench.display()
    );
    let _ = writeln!(s, "touch {o}/finished");
    s
}

/// `test NAME ... ok|FAILED` lines of a libtest run.
fn libtest_results(log: &str) -> (usize, usize, Vec<String>) {
    let (mut pass, mut fail, mut names) = (0, 0, Vec::new());
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("test ") else { continue };
        if let Some(name) = rest.strip_suffix(" ... ok") {
            let _ = name;
            pass += 1;
        } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
            fail += 1;
            names.push(name.to_string());
        }
    }
    (pass, fail, names)
}

impl GuestResult {
    fn ok(&self) -> bool {
        self.finished
            && self.bench_ok
            && self.tests.values().all(|(p, f, _)| *p > 0 && *f == 0)
            && self.exited_ok.values().all(|ok| *ok)
    }

    fn hook(&self, tracepoint: &str) -> Option<&Value> {
        self.status["hooks"].as_array()?.iter().find(|h| h["tracepoint"] == tracepoint)
    }

    fn summary(&self, took: Duration) -> String {
        let mut s = format!("kernel {}: {} in {:.0?}\n", self.release, if self.ok() { "ok" } else { "FAILED" }, took);
        if !self.finished {
            let _ = writeln!(s, "  the guest did not finish: see {}", self.out.join("console.log").display());
        }
        let _ = writeln!(s, "  hooks:");
        for h in self.status["hooks"].as_array().into_iter().flatten() {
            let tp = h["tracepoint"].as_str().unwrap_or("?");
            let proto = h["prototype"].as_str().unwrap_or("");
            match (h["attached"].as_bool(), h["program"].as_str()) {
                (Some(true), Some(p)) => {
                    let form = h["form"].as_str().unwrap_or("?");
                    let _ = writeln!(s, "    {tp}{proto} -> program {p}, form {form}");
                }
                _ => {
                    let _ = writeln!(s, "    {tp}: not attached: {}", h["note"].as_str().unwrap_or("?"));
                }
            }
        }
        let load = self.status["load_ms"].as_u64().map_or_else(|| "?".into(), |ms| format!("{ms} ms"));
        let _ = writeln!(s, "  capture load (static release build, TCG): {load}");
        for (mode, key) in [("one-shot", "programs"), ("agent", "agent_programs"), ("stream", "stream_programs")] {
            for p in self.bench[key].as_array().into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "  {}: {} ns/event over {} runs ({mode} mode; bpf_stats, under a drop flood; TCG)",
                    p["name"].as_str().unwrap_or("?"),
                    p["ns_per_event"].as_u64().unwrap_or(0),
                    p["runs"].as_u64().unwrap_or(0)
                );
            }
        }
        if !self.bench_ok {
            let _ = writeln!(s, "  benchmark FAILED: see {}", self.out.join("bench.log").display());
        }
        for name in self.exited_ok.iter().filter(|(_, ok)| !**ok).map(|(n, _)| n) {
            let log = self.out.join(format!("{name}.log"));
            let _ = writeln!(s, "  tests/{name}.rs did not exit 0: see {}", log.display());
        }
        for (name, (pass, fail, names)) in &self.tests {
            let _ = writeln!(
                s,
                "  tests/{name}.rs: {pass} passed, {fail} failed{}",
                if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) }
            );
        }
        for l in self.status["limits"].as_array().into_iter().flatten() {
            let _ =
                writeln!(s, "  limit {}: {}", l["feature"].as_str().unwrap_or("?"), l["detail"].as_str().unwrap_or(""));
        }
        s
    }
}

/// docs/kernels.md's table: what capture gives on each kernel, from the guests' own reports.
fn table(results: &[GuestResult]) -> String {
    let mut s = String::from(
        "| kernel | drop reasons | RST reasons | ICMP errors | inner VXLAN flow | causes named from the drop's location |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in results {
        let program = |tp: &str| r.hook(tp).and_then(|h| h["program"].as_str()).unwrap_or("none");
        let drops =
            if program("kfree_skb") == "kfree_skb" { "the kernel's names" } else { "none passed (null + function)" };
        let rsts = if program("tcp_send_reset") == "tcp_send_reset" {
            "the kernel's names; no-socket RSTs traced"
        } else {
            "none passed; no-socket RSTs not traced"
        };
        let icmp =
            if r.hook("icmp_send").is_some_and(|h| h["attached"] == true) { "type and code" } else { "not traced" };
        // The inner flow of a VXLAN packet dropped on the peer: tcp.rs's and path.rs's tests of it.
        let passed = |binary: &str, test: &str| {
            r.tests.get(binary).is_some_and(|(p, _, failed)| *p > 0 && !failed.iter().any(|n| n == test))
        };
        let vxlan = if passed("tcp", "vxlan_dropped_on_peer_names_the_encapsulated_packet")
            && passed("path", "vxlan_dropped_on_the_peer_fails_the_peer_underlay")
        {
            "yes"
        } else {
            "no"
        };
        let inferred: Vec<String> = r.status["inferred"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let functions: Vec<&str> =
                    c["functions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                format!("{} ({})", c["reason"].as_str().unwrap_or("?"), functions.join(", "))
            })
            .collect();
        let inferred = if inferred.is_empty() { "none needed".to_string() } else { inferred.join(", ") };
        let _ = writeln!(s, "| {} | {drops} | {rsts} | {icmp} | {vxlan} | {inferred} |", r.release);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_are_counted() {
        let log = "running 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ok\n\nfailures:\n    b\n";
        assert_eq!(libtest_results(log), (2, 1, vec!["b".to_string()]));
    }
}
