//! `netcheck node` on a healthy lab node: wall time of the whole run with its checks at once,
//! against the same checks one after another (`--one-by-one`), each over several runs.
//!
//! `cargo xtask bench` (or `cargo bench -p netcheck-tests --bench node [-- --quick]`); root.
//! The binary is `$NETCHECK_BIN`, else the one beside the bench (build probe-user first).
//! It fails when a run fails, capture did not load, or the two ways ran different checks.

use std::time::{Duration, Instant};

use netlab::{Lab, TempDir, netcheck};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    netlab::needs_root("node benchmark");
    let _ = netlab::clean_stale();
    let runs = if quick { 3 } else { 10 };
    let mut lab = Lab::new()?;
    lab.start_servers()?;
    let dns = lab.start_dns()?;
    let kubeconfig = lab.serve_api(1, &dns.endpoints)?;
    let root = TempDir::new(&format!("bench-node-{}", lab.prefix));
    lab.write_host_root(1, &root, &kubeconfig)?;
    let host_root = root.path.display().to_string();
    let kubeconfig = root.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    let netns = lab.node(1).netns.clone();

    // The wall times, and how many checks each run had (the same in every run).
    let measure = |label: &str, extra: Option<&str>| -> anyhow::Result<(Vec<Duration>, usize)> {
        let mut times = Vec::new();
        let mut checks = 0;
        for _ in 0..runs {
            let mut args = vec!["--host-root", host_root.as_str(), "--kubeconfig", kubeconfig.as_str(), "node"];
            args.extend(extra);
            let started = Instant::now();
            let r = netcheck::run_json_in(&netns, &args)?;
            times.push(started.elapsed());
            anyhow::ensure!(r.code == 0, "{label}: netcheck node failed: {}", r.stdout);
            anyhow::ensure!(
                r.json["capture"]["available"] == true,
                "{label}: capture did not load: {}",
                r.json["capture"]
            );
            let these = r.json["checks"].as_array().map_or(0, Vec::len);
            anyhow::ensure!(checks == 0 || these == checks, "{label}: {these} checks, {checks} in the run before");
            checks = these;
        }
        times.sort();
        println!(
            "{label:<12} {checks} checks, {runs} runs: min {:>6.0} ms  median {:>6.0} ms  max {:>6.0} ms",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
        Ok((times, checks))
    };
    let (at_once, checks) = measure("at once", None)?;
    let (one_by_one, checks_one_by_one) = measure("one by one", Some("--one-by-one"))?;
    anyhow::ensure!(
        checks > 0 && checks == checks_one_by_one,
        "{checks} checks at once, {checks_one_by_one} one by one"
    );
    let (a, b) = (ms(at_once[at_once.len() / 2]), ms(one_by_one[one_by_one.len() / 2]));
    println!(
        "\nmedian wall time at once is {:.0} % of one by one (process start and capture load included in both)",
        a / b * 100.0
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
