//! Capture cost under a drop flood on the lab.
//!
//! - kernel: each program's `bpf_stats` (run_time_ns / run_cnt) while a flood of NETFILTER_DROP
//!   drops crosses the overlay;
//! - userspace: events/s read from the ring buffer and decoded (the `netcheck capture` path),
//!   events the kernel submitted and events lost because the ring buffer was full;
//! - the flood's own rate with and without capture attached (what the machine pays).
//!
//! `cargo xtask bench` (or `cargo bench -p netcheck-tests --bench capture [-- --quick]`); root.
//! `--json FILE` also writes the figures as JSON (`cargo xtask kernels` reads them from each
//! guest). It fails when the flood produced no drop events.

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

    let capture =
        Capture::start(Options::default()).map_err(|u| anyhow::anyhow!("capture unavailable: {}", u.detail))?;
    let loaded = capture.status();
    let programs: Vec<String> = loaded
        .hooks
        .iter()
        .filter(|h| h.attached)
        .filter_map(|h| h.program.map(|p| format!("{}:{p}", h.tracepoint)))
        .collect();
    println!(
        "capture loaded in {} ms on {}: {}",
        loaded.load_ms.unwrap_or(0),
        loaded.kernel.as_deref().unwrap_or("?"),
        programs.join(", ")
    );
    let rx = capture.subscribe();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, done) = (received.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let before = capture.program_infos();
    let counters_before = capture.counters();
    let started = Instant::now();
    let with = flood("with capture")?;
    capture.sync();
    let elapsed = started.elapsed().as_secs_f64();
    let after = capture.program_infos();
    let counters_after = capture.counters();
    drop(stats);
    done.store(true, Ordering::Relaxed);
    counter.join().expect("counter thread");

    let figures = kernel_figures(&before, &after);
    let submitted = counters_after.sent - counters_before.sent;
    let lost = counters_after.lost - counters_before.lost;
    let got = received.load(Ordering::Relaxed);
    println!("\nuserspace (ring buffer -> decode -> subscriber):");
    println!("  events submitted by the kernel {submitted:>9}");
    println!("  events lost (ring buffer full) {lost:>9}");
    println!("  events received                {got:>9}  = {:.0} events/s", got as f64 / elapsed);
    println!("\nflood rate with capture: {:.1} % of the rate without", 100.0 * with / base);
    // What this measures did not happen: no drop ran the programs, or none reached userspace.
    let drops_ran = figures.iter().any(|f| f["name"].as_str().is_some_and(|n| n.starts_with("kfree_skb")));
    if !drops_ran || submitted == 0 || got == 0 {
        anyhow::bail!(
            "the flood produced no drop events (kfree_skb ran: {drops_ran}, submitted {submitted}, received {got})"
        );
    }
    if let Some(path) = json_out {
        let v = serde_json::json!({
            "kernel": loaded.kernel,
            "load_ms": loaded.load_ms,
            "programs": figures,
            "submitted": submitted,
            "lost": lost,
            "received": got,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
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
