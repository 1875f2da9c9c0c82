//! The `netcheck` command line. Exit codes: 0 nothing failed, 1 a check failed, 2 usage or
//! environment error.

use std::{
    io::{IsTerminal, Write},
    path::Path,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

mod args;
pub mod docs;

use clap::Parser as _;

pub use self::args::{AgentArgs, CheckCommand, Cli, Command, NodeArgs, NpdCommand, PathArgs};

use crate::{
    capture::{self, Capture, event::KernelEvent},
    discovery,
    error::AnyResult,
    jobs::{self, CertOptions, Job, node_checks, node_pki_jobs, run_jobs, start_capture},
    netns,
    output::{Document, Format},
    probes::{Target, dns, mtu, vxlan},
    time::Clock,
    verdict,
};

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match &cli.command {
        Command::Completions { shell } => {
            docs::completions(<Cli as clap::CommandFactory>::command(), *shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            return match docs::man_pages(<Cli as clap::CommandFactory>::command(), dir) {
                Ok(pages) => {
                    println!("{} man pages in {}", pages.len(), dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("netcheck: man pages into {}: {e}", dir.display());
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
    }
    // `npd CMD`: CMD with the npd output format.
    let mut cli = cli;
    if let Command::Npd { max_output, command } = cli.command {
        (cli.command, cli.output, cli.npd_max) = (command.into(), Format::Npd, max_output);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETCHECK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = crate::error::chain(e.as_ref());
            if cli.output == Format::Npd {
                // NPD reads the message from stdout; 2 is its "unknown".
                println!("{}", crate::output::cut(&format!("unknown: {message}"), cli.npd_max));
            }
            eprintln!("netcheck: {message}");
            ExitCode::from(2)
        }
    }
}

/// Reads and checks every input before anything touches the system.
fn plan(
    command: &CheckCommand,
    host_root: Option<&Path>,
    kubeconfig: Option<&Path>,
) -> AnyResult<(Vec<Job>, CertOptions)> {
    match command {
        CheckCommand::Tcp { targets } => {
            let jobs = targets.iter().map(|t| Target::parse(t).map(Job::Tcp)).collect::<Result<_, _>>()?;
            Ok((jobs, CertOptions::default()))
        }
        CheckCommand::Kubelet { nodes, port, healthz_port, ca, warn_days, resolv_conf } => {
            let roots = ca.as_deref().map(discovery::certs::load_pem).transpose()?.map(Arc::new);
            let resolver = resolv_conf.as_deref().map(dns::ResolvConf::read).transpose()?.map(Arc::new);
            let mut jobs = Vec::new();
            for node in nodes {
                let host = if node.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{node}]") } else { node.clone() };
                let target = Target::parse(&format!("{host}:{port}"))?;
                jobs.push(Job::Kubelet {
                    target,
                    healthz_port: *healthz_port,
                    resolver: resolver.clone(),
                    self_signed_warns: false,
                });
            }
            Ok((jobs, CertOptions { server_name: None, roots, warn_days: *warn_days }))
        }
        CheckCommand::Dns { names, servers, endpoints, upstreams, resolv_conf, rtype, cluster_domain } => {
            let conf = dns::ResolvConf::read(resolv_conf)?;
            // Without --upstream: the node's own resolvers, when a node root is mounted.
            let upstreams = if upstreams.is_empty() {
                discovery::node_upstreams(&discovery::host_root(host_root), None)
            } else {
                upstreams.clone()
            };
            let rtype: hickory_proto::rr::RecordType =
                rtype.to_ascii_uppercase().parse().map_err(|_| format!("--type {rtype}: not a DNS record type"))?;
            let mut jobs = Vec::new();
            for name in names {
                dns::check_name(name).map_err(|why| format!("invalid name {name:?}: {why}"))?;
                jobs.push(Job::Dns(Box::new(dns::Spec {
                    rtype,
                    servers: servers.clone(),
                    endpoints: endpoints.clone(),
                    upstreams: upstreams.clone(),
                    cluster_domain: cluster_domain.clone(),
                    discover: endpoints.is_empty().then(|| dns::Discover {
                        kubeconfig: kubeconfig.map(Path::to_path_buf),
                        host_root: discovery::host_root(host_root),
                        client: None,
                    }),
                    ..dns::Spec::new(name, conf.clone())
                })));
            }
            Ok((jobs, CertOptions::default()))
        }
        CheckCommand::Service { services, udp, probes, nodeport_peers } => {
            let counts = (*probes, *nodeport_peers);
            Ok((service_jobs(services, *udp, counts, host_root, kubeconfig)?, CertOptions::default()))
        }
        CheckCommand::Mtu { hosts, max, subnet_env } => {
            let cni_mtu = match subnet_env {
                Some(p) => discovery::flannel::SubnetEnv::read(p)?.mtu.map(|m| (m, p.clone())),
                // The node's own, read inside its root; none there is no CNI MTU to compare.
                None => discovery::node_root::NodeRoot::open(&discovery::host_root(host_root)).ok().and_then(|node| {
                    let inside = Path::new(discovery::flannel::SUBNET_ENV);
                    let text = node.read_to_string(inside).ok()?;
                    discovery::flannel::SubnetEnv::parse(&text).mtu.map(|m| (m, node.shown(inside)))
                }),
            };
            let jobs =
                hosts.iter().map(|h| Job::Mtu(mtu::Spec { host: *h, max: *max, cni_mtu: cni_mtu.clone() })).collect();
            Ok((jobs, CertOptions::default()))
        }
        CheckCommand::Vxlan { peers, port, vni, device } => {
            let jobs = peers
                .iter()
                .map(|p| Job::Vxlan(vxlan::Spec { peer: *p, port: *port, vni: *vni, device: device.clone() }))
                .collect();
            Ok((jobs, CertOptions::default()))
        }
        CheckCommand::Cert { targets, node_pki, server_name, ca, warn_days } => {
            let roots = ca.as_deref().map(discovery::certs::load_pem).transpose()?.map(Arc::new);
            let mut jobs = Vec::new();
            for t in targets {
                let path = Path::new(t);
                if path.is_file() {
                    // PEM first; a file without certificates may be a kubeconfig.
                    jobs.push(match discovery::certs::load_pem(path) {
                        Ok(certs) => Job::CertFile(path.to_path_buf(), certs),
                        Err(_) => Job::Kubeconfig(
                            path.to_path_buf(),
                            discovery::certs::kubeconfig_items(path, &discovery::host_root(host_root), None)?,
                        ),
                    });
                } else if path.exists() || t.starts_with('/') || t.starts_with('.') {
                    return Err(format!("{t}: not a readable file").into());
                } else {
                    jobs.push(Job::CertEndpoint(Target::parse(t)?));
                }
            }
            if *node_pki {
                jobs.extend(node_pki_jobs(&discovery::host_root(host_root)));
            }
            Ok((jobs, CertOptions { server_name: server_name.clone(), roots, warn_days: *warn_days }))
        }
    }
}

fn service_jobs(
    services: &[String],
    udp: bool,
    (probes, node_port_peers): (u16, u16),
    host_root: Option<&Path>,
    kubeconfig: Option<&Path>,
) -> AnyResult<Vec<Job>> {
    let mut jobs = Vec::new();
    for s in services {
        let wanted = discovery::services::Wanted::parse(s)?;
        jobs.push(Job::Service(Box::new(crate::probes::service::Spec {
            wanted,
            l4: udp.then_some(discovery::conntrack::L4::Udp),
            probes: usize::from(probes),
            node_port_peers: usize::from(node_port_peers),
            discover: Some(dns::Discover {
                kubeconfig: kubeconfig.map(Path::to_path_buf),
                host_root: discovery::host_root(host_root),
                client: None,
            }),
        })));
    }
    Ok(jobs)
}

/// What a command line asks for, read and checked before anything touches the system.
enum Work {
    Checks(Vec<Job>, CertOptions),
    Capture(capture::filter::Filter, Option<Duration>),
    Node(CertOptions, bool),
    /// Source, destination, the peer agent's port.
    Path(String, jobs::path::Destination, Option<u16>),
    Agent(Box<crate::agent::Options>),
}

fn run(cli: &Cli) -> AnyResult<u8> {
    let work = match &cli.command {
        Command::Check(check) => {
            let (jobs, cert_options) = plan(check, cli.host_root.as_deref(), cli.kubeconfig.as_deref())?;
            Work::Checks(jobs, cert_options)
        }
        Command::Node(NodeArgs { warn_days, one_by_one }) => {
            Work::Node(CertOptions { warn_days: *warn_days, ..CertOptions::default() }, *one_by_one)
        }
        Command::Path(PathArgs { from, destination, peer_agent_port, no_peer_agent }) => {
            let dst = jobs::path::Destination::parse(destination)?;
            Work::Path(from.clone(), dst, (!no_peer_agent).then_some(*peer_agent_port))
        }
        Command::Npd { .. } => return Err("npd runs node, path or check".into()),
        Command::Completions { .. } | Command::Man { .. } => {
            return Err("completions and man pages need no probe".into());
        }
        Command::Agent(_) | Command::Capture { .. } if cli.output == Format::Npd => {
            return Err("the npd format needs a command with a verdict (node, path or check)".into());
        }
        Command::Agent(a) => Work::Agent(Box::new(agent_options(cli, a))),
        Command::Capture { duration, hosts, ports, reasons, exclude_reasons } => {
            let filter = capture::filter::Filter {
                hosts: hosts.clone(),
                ports: ports.clone(),
                reasons: reasons.clone(),
                exclude_reasons: exclude_reasons.clone(),
            };
            Work::Capture(filter, *duration)
        }
    };
    if let Some(ns) = &cli.netns {
        // Before the runtime starts: its threads inherit the namespace.
        netns::enter(ns)?;
    }
    // `check vxlan --port` is also the port whose payload capture decodes.
    let vxlan_port = match &cli.command {
        Command::Check(CheckCommand::Vxlan { port, .. }) => *port,
        _ => cli.vxlan_port,
    };
    // Checks, `node` and `path` use only their probes' own flows: the kernel filters on them
    // and counts the rest. `netcheck capture` streams every event.
    let watched_only = !matches!(work, Work::Capture(..));
    let opts = capture::Options { vxlan_port, watched_only, snat_candidates: true };
    match work {
        Work::Checks(jobs, cert_options) => run_checks(cli, opts, &cert_options, async { jobs }, false),
        Work::Node(cert_options, one_by_one) => {
            let root = discovery::host_root(cli.host_root.as_deref());
            let node = discovery::node_root::NodeRoot::open(&root).map_err(|e| format!("host root: {e}"))?;
            let files = discovery::node_files::read(&node);
            if let Some(why) = files.not_a_node() {
                return Err(why.into());
            }
            let plan = async {
                node_checks::plan_read(
                    &node,
                    files,
                    cli.kubeconfig.as_deref(),
                    cli.timeout,
                    None,
                    node_checks::ApiNodes::List,
                )
                .await
                .jobs
            };
            run_checks(cli, opts, &cert_options, plan, one_by_one)
        }
        Work::Path(from, dst, peer_agent) => run_path(cli, opts, &from, dst, peer_agent),
        Work::Agent(options) => crate::agent::run(&options),
        Work::Capture(filter, duration) => {
            let capture = Capture::start(opts).map_err(|u| format!("capture unavailable: {}", u.detail))?;
            stream(&capture, duration, &filter, cli.output)?;
            Ok(0)
        }
    }
}

fn agent_options(cli: &Cli, a: &AgentArgs) -> crate::agent::Options {
    let node_name = a.node_name.clone().unwrap_or_else(|| {
        nix::unistd::gethostname().map_or_else(|_| "unknown".into(), |h| h.to_string_lossy().into_owned())
    });
    crate::agent::Options {
        interval: a.interval,
        jitter: a.jitter,
        listen: a.listen,
        peers: a.peers,
        rotate: a.rotate,
        node_name,
        warn_days: a.warn_days,
        window: a.events_window,
        cycles: a.cycles,
        timeout: cli.timeout,
        no_capture: cli.no_capture,
        vxlan_port: cli.vxlan_port,
        host_root: discovery::host_root(cli.host_root.as_deref()),
        kubeconfig: cli.kubeconfig.clone(),
        node_condition: !a.no_node_condition,
        access: match (a.no_auth, a.protect_metrics) {
            (true, _) => crate::agent::auth::Access::Open,
            (false, true) => crate::agent::auth::Access::TokenWithMetrics,
            (false, false) => crate::agent::auth::Access::Token,
        },
    }
}

/// Plans (inside the runtime: discovery may ask netlink or the API), runs the jobs with capture
/// attached, prints the report; the exit code says whether a check failed.
fn run_checks(
    cli: &Cli,
    opts: capture::Options,
    cert_options: &CertOptions,
    plan: impl std::future::Future<Output = Vec<Job>>,
    one_by_one: bool,
) -> AnyResult<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (capture, status) = start_capture(cli.no_capture, opts);
    let checks =
        runtime.block_on(async { run_jobs(plan.await, cert_options, cli.timeout, capture.clone(), one_by_one).await });
    let status = capture.as_ref().map_or(status, |c| c.status());
    let mut report = Document::new(checks, status);
    if matches!(cli.command, Command::Node(_)) {
        report.problems = verdict::problems::problems(&report.checks);
    }
    print_report(&report, cli.output, cli.npd_max)?;
    Ok(report.exit_code())
}

/// `netcheck path`: the path's check with its hops, and the verdict line.
fn run_path(
    cli: &Cli,
    opts: capture::Options,
    from: &str,
    dst: jobs::path::Destination,
    peer_agent: Option<u16>,
) -> AnyResult<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let host_root = discovery::host_root(cli.host_root.as_deref());
    let request = jobs::path::Request { from, dst, peer_agent, host_root, kubeconfig: cli.kubeconfig.clone() };
    // Before capture loads: a source or a Service that cannot be found is a usage error.
    let spec = runtime.block_on(jobs::path::plan(request, cli.timeout))?;
    let (capture, status) = start_capture(cli.no_capture, opts);
    let (check, line) = runtime.block_on(jobs::path::run(spec, cli.timeout, capture.clone()))?;
    let status = capture.as_ref().map_or(status, |c| c.status());
    let mut report = Document::new(vec![check], status);
    report.verdict = Some(line);
    print_report(&report, cli.output, cli.npd_max)?;
    Ok(report.exit_code())
}

fn print_report(report: &Document, format: Format, npd_max: usize) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", report.to_json()),
        Format::Npd => writeln!(out, "{}", report.to_npd(npd_max)),
        Format::Text => write!(out, "{}", report.to_text(std::io::stdout().is_terminal())),
    }
}

/// `netcheck capture`: one line per event as it happens (JSON Lines with `-o json`).
fn stream(
    capture: &Capture,
    duration: Option<Duration>,
    filter: &capture::filter::Filter,
    format: Format,
) -> std::io::Result<()> {
    let rx = capture.subscribe();
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())?;
    }
    let started = Instant::now();
    let clock = Clock::now();
    let mut out = std::io::stdout().lock();
    // On stderr, so stdout stays one event per line; it also tells scripts capture is attached.
    eprintln!("netcheck: capturing drops, resets and ICMP errors (Ctrl-C to stop)");
    for l in capture.status().limits {
        eprintln!("netcheck: capture limit: {}", l.detail);
    }
    loop {
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) || duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) if filter.matches(&ev) => print_event(&mut out, &ev, &clock, format)?,
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let counters = capture.counters();
    if counters.lost > 0 {
        eprintln!("netcheck: {} kernel events lost (ring buffer full)", counters.lost);
    }
    Ok(())
}

fn print_event(out: &mut impl Write, ev: &KernelEvent, clock: &Clock, format: Format) -> std::io::Result<()> {
    let at = clock.wall(ev.ts_ns);
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(ev).unwrap_or_default();
            v["time"] = humantime::format_rfc3339_millis(at).to_string().into();
            writeln!(out, "{v}")
        }
        Format::Text | Format::Npd => writeln!(out, "{} {}", humantime::format_rfc3339_millis(at), ev.summary()),
    }?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_shape() {
        let cli =
            Cli::try_parse_from(["netcheck", "-o", "json", "check", "tcp", "10.0.0.1:80", "--timeout", "2s"]).unwrap();
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.timeout, Duration::from_secs(2));
        assert!(Cli::try_parse_from(["netcheck", "check", "tcp"]).is_err());
        assert!(Cli::try_parse_from(["netcheck", "-o", "yaml", "check", "tcp", "a:1"]).is_err());
        let npd = Cli::try_parse_from(["netcheck", "npd", "--max-output", "60", "check", "tcp", "a:1"]).unwrap();
        assert!(matches!(npd.command, Command::Npd { max_output: 60, command: NpdCommand::Check(_) }));
        assert!(Cli::try_parse_from(["netcheck", "npd", "capture"]).is_err());
    }
}
