//! What capture adds to a one-shot command: `netcheck check tcp` from pod a to pod b on the lab,
//! median wall time with capture and with `--no-capture` (process start included in both), and
//! the start-up phases capture reports (`capture.phases`) for the median run.
//!
//! `cargo xtask bench` (or `cargo bench -p netcheck-tests --bench startup [-- --quick]`); root.
//! The binary is `$NETCHECK_BIN`, else the one beside the bench. It fails when capture did not
//! load, or was not off with `--no-capture`, or reported no phases (then there is nothing to
//! measure).

use std::time::{Duration, Instant};

use netlab::{Lab, netcheck};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    netlab::needs_root("start-up benchmark");
    let _ = netlab::clean_stale();
    let runs = if quick { 5 } else { 10 };
    let mut lab = Lab::new()?;
    lab.start_servers()?;
    let (a, b) = (lab.pod("a").netns.clone(), format!("{}:8080", lab.pod("b").ip));
    println!("netcheck check tcp {b} from pod a, {runs} runs each");

    let measure = |extra: &[&str]| -> anyhow::Result<Vec<(Duration, serde_json::Value)>> {
        let mut runs_done = Vec::new();
        for _ in 0..runs {
            let mut args = extra.to_vec();
            args.extend(["check", "tcp", b.as_str()]);
            let started = Instant::now();
            let r = netcheck::run_json_in(&a, &args)?;
            let took = started.elapsed();
            anyhow::ensure!(r.code == 0, "check tcp failed: {}", r.stdout);
            runs_done.push((took, r.json));
        }
        runs_done.sort_by_key(|(d, _)| *d);
        Ok(runs_done)
    };
    let with = measure(&[])?;
    let without = measure(&["--no-capture"])?;
    let (median_with, doc) = &with[with.len() / 2];
    let median_without = without[without.len() / 2].0;
    for (_, doc) in &with {
        anyhow::ensure!(
            doc["capture"]["available"] == true,
            "capture did not load, nothing to measure: {}",
            doc["capture"]["detail"]
        );
        anyhow::ensure!(
            doc["capture"]["phases"].as_array().is_some_and(|p| !p.is_empty()),
            "capture reported no start-up phases: {}",
            doc["capture"]
        );
    }
    for (_, doc) in &without {
        anyhow::ensure!(
            doc["capture"]["available"] == false && doc["capture"]["detail"] == "disabled by --no-capture",
            "--no-capture still captured: {}",
            doc["capture"]
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let range = |v: &[(Duration, serde_json::Value)]| format!("{:.0}-{:.0}", ms(v[0].0), ms(v[v.len() - 1].0));
    println!("  with capture     median {:>6.1} ms  (range {} ms)", ms(*median_with), range(&with));
    println!("  --no-capture     median {:>6.1} ms  (range {} ms)", ms(median_without), range(&without));
    println!("  capture adds     {:>6.1} ms", ms(*median_with) - ms(median_without));
    println!("start-up phases of the median run (capture.load_ms {} ms):", doc["capture"]["load_ms"]);
    for p in doc["capture"]["phases"].as_array().into_iter().flatten() {
        println!("  {:>7.1} ms  {}", p["ms"].as_f64().unwrap_or(0.0), p["phase"].as_str().unwrap_or("?"));
    }
    Ok(())
}
