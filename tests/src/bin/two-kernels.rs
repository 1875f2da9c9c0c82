//! The two-kernel lab's two sides (issue 15, acceptance 5), run by `cargo xtask kernels` in two
//! QEMU guests with different kernels, joined by a link between their network cards:
//!
//! - `two-kernels local DIR`: node n1 with pods a and c, the API stand-in, and the checks: a
//!   healthy baseline, then (once the peer drops VXLAN) `netcheck path` from pod a to pod b
//!   without the peer's agent, without a token for it, and with one.
//! - `two-kernels peer DIR`: node n2 with pod b and its agent; drops VXLAN when told.
//!
//! DIR is a folder both guests share (marks, the peer's node root). Each check prints a libtest
//! line (`test NAME ... ok|FAILED`), which the xtask counts; the exit code is 1 if any failed.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use netlab::{
    Lab, TempDir, VXLAN_PORT,
    agent::{AGENT_PORT, Agent},
    netcheck,
    split::{Rendezvous, machine_nic},
};
use serde_json::Value;

/// The same prefix on both machines: each names its node's namespace as the other expects.
const PREFIX: &str = "nclabpair";
/// Boot, capture load and the agent's first cycle take minutes under TCG.
const WAIT: Duration = Duration::from_mins(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(role @ ("local" | "peer")), Some(dir)) = (args.get(1).map(String::as_str), args.get(2)) else {
        eprintln!("usage: two-kernels local|peer SHARED_DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(dir);
    let meeting = Rendezvous::new(dir, role);
    let mut checks = Checks::default();
    let done = if role == "local" { local(dir, &meeting, &mut checks) } else { peer(dir, &meeting, &mut checks) };
    if let Err(e) = done {
        // The set-up failed before a check could: that is a failure too, and the other side
        // must stop waiting.
        meeting.fail(&format!("{e:#}"));
        checks.record(&format!("{role}_setup"), Err(e));
    }
    if checks.failed == 0 && checks.passed > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[derive(Default)]
struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn record(&mut self, name: &str, result: Result<()>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("test {name} ... ok");
            }
            Err(e) => {
                self.failed += 1;
                println!("---- {name} ----\n{e:#}");
                println!("test {name} ... FAILED");
            }
        }
    }
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// Node n2: pod b listening on 8080, the agent; drops VXLAN on its underlay when the local side's
/// baseline is done, and stops the agent when it is finished.
fn peer(dir: &Path, meeting: &Rendezvous, checks: &mut Checks) -> Result<()> {
    let mut lab = Lab::split(PREFIX, 2, 2, &machine_nic()?)?;
    let b = lab.pod("b").clone();
    lab.serve_tcp(&b.netns, SocketAddr::new(b.ip.into(), 8080))?;
    meeting.wait("cluster", WAIT)?;
    let root = dir.join("root-n2");
    let kubeconfig = root.join("etc/kubernetes/kubelet.conf").display().to_string();
    let (root, timeout) = (root.display().to_string(), format!("{}s", 2 * netlab::time_scale()));
    let node = lab.node(2).clone();
    let addr = SocketAddr::new(node.underlay_ip.into(), AGENT_PORT);
    let global = ["--timeout", &timeout, "--host-root", &root, "--kubeconfig", &kubeconfig];
    let mut agent = Agent::start(&node.netns, addr, &global, &["--node-name", "n2", "--interval", "10s"])?;
    checks.record("peer_agent_ready", agent.wait_ready(WAIT));
    meeting.mark("peer-ready", &release())?;
    meeting.wait("baseline-done", WAIT)?;
    lab.drop_vxlan(2)?;
    meeting.mark("vxlan-dropped", "")?;
    let finished = meeting.wait("done", WAIT);
    let dropped = lab.rule_packets(&node.netns, "filter", "INPUT")?;
    checks.record(
        "peer_kernel_dropped_the_vxlan_packets",
        if dropped > 0 { Ok(()) } else { Err(anyhow::anyhow!("the INPUT DROP rule matched no packet")) },
    );
    let stopped =
        agent.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10 * u64::from(netlab::time_scale())));
    checks.record(
        "peer_agent_stopped",
        stopped.and_then(|(code, _)| match code {
            Some(0) => Ok(()),
            other => bail!("the agent exited with {other:?}"),
        }),
    );
    finished.map(drop)
}

/// Node n1: pods a and c, the API stand-in (listing n1 and n2), the peer's node root written to
/// the shared folder; then the checks.
fn local(dir: &Path, meeting: &Rendezvous, checks: &mut Checks) -> Result<()> {
    let mut lab = Lab::split(PREFIX, 2, 1, &machine_nic()?)?;
    lab.serve_kubelet(1, true)?;
    let kubeconfig = lab.serve_api(1, &[])?;
    // The peer's node root lives in the shared folder (removed with the run's folder).
    let peer_root = TempDir { path: dir.join("root-n2") };
    std::fs::create_dir_all(&peer_root.path)?;
    lab.write_host_root(2, &peer_root, &kubeconfig)?;
    std::mem::forget(peer_root);
    let own = TempDir::new("two-kernels-n1");
    lab.write_host_root(1, &own, &kubeconfig)?;
    let kubeconfig = own.path.join("etc/kubernetes/kubelet.conf").display().to_string();
    meeting.mark("cluster", "")?;
    let peer_release = meeting.wait("peer-ready", WAIT)?;
    let result = local_checks(&lab, &kubeconfig, &peer_release, meeting, checks);
    meeting.mark("done", "")?;
    result
}

fn local_checks(
    lab: &Lab,
    kubeconfig: &str,
    peer_release: &str,
    meeting: &Rendezvous,
    checks: &mut Checks,
) -> Result<()> {
    let here = release();
    checks.record(
        "two_kernels_differ",
        if here != peer_release && !here.is_empty() {
            println!("kernels: local {here}, peer {peer_release}");
            Ok(())
        } else {
            Err(anyhow::anyhow!("both machines run {here:?}: not a two-kernel lab"))
        },
    );
    let path = |token: bool, extra: &[&str]| run_path(lab, token.then_some(kubeconfig), extra);
    checks.record("healthy_across_two_kernels", path(true, &[]).and_then(|r| healthy(&r)));
    meeting.mark("baseline-done", "")?;
    meeting.wait("vxlan-dropped", WAIT)?;
    checks.record(
        "peer_drop_unseen_here_without_the_peer_agent",
        path(true, &["--no-peer-agent"]).and_then(|r| unseen(&r, "its agent was not asked (--no-peer-agent)")),
    );
    checks.record(
        "peer_drop_without_a_token_says_why",
        path(false, &[]).and_then(|r| {
            unseen(&r, "its agent at 192.168.50.12:9472: refused, HTTP 401 Unauthorized")?;
            let note = r.check()["data"]["path"]["peer_agent"].as_str().unwrap_or_default();
            ensure!(note.contains("netcheck had no token to send"), "the note says why no token was sent: {note}");
            Ok(())
        }),
    );
    checks.record("peer_drop_placed_by_the_peer_agent", path(true, &[]).and_then(|r| placed(lab, &r)));
    Ok(())
}

/// `netcheck path` in n1 from pod a to pod b's 8080, capture on (this kernel's), with the
/// kubeconfig (its token the API stand-in's admin's) when given.
fn run_path(lab: &Lab, kubeconfig: Option<&str>, extra: &[&str]) -> Result<netcheck::Run> {
    let timeout = format!("{}s", 2 * netlab::time_scale());
    // Pod b is on the other machine: its address is the lab's (10.244.<node>.<host>).
    let (a, b) = (lab.pod("a").netns.clone(), format!("{}:8080", Ipv4Addr::new(10, 244, 2, 2)));
    let mut args = vec!["--timeout", timeout.as_str()];
    if let Some(k) = kubeconfig {
        args.extend(["--kubeconfig", k]);
    }
    args.extend(["path", "--from", &a, &b]);
    args.extend_from_slice(extra);
    let started = Instant::now();
    let r = netcheck::run_json_in(&lab.node(1).netns, &args)?;
    println!("netcheck {} ({:.1?}):\n{}", args.join(" "), started.elapsed(), serde_json::to_string_pretty(&r.json)?);
    ensure!(r.json["capture"]["available"] == true, "this node's capture is on: {}", r.json["capture"]);
    Ok(r)
}

fn hops(r: &netcheck::Run) -> Result<&Vec<Value>> {
    r.check()["hops"].as_array().context("no hops")
}

fn verdict(r: &netcheck::Run) -> &str {
    r.json["verdict"].as_str().unwrap_or_default()
}

fn healthy(r: &netcheck::Run) -> Result<()> {
    ensure!(r.code == 0, "exit {} (expected 0): {}", r.code, verdict(r));
    ensure!(hops(r)?.iter().all(|h| h["status"] == "pass"), "every hop passes: {}", verdict(r));
    let note = r.check()["data"]["path"]["peer_agent"].as_str().unwrap_or_default();
    ensure!(note.starts_with("the agent on 192.168.50.12:9472 saw"), "the peer's agent answered: {note}");
    Ok(())
}

/// The drop on the peer, without the peer's evidence: exit 1, no hop has evidence (this kernel
/// never saw the peer's drop), and the verdict names what is missing: `why`.
fn unseen(r: &netcheck::Run, why: &str) -> Result<()> {
    ensure!(r.code == 1, "exit {} (expected 1): {}", r.code, verdict(r));
    let with_evidence: Vec<&Value> =
        hops(r)?.iter().filter(|h| h["evidence"].as_array().is_some_and(|e| !e.is_empty())).collect();
    ensure!(with_evidence.is_empty(), "this kernel saw nothing of the peer's drop, yet: {with_evidence:?}");
    let v = verdict(r);
    ensure!(v.contains("no drop seen on this machine"), "the verdict says this kernel saw no drop: {v}");
    ensure!(v.contains(why), "the verdict names the missing evidence ({why}): {v}");
    Ok(())
}

/// With the peer's agent: the drop is on the peer's underlay, in n2's namespace on eth0, seen by
/// the peer's kernel (NETFILTER_DROP of the VXLAN packet to n2's 8472).
fn placed(lab: &Lab, r: &netcheck::Run) -> Result<()> {
    ensure!(r.code == 1, "exit {} (expected 1): {}", r.code, verdict(r));
    let hops = hops(r)?;
    let failed = hops.iter().find(|h| h["status"] == "fail").context("no failing hop")?;
    let n2 = lab.node(2);
    ensure!(failed["name"] == "peer-underlay", "the first failing hop is the peer's underlay: {failed}");
    ensure!(failed["inferred"] == false, "the peer's kernel saw it: {failed}");
    ensure!(failed["netns"] == n2.netns.as_str() && failed["device"] == "eth0", "on n2's eth0: {failed}");
    let drop = &failed["evidence"][0];
    ensure!(drop["reason"] == "NETFILTER_DROP", "the peer kernel's reason: {drop}");
    ensure!(drop["flow"]["dst"] == format!("{}:{VXLAN_PORT}", n2.underlay_ip), "the VXLAN packet to n2: {drop}");
    let v = verdict(r);
    ensure!(v.starts_with("peer-underlay: dropped by netfilter"), "{v}");
    Ok(())
}
