//! Capture cost under a drop flood on the lab.
//!
//! - kernel: each program's `bpf_stats` (run_time_ns / run_cnt) while a flood of NETFILTER_DROP
//!   drops crosses the overlay;
//! - userspace: events/s read from the ring buffer and decoded (the `netcheck capture` path),
//!   events the kernel submitted and events lost because the ring buffer was full;
//! - the flood's own rate with and without capture attached (what the machine pays).
//!
//! `cargo xtask bench` (or `cargo bench -p netcheck-tests --bench capture [-- --quick]`); root.

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
    let quick = std::env::args().any(|a| a == "--quick");
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

    println!("\nkernel (bpf_stats, run_time_ns / run_cnt):");
    for (name, info) in &after {
        let Some((_, b)) = before.iter().find(|(n, _)| n == name) else { continue };
        let runs = info.run_count().saturating_sub(b.run_count());
        let ns = info.run_time().saturating_sub(b.run_time()).as_nanos();
        let per = if runs > 0 { ns as f64 / runs as f64 } else { 0.0 };
        println!("  {name:<18} {runs:>9} runs  {per:>7.0} ns/event");
    }
    let submitted = counters_after.sent - counters_before.sent;
    let lost = counters_after.lost - counters_before.lost;
    let got = received.load(Ordering::Relaxed);
    println!("\nuserspace (ring buffer -> decode -> subscriber):");
    println!("  events submitted by the kernel {submitted:>9}");
    println!("  events lost (ring buffer full) {lost:>9}");
    println!("  events received                {got:>9}  = {:.0} events/s", got as f64 / elapsed);
    println!("\nflood rate with capture: {:.1} % of the rate without", 100.0 * with / base);
    Ok(())
}
