//! Capture cost under a drop flood on the lab, in both modes.
//!
//! - kernel: each program's `bpf_stats` (run_time_ns / run_cnt) while a flood of NETFILTER_DROP
//!   drops crosses the overlay, in one-shot mode (every event to the ring buffer, as `check`,
//!   `path` and `netcheck capture` run it) and in agent mode (watched-only: the flood's drops
//!   are counted in the kernel and not queued, as on a node that drops packets all day);
//! - userspace: events/s read from the ring buffer and decoded (the `netcheck capture` path),
//!   events the kernel submitted, filtered and lost because the ring buffer was full;
//! - the flood's own rate without capture and with each mode attached (what the machine pays);
//! - capture's start-up phases (`capture.phases`);
//! - with `--bpftrace`, bpftrace's count-by-reason one-liner on the same flood, side by side.
//!
//! `cargo xtask bench` (or `cargo bench -p netcheck-tests --bench capture [-- --quick]`); root.
//! `--json FILE` also writes the figures as JSON (`cargo xtask kernels` reads them from each
//! guest). It fails when the flood produced no drop events, or a mode did not see them.

#![expect(clippy::cast_precision_loss, reason = "rates and averages printed for people")]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use netcheck::capture::{Capture, Options};
use netlab::{Lab, udp_flood};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    if !netlab::require_root("capture benchmark") {
        return Ok(());
    }
    let _ = netlab::clean_stale();
    let (count, max_time) =
        if quick { (100_000, Duration::from_secs(3)) } else { (2_000_000, Duration::from_secs(10)) };
    let lab = Lab::new()?;
    let (b, c) = (lab.pod("b").clone(), lab.pod("c").clone());
    lab.iptables(&lab.node(2).netns, &format!("-I FORWARD -d {} -p udp --dport 9999 -j DROP", b.ip))?;
    let dst = SocketAddr::new(b.ip.into(), 9999);

    let flood = |label: &str| -> anyhow::Result<f64> {
        let started = Instant::now();
        let sent = udp_flood(&c.netns, dst, count, max_time)?;
        let secs = started.elapsed().as_secs_f64();
        let rate = sent as f64 / secs;
        println!("flood {label:<16} {sent:>9} packets in {secs:5.2} s = {rate:>9.0} packets/s");
        Ok(rate)
    };

    println!("netcheck capture benchmark ({} run)", if quick { "quick" } else { "full" });
    let base = flood("without capture")?;

    // One-shot mode: every event to the ring buffer and a subscriber (`netcheck capture`).
    let one_shot = capture_run(&flood, Options::default(), None)?;
    println!("\nflood rate with capture: {:.1} % of the rate without", 100.0 * one_shot.rate / base);
    // Agent mode: every event counted in the kernel, only watched addresses' events queued;
    // the flood's addresses are not watched (a node's everyday drops).
    // An address no lab packet carries (TEST-NET-1): watched, so the filter runs its lookups.
    let unrelated = [std::net::IpAddr::from([192, 0, 2, 1])];
    let agent = capture_run(&flood, Options { watched_only: true, ..Options::default() }, Some(&unrelated))?;
    println!("\nflood rate with agent capture: {:.1} % of the rate without", 100.0 * agent.rate / base);
    let bpftrace = if args.iter().any(|a| a == "--bpftrace") { Some(bpftrace_run(&flood)?) } else { None };

    println!("\nkfree_skb in the kernel, same flood (ns/event):");
    println!("  one-shot capture        {:>6}", one_shot.kfree_skb_ns);
    println!("  agent (watched-only)    {:>6}", agent.kfree_skb_ns);
    if let Some(ns) = bpftrace {
        println!("  bpftrace count-by-reason {ns:>5}   (tracepoint:skb:kfree_skb {{ @[args->reason] = count(); }})");
    }
    if let Some(path) = json_out {
        let v = serde_json::json!({
            "kernel": one_shot.status.kernel,
            "load_ms": one_shot.status.load_ms,
            "phases": one_shot.status.phases,
            "programs": one_shot.figures,
            "submitted": one_shot.submitted,
            "lost": one_shot.lost,
            "received": one_shot.received,
            "agent_programs": agent.figures,
            "flood_rate": { "without": base, "one_shot": one_shot.rate, "agent": agent.rate },
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
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

/// Starts capture in `opts`'s mode (watching `watch` in agent mode), floods, and reads the
/// programs' `bpf_stats` and the counters. Fails when the flood ran no program or, in one-shot
/// mode, when no event reached userspace.
fn capture_run(
    flood: &dyn Fn(&str) -> anyhow::Result<f64>,
    opts: Options,
    watch: Option<&[std::net::IpAddr]>,
) -> anyhow::Result<ModeFigures> {
    let agent = opts.watched_only;
    let label = if agent { "agent capture" } else { "with capture" };
    let capture = Capture::start(opts).map_err(|u| anyhow::anyhow!("capture unavailable: {}", u.detail))?;
    if let Some(addresses) = watch {
        capture.watch_addresses(addresses);
    }
    let status = capture.status();
    let programs: Vec<String> = status
        .hooks
        .iter()
        .filter(|h| h.attached)
        .filter_map(|h| h.program.map(|p| format!("{}:{p}", h.tracepoint)))
        .collect();
    println!(
        "\n{label}: loaded in {} ms on {}: {}",
        status.load_ms.unwrap_or(0),
        status.kernel.as_deref().unwrap_or("?"),
        programs.join(", ")
    );
    for p in &status.phases {
        println!("  {:>7.1} ms  {}", p.ms, p.phase);
    }
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = (!agent).then(|| {
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
    let enabled = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let before = capture.program_infos();
    let counters_before = capture.counters();
    let started = Instant::now();
    let rate = flood(label)?;
    capture.sync();
    let elapsed = started.elapsed().as_secs_f64();
    let after = capture.program_infos();
    let counters_after = capture.counters();
    drop(enabled);
    done.store(true, Ordering::Relaxed);
    if let Some(c) = counter {
        c.join().expect("counter thread");
    }
    let figures = kernel_figures(&before, &after);
    let submitted = counters_after.sent - counters_before.sent;
    let lost = counters_after.lost - counters_before.lost;
    let filtered = counters_after.filtered - counters_before.filtered;
    let got = received.load(Ordering::Relaxed);
    let kfree = figures.iter().find(|f| f["name"].as_str().is_some_and(|n| n.starts_with("kfree_skb")));
    let kfree_skb_ns = kfree.and_then(|f| f["ns_per_event"].as_u64()).unwrap_or(0);
    let runs = kfree.and_then(|f| f["runs"].as_u64()).unwrap_or(0);
    println!("userspace:");
    println!("  events submitted by the kernel {submitted:>9}");
    println!("  events lost (ring buffer full) {lost:>9}");
    if agent {
        println!("  events filtered in the kernel  {filtered:>9}  (counted, not queued)");
        // What this measures did not happen: no drop ran the program, or the flood's drops were
        // not filtered out.
        anyhow::ensure!(
            runs > 0 && filtered >= runs / 2,
            "agent mode: the flood ran kfree_skb {runs} times, {filtered} filtered"
        );
    } else {
        println!("  events received                {got:>9}  = {:.0} events/s", got as f64 / elapsed);
        anyhow::ensure!(
            runs > 0 && submitted > 0 && got > 0,
            "the flood produced no drop events (kfree_skb ran {runs} times, submitted {submitted}, received {got})"
        );
    }
    Ok(ModeFigures { status, figures, kfree_skb_ns, rate, submitted, lost, received: got })
}

/// bpftrace's count-by-reason one-liner on the same flood: its program's ns/event.
fn bpftrace_run(flood: &dyn Fn(&str) -> anyhow::Result<f64>) -> anyhow::Result<u64> {
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
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let read = || {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .map(|p| (p.run_count(), p.run_time()))
    };
    let (runs0, time0) = read().ok_or_else(|| anyhow::anyhow!("bpftrace's program {id} vanished"))?;
    flood("with bpftrace")?;
    let (runs1, time1) = read().ok_or_else(|| anyhow::anyhow!("bpftrace's program {id} vanished"))?;
    drop(stats);
    // SIGINT: bpftrace prints its map and exits.
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let runs = runs1.saturating_sub(runs0);
    anyhow::ensure!(runs > 0, "the flood did not run bpftrace's program");
    let ns = time1.saturating_sub(time0).as_nanos() / u128::from(runs);
    println!("  bpftrace's program {id}: {runs} runs");
    Ok(u64::try_from(ns)?)
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
