//! `netcheck path` from pod a (n1) to pod b (n2) on the lab: wall time of whole runs, healthy
//! with and without capture, with the source given by IP (the namespace scan), and on a broken
//! path (UDP 8472 dropped on n2, `--timeout 2s`: the time to a verdict).
//!
//! `cargo xtask bench` (or `cargo bench -p netcheck-tests --bench path [-- --quick]`); root.
//! The binary is `$NETCHECK_BIN`, else the one beside the bench (build probe-user first).
//! It fails when a run's exit code is not the scenario's, or capture was not loaded (or not
//! off with `--no-capture`): then the time is not that of what it names.

use std::time::{Duration, Instant};

use netlab::{Lab, netcheck};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    netlab::needs_root("path benchmark");
    let _ = netlab::clean_stale();
    let runs = if quick { 3 } else { 10 };
    let mut lab = Lab::new()?;
    lab.start_servers()?;
    let (a, b) = (lab.pod("a").clone(), lab.pod("b").clone());
    let netns = lab.node(1).netns.clone();
    let dst = format!("{}:8080", b.ip);
    let source_ip = a.ip.to_string();

    let measure = |label: &str, args: &[&str], want: i32| -> anyhow::Result<()> {
        let mut times = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let r = netcheck::run_json_in(&netns, args)?;
            times.push(started.elapsed());
            anyhow::ensure!(r.code == want, "{label}: exit {} (wanted {want}): {}", r.code, r.stdout);
            // What is measured is a run with capture loaded, or one without it.
            let capturing = !args.contains(&"--no-capture");
            anyhow::ensure!(
                r.json["capture"]["available"] == capturing,
                "{label}: capture available {}, wanted {capturing}: {}",
                r.json["capture"]["available"],
                r.json["capture"]
            );
        }
        times.sort();
        println!(
            "{label:<34} {runs} runs: min {:>6.0} ms  median {:>6.0} ms  max {:>6.0} ms",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
        Ok(())
    };
    measure("healthy, capture on", &["path", "--from", &a.netns, &dst], 0)?;
    measure("healthy, --no-capture", &["--no-capture", "path", "--from", &a.netns, &dst], 0)?;
    measure("healthy, --from POD_IP", &["path", "--from", &source_ip, &dst], 0)?;
    lab.drop_vxlan(2)?;
    measure("VXLAN dropped on n2, --timeout 2s", &["--timeout", "2s", "path", "--from", &a.netns, &dst], 1)?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
