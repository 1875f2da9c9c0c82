//! Capture cost under a drop flood on the lab, in each of its modes.
//!
//! - kernel: each program's `bpf_stats` (run_time_ns / run_cnt) while a flood of NETFILTER_DROP
//!   drops crosses the overlay, in the three ways capture runs:
//!   - one-shot, as `check`, `node` and `path` run it: the kernel filters on the probes' own
//!     endpoints (one is watched here, as during a probe) and only counts the flood's drops;
//!   - agent: the same filter on the peers' addresses (one is watched here), as on a node that
//!     drops packets all day;
//!   - stream, as `netcheck capture` runs it: every event to the ring buffer and decoded;
//! - userspace: events/s read and decoded (stream), events submitted, filtered and lost because
//!   the ring buffer was full;
//! - the flood's own rate without capture and with each mode attached (what the machine pays);
//! - capture's start-up phases (`capture.phases`);
//! - with `--bpftrace`, bpftrace's count-by-reason one-liner on the same flood, side by side.
//!
//! The full run repeats every measurement in rounds (without capture, each mode, bpftrace, in
//! turn) and reports medians: one flood's figure moves by several percent from run to run on
//! this machine.
//!
//! `cargo xtask bench` (or `cargo bench -p netcheck-tests --bench capture [-- --quick]`); root.
//! `--json FILE` also writes the figures as JSON (`cargo xtask kernels` reads them from each
//! guest). It fails when what it measures did not happen: the flood sent nothing or ran no
//! program, a filtering mode did not filter the flood out or lost an event, or in stream mode
//! no event was submitted, one submitted was not received and decoded, or one was lost to a
//! full ring buffer (the 4 MiB ring and the reader keep up with the flood on this machine;
//! under the kernel matrix's emulation, `NETLAB_TIME_SCALE` > 1, losses are reported only).

#![expect(clippy::cast_precision_loss, reason = "rates and averages printed for people")]

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use netcheck::capture::{Capture, FlowMatcher, Options};
use netlab::{Lab, udp_flood};

/// How one capture mode runs during the flood.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    OneShot,
    Agent,
    Stream,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::OneShot => "one-shot capture",
            Self::Agent => "agent capture",
            Self::Stream => "stream capture",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let with_bpftrace = args.iter().any(|a| a == "--bpftrace");
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    netlab::needs_root("capture benchmark");
    // Its floods reach every capture on the machine, and its figures would suffer from others.
    let _machine = netlab::machine_wide("capture benchmark");
    let _ = netlab::clean_stale();
    let (count, max_time, rounds) =
        if quick { (100_000, Duration::from_secs(3), 1) } else { (1_000_000, Duration::from_secs(6), 3) };
    let lab = Lab::new()?;
    let (b, c) = (lab.pod("b").clone(), lab.pod("c").clone());
    lab.iptables(&lab.node(2).netns, &format!("-I FORWARD -d {} -p udp --dport 9999 -j DROP", b.ip))?;
    let dst = SocketAddr::new(b.ip.into(), 9999);

    let flood = |label: &str| -> anyhow::Result<f64> {
        let started = Instant::now();
        let sent = udp_flood(&c.netns, dst, count, max_time)?;
        anyhow::ensure!(sent > 0, "flood {label}: no datagram was sent");
        let secs = started.elapsed().as_secs_f64();
        let rate = sent as f64 / secs;
        println!("flood {label:<30} {sent:>9} packets in {secs:5.2} s = {rate:>9.0} packets/s");
        Ok(rate)
    };

    println!("netcheck capture benchmark ({} run, {rounds} round(s))", if quick { "quick" } else { "full" });
    let modes = [Mode::OneShot, Mode::Agent, Mode::Stream];
    let mut without = Vec::new();
    let mut runs: Vec<Vec<ModeFigures>> = modes.iter().map(|_| Vec::new()).collect();
    let mut bpftrace = Vec::new();
    for round in 1..=rounds {
        println!("\n== round {round} ==");
        without.push(flood("without capture")?);
        for (i, mode) in modes.iter().enumerate() {
            runs[i].push(capture_run(&flood, *mode, round == 1)?);
        }
        if with_bpftrace {
            bpftrace.push(bpftrace_run(&flood)?);
        }
    }

    let base = median_f(&without);
    println!("\n== medians of {rounds} round(s) ==");
    println!("flood without capture: {base:.0} packets/s");
    println!("\nkfree_skb in the kernel, same flood (ns/event; bpf_stats):");
    let mut medians = Vec::new();
    for (mode, figures) in modes.iter().zip(&runs) {
        let ns = median_u(&figures.iter().map(|f| f.kfree_skb_ns).collect::<Vec<_>>());
        let rate = median_f(&figures.iter().map(|f| f.rate).collect::<Vec<_>>());
        let all: Vec<String> = figures.iter().map(|f| f.kfree_skb_ns.to_string()).collect();
        println!(
            "  {:<26} {ns:>5}   flood at {:5.1} % of its rate without capture   (rounds: {})",
            mode.label(),
            100.0 * rate / base,
            all.join(", ")
        );
        medians.push((ns, rate));
    }
    if !bpftrace.is_empty() {
        let (ns, rate) = (
            median_u(&bpftrace.iter().map(|b| b.0).collect::<Vec<_>>()),
            median_f(&bpftrace.iter().map(|b| b.1).collect::<Vec<_>>()),
        );
        let all: Vec<String> = bpftrace.iter().map(|b| b.0.to_string()).collect();
        println!(
            "  {:<26} {ns:>5}   flood at {:5.1} % of its rate without capture   (rounds: {})",
            "bpftrace count-by-reason",
            100.0 * rate / base,
            all.join(", ")
        );
        println!("  (bpftrace: tracepoint:skb:kfree_skb {{ @[args->reason] = count(); }})");
    }
    let stream = runs[2].last().expect("one round at least");
    println!(
        "\nstream capture: {} events submitted, {} lost (ring buffer full), {} received and decoded in the last round",
        stream.submitted, stream.lost, stream.received
    );
    if let Some(path) = json_out {
        write_json(&path, &runs, &medians, base)?;
    }
    Ok(())
}

/// The figures as JSON for `cargo xtask kernels`: per mode its median ns/event and flood
/// rate and the last round's programs; the first round's start-up.
fn write_json(path: &str, runs: &[Vec<ModeFigures>], medians: &[(u64, f64)], base: f64) -> anyhow::Result<()> {
    let stream = runs[2].last().expect("one round at least");
    let first = &runs[0][0];
    let mode_json = |i: usize| {
        serde_json::json!({
            "ns_per_event": medians[i].0,
            "flood_rate": medians[i].1,
            "programs": runs[i].last().map(|f| f.figures.clone()),
        })
    };
    let v = serde_json::json!({
        "kernel": first.status.kernel,
        "load_ms": first.status.load_ms,
        "phases": first.status.phases,
        "forms": first.status.hooks.iter().map(|h| (h.tracepoint, h.form)).collect::<std::collections::BTreeMap<_, _>>(),
        "programs": runs[0].last().map(|f| f.figures.clone()),
        "agent_programs": runs[1].last().map(|f| f.figures.clone()),
        "stream_programs": runs[2].last().map(|f| f.figures.clone()),
        "one_shot": mode_json(0),
        "agent": mode_json(1),
        "stream": mode_json(2),
        "submitted": stream.submitted,
        "lost": stream.lost,
        "received": stream.received,
        "flood_rate": { "without": base, "one_shot": medians[0].1, "agent": medians[1].1, "stream": medians[2].1 },
    });
    std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

fn median_f(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_u(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// What one capture mode cost under the flood.
struct ModeFigures {
    status: netcheck::capture::Status,
    figures: Vec<serde_json::Value>,
    kfree_skb_ns: u64,
    rate: f64,
    submitted: u64,
    lost: u64,
    received: u64,
}

/// Starts capture in `mode`, floods, and reads the programs' `bpf_stats` and the counters
/// (printing the start-up phases when `verbose`). Fails when the flood ran no program, when a
/// filtering mode did not filter the flood's drops out, or when no event reached userspace in
/// stream mode.
fn capture_run(flood: &dyn Fn(&str) -> anyhow::Result<f64>, mode: Mode, verbose: bool) -> anyhow::Result<ModeFigures> {
    let filtering = mode != Mode::Stream;
    let label = mode.label();
    let capture = Capture::start(Options { watched_only: filtering, ..Options::default() })
        .map_err(|u| anyhow::anyhow!("capture unavailable: {}", u.detail))?;
    // Addresses no lab packet carries (TEST-NET-1), watched so that the filter runs its
    // lookups: an endpoint as a probe's watch holds it, or a peer's address as the agent's.
    let unrelated = IpAddr::from([192, 0, 2, 1]);
    let _watch = (mode == Mode::OneShot).then(|| capture.watch(FlowMatcher::udp(SocketAddr::new(unrelated, 40000))));
    if mode == Mode::Agent {
        capture.watch_addresses(&[unrelated]);
    }
    let status = capture.status();
    let programs: Vec<String> = status
        .hooks
        .iter()
        .filter(|h| h.attached)
        .filter_map(|h| h.program.map(|p| format!("{}:{p} ({})", h.tracepoint, h.form.map_or("?", |f| f.as_str()))))
        .collect();
    println!(
        "\n{label}: loaded in {} ms on {}: {}",
        status.load_ms.unwrap_or(0),
        status.kernel.as_deref().unwrap_or("?"),
        programs.join(", ")
    );
    if verbose {
        for p in &status.phases {
            println!("  {:>7.1} ms  {}", p.ms, p.phase);
        }
    }
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = (!filtering).then(|| {
        let rx = capture.subscribe();
        let (received, done) = (received.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    let settle = || settle(&capture, &received, label);
    // The flood's rate with bpf_stats off, as the programs run in production (the statistics
    // read the clock twice per run); then the cost per event with them on.
    let rate = flood(label)?;
    let (counters_before, received_before) = settle()?;
    let enabled = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let before = capture.program_infos();
    let started = Instant::now();
    flood(&format!("{label} (bpf_stats)"))?;
    // Events/s: until the counting thread has what was submitted (bounded), then a quiet point.
    capture.sync();
    let wait = Instant::now() + Duration::from_secs(5);
    while !filtering
        && received.load(Ordering::Relaxed) - received_before < capture.counters().sent - counters_before.sent
        && Instant::now() < wait
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (counters_after, received_after) = settle()?;
    let after = capture.program_infos();
    drop(enabled);
    done.store(true, Ordering::Relaxed);
    if let Some(c) = counter {
        c.join().expect("counter thread");
    }
    let figures = kernel_figures(&before, &after);
    let submitted = counters_after.sent - counters_before.sent;
    let lost = counters_after.lost - counters_before.lost;
    let filtered = counters_after.filtered - counters_before.filtered;
    let got = received_after - received_before;
    let kfree = figures.iter().find(|f| f["name"].as_str().is_some_and(|n| n.starts_with("kfree_skb")));
    let kfree_skb_ns = kfree.and_then(|f| f["ns_per_event"].as_u64()).unwrap_or(0);
    let runs = kfree.and_then(|f| f["runs"].as_u64()).unwrap_or(0);
    println!("userspace:");
    println!("  events submitted by the kernel {submitted:>9}");
    println!("  events lost (ring buffer full) {lost:>9}");
    if filtering {
        println!("  events filtered in the kernel  {filtered:>9}  (counted, not queued)");
        // What this measures did not happen: no drop ran the program, or the flood's drops were
        // not filtered out.
        anyhow::ensure!(
            runs > 0 && filtered >= runs / 2,
            "{label}: the flood ran kfree_skb {runs} times, {filtered} filtered"
        );
        // What the filter lets through (nothing of the flood) has all the ring to itself.
        anyhow::ensure!(lost == 0, "{label}: {lost} events lost with the flood filtered out");
    } else {
        println!("  events received                {got:>9}  = {:.0} events/s", got as f64 / elapsed);
        anyhow::ensure!(
            runs > 0 && submitted > 0,
            "{label}: the flood produced no drop events (kfree_skb ran {runs} times, submitted {submitted})"
        );
        anyhow::ensure!(got == submitted, "{label}: {submitted} events submitted, {got} received and decoded");
        if netlab::time_scale() == 1 {
            anyhow::ensure!(lost == 0, "{label}: {lost} events lost (ring buffer full) of {}", submitted + lost);
        } else if lost > 0 {
            println!("  (emulated, NETLAB_TIME_SCALE {}: losses are reported, not judged)", netlab::time_scale());
        }
    }
    Ok(ModeFigures { status, figures, kfree_skb_ns, rate, submitted, lost, received: got })
}

/// A quiet point of `capture`: the reader has drained the ring (into the subscriber's channel)
/// and the counting thread has taken it all (`received`), nothing new for 50 ms. Between two
/// quiet points every event submitted has been received, so the two counts compare exactly.
fn settle(capture: &Capture, received: &AtomicU64, label: &str) -> anyhow::Result<(netcheck::capture::Counters, u64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        capture.sync();
        let (counters, got) = (capture.counters(), received.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(50));
        capture.sync();
        if capture.counters() == counters && received.load(Ordering::Relaxed) == got {
            return Ok((counters, got));
        }
        anyhow::ensure!(Instant::now() < deadline, "{label}: events still coming 10 s after the flood");
    }
}

/// bpftrace's count-by-reason one-liner on the same flood: its program's ns/event and the
/// flood's rate.
fn bpftrace_run(flood: &dyn Fn(&str) -> anyhow::Result<f64>) -> anyhow::Result<(u64, f64)> {
    use std::process::{Command, Stdio};
    let ours = |infos: &[aya::programs::ProgramInfo]| -> Vec<u32> {
        infos.iter().map(aya::programs::ProgramInfo::id).collect()
    };
    let before: Vec<aya::programs::ProgramInfo> = aya::programs::loaded_programs().filter_map(Result::ok).collect();
    let known = ours(&before);
    // bpftrace reads the tracepoint's format from tracefs: mounted in a mount namespace of its
    // own, so the host's mounts stay as they are.
    let script = "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing; \
                  exec bpftrace -e 'tracepoint:skb:kfree_skb { @[args->reason] = count(); }'";
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("bpftrace (cargo xtask setup installs it): {e}"))?;
    // Its program appears once bpftrace has compiled and attached it (a few seconds).
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let new: Vec<aya::programs::ProgramInfo> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            // bpftrace's is a classic tracepoint program named after the event; ours are tp_btf.
            .filter(|p| !known.contains(&p.id()) && p.name_as_str() == Some("kfree_skb"))
            .collect();
        if let Some(p) = new.first() {
            break p.id();
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!("bpftrace attached nothing: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // As for netcheck: the rate without bpf_stats, the cost with them.
    let rate = flood("with bpftrace")?;
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let read = || {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .map(|p| (p.run_count(), p.run_time()))
    };
    let (runs0, time0) = read().ok_or_else(|| anyhow::anyhow!("bpftrace's program {id} vanished"))?;
    flood("bpftrace (bpf_stats)")?;
    let (runs1, time1) = read().ok_or_else(|| anyhow::anyhow!("bpftrace's program {id} vanished"))?;
    drop(stats);
    // SIGINT: bpftrace prints its map and exits.
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let runs = runs1.saturating_sub(runs0);
    anyhow::ensure!(runs > 0, "the flood did not run bpftrace's program");
    let ns = time1.saturating_sub(time0).as_nanos() / u128::from(runs);
    println!("  bpftrace's program {id}: {runs} runs, {ns} ns/event");
    Ok((u64::try_from(ns)?, rate))
}

/// Each program's runs and ns/event between two `bpf_stats` readings, printed and returned.
fn kernel_figures(
    before: &[(String, aya::programs::ProgramInfo)],
    after: &[(String, aya::programs::ProgramInfo)],
) -> Vec<serde_json::Value> {
    println!("\nkernel (bpf_stats, run_time_ns / run_cnt):");
    let mut figures = Vec::new();
    for (name, info) in after {
        let Some((_, b)) = before.iter().find(|(n, _)| n == name) else { continue };
        let runs = info.run_count().saturating_sub(b.run_count());
        if runs == 0 {
            continue;
        }
        let ns = info.run_time().saturating_sub(b.run_time()).as_nanos();
        let per = ns as f64 / runs as f64;
        println!("  {name:<18} {runs:>9} runs  {per:>7.0} ns/event");
        let per_event = u64::try_from(ns / u128::from(runs)).unwrap_or(u64::MAX);
        figures.push(serde_json::json!({ "name": name, "runs": runs, "ns_per_event": per_event }));
    }
    figures
}
