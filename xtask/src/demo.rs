//! `cargo xtask demo`: the fault scenarios of shared/FIELD.md on the lab, each with the
//! command an operator would type and netcheck's real answer.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use netlab::{KUBELET_PORT, Lab};

fn fresh_lab() -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.start_servers()?;
    Ok(lab)
}

fn show(bin: &Path, netns: &str, args: &[&str]) -> Result<()> {
    println!("$ netcheck --netns {netns} {}", args.join(" "));
    let out = Command::new(bin).arg("--netns").arg(netns).args(args).output().context("run netcheck")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!("(exit code {})\n", out.status.code().unwrap_or(-1));
    Ok(())
}

fn title(t: &str) {
    println!("\n=== {t} ===");
}

pub fn run(bin: &Path) -> Result<()> {
    if !netlab::require_root("demo") {
        bail!("the demo builds network namespaces: run it as root");
    }
    let _ = netlab::clean_stale();
    println!("lab: two flannel-style nodes (VXLAN VNI 1, UDP 8472) in network namespaces;");
    println!(
        "     pod a 10.244.1.2 and pod c 10.244.1.3 on n1 (192.168.50.11), pod b 10.244.2.2 on n2 (192.168.50.12)"
    );

    title("1. healthy: pod a (n1) -> pod b (n2) across the overlay");
    let lab = fresh_lab()?;
    let (a, b) = (lab.pod("a").clone(), lab.pod("b").clone());
    let pod_b = format!("{}:8080", b.ip);
    show(bin, &a.netns, &["check", "tcp", &pod_b])?;
    drop(lab);

    title("2. the listener in pod b stopped (FIELD.md case 8: nothing listens)");
    let mut lab = fresh_lab()?;
    lab.stop_servers_on(8080);
    show(bin, &a.netns, &["check", "tcp", &pod_b])?;
    drop(lab);

    title("3. n2 silently DROPs forwarded TCP to pod b");
    let lab = fresh_lab()?;
    lab.drop_forwarded_tcp(2, b.ip, 8080)?;
    show(bin, &a.netns, &["--timeout", "2s", "check", "tcp", &pod_b])?;
    drop(lab);

    title("4. n1 REJECTs pod sources to its kubelet (FIELD.md case 1): pods on n1 fail, pods on n2 pass");
    let lab = fresh_lab()?;
    lab.reject_pods_to_kubelet(1)?;
    let kubelet = format!("{}:{KUBELET_PORT}", lab.node(1).underlay_ip);
    show(bin, &a.netns, &["--timeout", "2s", "check", "tcp", &kubelet])?;
    show(bin, &b.netns, &["--timeout", "2s", "check", "tcp", &kubelet])?;
    drop(lab);

    title(
        "5. n2 drops VXLAN (UDP 8472) on its underlay (FIELD.md case 4): TCP only sees a timeout, netcheck names the overlay",
    );
    let lab = fresh_lab()?;
    lab.drop_vxlan(2)?;
    show(bin, &a.netns, &["--timeout", "2s", "check", "tcp", &pod_b])?;
    show(bin, &a.netns, &["-o", "json", "--timeout", "2s", "check", "tcp", &pod_b])?;
    drop(lab);

    title("6. netcheck capture: live drops with the kernel's reason names");
    let lab = fresh_lab()?;
    println!("$ netcheck capture --duration 3s   (meanwhile pod a connects to a closed port of pod b)");
    let child =
        Command::new(bin).args(["capture", "--duration", "3s"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    let closed = SocketAddr::new(b.ip.into(), 7);
    netlab::in_netns(&a.netns, move || Ok(TcpStream::connect_timeout(&closed, Duration::from_secs(1)).is_ok()))?;
    let out = child.wait_with_output()?;
    // Other drops of this machine show up too; the demo shows the lab's.
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&lab.prefix)) {
        println!("{line}");
    }
    drop(lab);

    title(
        "7. unprivileged (as in `kubectl debug node` without --profile=sysadmin): probes run, capture says what it lacks",
    );
    let lab = fresh_lab()?;
    println!("$ setpriv --reuid=65534 --inh-caps=-all --bounding-set=-all netcheck check tcp {pod_b}   (inside pod a)");
    let out = Command::new("ip")
        .args(["netns", "exec", &a.netns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(bin)
        .args(["check", "tcp", &pod_b])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("(exit code {})", out.status.code().unwrap_or(-1));
    drop(lab);
    Ok(())
}

/// `cargo xtask lab up`: the lab and its servers until Ctrl-C.
pub fn lab_up() -> Result<()> {
    if !netlab::require_root("lab up") {
        bail!("the lab builds network namespaces: run it as root");
    }
    let _ = netlab::clean_stale();
    let lab = fresh_lab()?;
    println!("lab {} is up:", lab.prefix);
    for ns in lab.namespaces() {
        println!("  {ns}");
    }
    for p in &lab.pods {
        println!("pod {} on n{}: {} (netns {})", p.name, p.node, p.ip, p.netns);
    }
    println!("servers: pod b 8080/tcp, kubelet 10250/tcp on both nodes");
    println!("try: netcheck --netns {} check tcp {}:8080", lab.pod("a").netns, lab.pod("b").ip);
    println!("Ctrl-C removes it.");
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_channel(tx)?;
    let _ = rx.recv();
    drop(lab);
    println!("lab removed");
    Ok(())
}

fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) -> Result<()> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = tx.send(());
    });
    Ok(())
}
