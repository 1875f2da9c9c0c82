//! The `netcheck` command line. Exit codes: 0 nothing failed, 1 a check failed, 2 usage or
//! environment error.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};

use crate::{
    capture::{self, Capture, event::KernelEvent},
    correlation, discovery,
    error::AnyResult,
    jobs::{CertOptions, Job, node, node_pki_jobs, run_jobs, start_capture},
    netns,
    output::{Format, Report},
    probes::{Target, cert, dns, kubelet, mtu, vxlan},
    time::{Clock, parse_duration},
};

#[derive(Debug, Parser)]
#[command(
    name = "netcheck",
    version,
    about = "Where and why a Kubernetes network path is broken, with kernel evidence."
)]
pub struct Cli {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text", global = true)]
    pub output: Format,
    /// Run from inside this network namespace: a name under /var/run/netns or a path such as /proc/PID/ns/net.
    #[arg(long, global = true, value_name = "NAME|PATH")]
    pub netns: Option<String>,
    /// Deadline of each probe (e.g. 3s, 500ms; a bare number is seconds).
    #[arg(long, global = true, default_value = "3s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,
    /// Do not load the eBPF capture (probes run without kernel evidence).
    #[arg(long, global = true)]
    pub no_capture: bool,
    /// The node's root filesystem for discovery (default: /host when it holds one, as in a
    /// `kubectl debug node` pod, else /).
    #[arg(long, global = true, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// Kubeconfig for the Kubernetes API (default: $KUBECONFIG, ~/.kube/config, or the pod's
    /// service account). The API is optional: without it discovery says what it could not learn.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// UDP port decoded as VXLAN in kernel evidence (flannel: 8472).
    #[arg(long, global = true, default_value_t = 8472, value_name = "PORT")]
    pub vxlan_port: u16,
    #[command(subcommand)]
    pub command: Command,
    /// `npd --max-output`: the longest line the npd format prints.
    #[arg(skip = 80usize)]
    pub npd_max: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run checks.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Every check for the node netcheck runs on, found by discovery and run concurrently:
    /// cluster DNS (clusterDNS from the kubelet config), the API server (from the kubelet's
    /// kubeconfig), the local kubelet, VXLAN, path MTU and kubelet of each peer (the VXLAN
    /// device's FDB and the API's nodes), the CNI setup, and every certificate in the node's
    /// PKI. Run it in the node's network namespace with the node's root at --host-root (/host
    /// in a `kubectl debug node` pod).
    Node(NodeArgs),
    /// Which hop of a path is broken and why: follows the packet from a pod's namespace (or
    /// the node) through veth, bridge, routing, the VXLAN overlay and the underlay to the
    /// destination using the kernel's tables, tests each hop it can while capture runs, and
    /// places every drop, reset and ICMP error on its hop. Run it on the source's node.
    Path(PathArgs),
    /// node-problem-detector custom plugin mode: runs the command after it (`npd node`,
    /// `npd path ...`, `npd check ...`) and prints one line for NPD's condition message, the
    /// first problem or that all passed, cut to `--max-output` bytes. Exit 0 OK, 1 problem,
    /// 2 unknown (usage or environment error), as NPD's custom plugin protocol wants.
    Npd {
        /// NPD's `max_output_length` (its default is 80).
        #[arg(long, default_value_t = 80, value_name = "BYTES")]
        max_output: usize,
        #[command(subcommand)]
        command: NpdCommand,
    },
    /// Run continuously, as the DaemonSet does: the node check every --interval against k
    /// peers sampled by rendezvous hashing, capture attached the whole time (drops counted in
    /// the kernel), metrics and recent kernel events served over HTTP. Exits 0 on SIGTERM.
    Agent(AgentArgs),
    /// Stream packet drops, TCP resets and ICMP errors live, with kernel reason names.
    Capture {
        /// Stop after this long (default: until interrupted).
        #[arg(long, value_parser = parse_duration, value_name = "DUR")]
        duration: Option<Duration>,
        /// Only events whose flow (or VXLAN inner flow) has this address (repeatable).
        #[arg(long = "host", value_name = "IP")]
        hosts: Vec<std::net::IpAddr>,
        /// Only events whose flow (or VXLAN inner flow) has this port (repeatable).
        #[arg(long = "port", value_name = "PORT")]
        ports: Vec<u16>,
        /// Only these reasons, as the kernel names them, e.g. NETFILTER_DROP (repeatable).
        #[arg(long = "reason", value_name = "NAME")]
        reasons: Vec<String>,
        /// Hide these reasons, e.g. NOT_SPECIFIED (repeatable).
        #[arg(long = "exclude-reason", value_name = "NAME")]
        exclude_reasons: Vec<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Warn when a certificate expires within this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub warn_days: u32,
    /// Run the checks one after another instead of at once (to measure what concurrency
    /// saves; see `cargo xtask bench`).
    #[arg(long, hide = true)]
    pub one_by_one: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PathArgs {
    /// Where the packet starts: a pod's IP on this node, a pod's network namespace (a name under
    /// /var/run/netns or /run/netns, as CNI plugins create them, or /proc/PID/ns/net) or `host`
    /// (the namespace netcheck runs in).
    #[arg(long, default_value = "host", value_name = "POD_IP|NETNS|host")]
    pub from: String,
    /// The destination: an IPv4 address, with :PORT for a TCP connect as the final probe
    /// (without a port, an ICMP echo).
    #[arg(value_name = "DST[:PORT]")]
    pub destination: String,
    /// The port of the netcheck agent (DaemonSet) on the destination's node: asked for the
    /// drops its kernel saw of this run's VXLAN packets, which are placed on the peer's hops.
    #[arg(long, default_value_t = 9472, value_name = "PORT")]
    pub peer_agent_port: u16,
    /// Do not ask the peer node's agent.
    #[arg(long)]
    pub no_peer_agent: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Time between probe cycles.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    pub interval: Duration,
    /// Largest random delay added to each cycle's start, as a fraction of the interval (agents
    /// started together then do not probe in lockstep).
    #[arg(long, default_value_t = 0.2, value_parser = parse_fraction, value_name = "0..1")]
    pub jitter: f64,
    /// Where to serve /metrics, /healthz, /readyz, /events and /report.
    #[arg(long, default_value = "0.0.0.0:9472", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Peers probed per cycle (k), chosen by rendezvous hashing on node names.
    #[arg(long, default_value_t = 3, value_name = "K")]
    pub peers: usize,
    /// How often the sample of peers changes (the same epochs on every node).
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DUR")]
    pub rotate: Duration,
    /// This node's name, as the API knows it (the DaemonSet passes spec.nodeName; default: the host name).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Warn when a certificate expires within this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    pub warn_days: u32,
    /// How long kernel events are kept for /events.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DUR")]
    pub events_window: Duration,
    /// Stop after this many cycles (tests and benchmarks).
    #[arg(long, hide = true)]
    pub cycles: Option<u64>,
    /// Do not write the NetworkPathProblem node condition and its Events (the API is then only read).
    #[arg(long)]
    pub no_node_condition: bool,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("must be a number from 0 to 1".to_string()),
    }
}

/// What `npd` runs: the commands that end in a verdict.
#[derive(Debug, Subcommand)]
pub enum NpdCommand {
    /// `netcheck node`.
    Node(NodeArgs),
    /// `netcheck path`.
    Path(PathArgs),
    /// `netcheck check ...`.
    #[command(subcommand)]
    Check(CheckCommand),
}

impl From<NpdCommand> for Command {
    fn from(c: NpdCommand) -> Self {
        match c {
            NpdCommand::Node(a) => Self::Node(a),
            NpdCommand::Path(a) => Self::Path(a),
            NpdCommand::Check(c) => Self::Check(c),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// TCP connect to each HOST:PORT.
    Tcp {
        #[arg(required = true, value_name = "HOST:PORT")]
        targets: Vec<String>,
    },
    /// Kubelet reachability: TCP, TLS, the serving certificate for the address used, and
    /// /healthz on the local healthz port when the address is this node's.
    Kubelet {
        #[arg(required = true, value_name = "NODE_IP|NODE_NAME")]
        nodes: Vec<String>,
        #[arg(long, default_value_t = kubelet::PORT)]
        port: u16,
        /// The kubelet's local health port (healthzBindAddress, on 127.0.0.1).
        #[arg(long, default_value_t = kubelet::HEALTHZ_PORT)]
        healthz_port: u16,
        /// PEM file of the CA that signs kubelet serving certificates; without it trust is not judged.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Warn when the serving certificate expires within this many days.
        #[arg(long, default_value_t = 30, value_name = "DAYS")]
        warn_days: u32,
        /// Resolve a NODE_NAME the way a pod does, with this resolv.conf (cluster DNS, search
        /// list), instead of the system resolver.
        #[arg(long, value_name = "FILE")]
        resolv_conf: Option<PathBuf>,
    },
    /// DNS the way a pod resolves (resolv.conf search list and ndots), then every rung of the
    /// ladder asked directly over UDP and TCP: servers (kube-dns Service IP), CoreDNS
    /// endpoints, upstream resolvers.
    Dns {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Also ask this server as a rung (resolv.conf's nameservers always are) (repeatable).
        #[arg(long = "server", value_name = "IP")]
        servers: Vec<std::net::IpAddr>,
        /// A CoreDNS endpoint (pod IP) behind the Service, asked directly (repeatable; default:
        /// the kube-dns Service's EndpointSlices, when the API is reachable).
        #[arg(long = "endpoint", value_name = "IP")]
        endpoints: Vec<std::net::IpAddr>,
        /// An upstream resolver CoreDNS forwards to; asked for names outside the cluster domain
        /// (repeatable; default: the nameservers of the node's resolv.conf under --host-root).
        #[arg(long = "upstream", value_name = "IP")]
        upstreams: Vec<std::net::IpAddr>,
        /// The resolver configuration to apply.
        #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
        resolv_conf: PathBuf,
        /// Record type to ask for.
        #[arg(long = "type", default_value = "A", value_name = "TYPE")]
        rtype: String,
        /// The cluster's DNS domain (kubelet clusterDomain): its names are not asked upstream.
        #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
        cluster_domain: String,
    },
    /// Path MTU to each host: the largest packet that really gets through (DF pings searched
    /// to the byte), a black hole told apart from a smaller MTU the path signals.
    Mtu {
        #[arg(required = true, value_name = "IPV4")]
        hosts: Vec<std::net::Ipv4Addr>,
        /// Largest size to try (default: the MTU of the interface the route uses).
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(84..))]
        max: Option<u16>,
        /// flannel's subnet.env, for the MTU the CNI configured (default: run/flannel/subnet.env
        /// under the host root, when it exists).
        #[arg(long, value_name = "FILE")]
        subnet_env: Option<PathBuf>,
    },
    /// The VXLAN datapath to each peer node: the local device's FDB and neighbour entries for
    /// it, then a real encapsulated echo to the peer's VTEP, answered through the overlay.
    /// Run it in a node's network namespace.
    Vxlan {
        #[arg(required = true, value_name = "PEER_UNDERLAY_IP")]
        peers: Vec<std::net::Ipv4Addr>,
        /// The VXLAN UDP port (flannel: 8472); also the port capture decodes.
        #[arg(long, default_value_t = 8472)]
        port: u16,
        /// The VNI the device must have (flannel: 1).
        #[arg(long, value_name = "N")]
        vni: Option<u32>,
        /// The VXLAN device (default: the only one, or flannel.1).
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// Certificates of TLS endpoints (HOST:PORT), PEM files and kubeconfigs: expiry, name, trust.
    Cert {
        #[arg(required_unless_present = "node_pki", value_name = "HOST:PORT|FILE|KUBECONFIG")]
        targets: Vec<String>,
        /// Also every certificate and kubeconfig in the node's well-known places (kubeadm,
        /// kubelet, k3s) under the host root.
        #[arg(long)]
        node_pki: bool,
        /// Name the endpoint's certificate must be valid for (default: the host dialled).
        #[arg(long, value_name = "NAME")]
        server_name: Option<String>,
        /// PEM file of the CA(s) to trust; without it trust is not judged.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Warn when a certificate expires within this many days.
        #[arg(long, default_value_t = 30, value_name = "DAYS")]
        warn_days: u32,
    },
}

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
            let roots = ca.as_deref().map(cert::load_pem).transpose()?.map(Arc::new);
            let resolver = resolv_conf.as_deref().map(dns::ResolvConf::read).transpose()?.map(Arc::new);
            let mut jobs = Vec::new();
            for node in nodes {
                let host = if node.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{node}]") } else { node.clone() };
                let target = Target::parse(&format!("{host}:{port}"))?;
                jobs.push(Job::Kubelet { target, healthz_port: *healthz_port, resolver: resolver.clone() });
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
                    }),
                    ..dns::Spec::new(name, conf.clone())
                })));
            }
            Ok((jobs, CertOptions::default()))
        }
        CheckCommand::Mtu { hosts, max, subnet_env } => {
            let default = discovery::host_root(host_root).join(discovery::flannel::SUBNET_ENV);
            let path = subnet_env.clone().or_else(|| default.exists().then_some(default));
            let cni_mtu = match path {
                Some(p) => discovery::flannel::SubnetEnv::read(&p)?.mtu.map(|m| (m, p)),
                None => None,
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
            let roots = ca.as_deref().map(cert::load_pem).transpose()?.map(Arc::new);
            let mut jobs = Vec::new();
            for t in targets {
                let path = Path::new(t);
                if path.is_file() {
                    // PEM first; a file without certificates may be a kubeconfig.
                    jobs.push(match cert::load_pem(path) {
                        Ok(certs) => Job::CertFile(path.to_path_buf(), certs),
                        Err(_) => Job::Kubeconfig(
                            path.to_path_buf(),
                            cert::kubeconfig_items(path, &discovery::host_root(host_root))?,
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

/// What a command line asks for, read and checked before anything touches the system.
enum Work {
    Checks(Vec<Job>, CertOptions),
    Capture(capture::filter::Filter, Option<Duration>),
    Node(CertOptions, bool),
    /// Source, destination, its port, the peer agent's port.
    Path(String, std::net::Ipv4Addr, Option<u16>, Option<u16>),
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
            let (dst, port) = crate::probes::path::parse_destination(destination)?;
            Work::Path(from.clone(), dst, port, (!no_peer_agent).then_some(*peer_agent_port))
        }
        Command::Npd { .. } => return Err("npd runs node, path or check".into()),
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
    let opts = capture::Options { vxlan_port, watched_only: false };
    match work {
        Work::Checks(jobs, cert_options) => run_checks(cli, opts, &cert_options, async { jobs }, false),
        Work::Node(cert_options, one_by_one) => {
            let root = discovery::host_root(cli.host_root.as_deref());
            let plan = async { node::plan(&root, cli.kubeconfig.as_deref(), cli.timeout, None).await.jobs };
            run_checks(cli, opts, &cert_options, plan, one_by_one)
        }
        Work::Path(from, dst, port, peer_agent) => run_path(cli, opts, &from, (dst, port), peer_agent),
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
    let mut report = Report::new(checks, status);
    if matches!(cli.command, Command::Node(_)) {
        report.problems = correlation::node::problems(&report.checks);
    }
    print_report(&report, cli.output, cli.npd_max)?;
    Ok(report.exit_code())
}

/// `netcheck path`: the path's check with its hops, and the verdict line.
fn run_path(
    cli: &Cli,
    opts: capture::Options,
    from: &str,
    (dst, port): (std::net::Ipv4Addr, Option<u16>),
    peer_agent: Option<u16>,
) -> AnyResult<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let root = discovery::host_root(cli.host_root.as_deref());
    // Before capture loads: a source that cannot be found is a usage error.
    let (source, label) = runtime.block_on(crate::probes::path::resolve_source(from, &root))?;
    let api = Some(crate::probes::path::ApiSpec { kubeconfig: cli.kubeconfig.clone(), host_root: root.clone() });
    let spec = crate::probes::path::Spec { from: source, label, dst, port, api, peer_agent };
    let (capture, status) = start_capture(cli.no_capture, opts);
    let capture_on = capture.is_some();
    let report = runtime.block_on(crate::probes::path::run(spec, cli.timeout, capture.clone()))?;
    let node_netns = netns::current_inode()
        .and_then(|i| u32::try_from(i).ok())
        .map_or_else(|| "host".to_string(), |i| netns::NetnsNames::scan().name(i));
    let (check, line) = correlation::path::verdict(&report, capture_on, &node_netns);
    let status = capture.as_ref().map_or(status, |c| c.status());
    let mut report = Report::new(vec![check], status);
    report.verdict = Some(line);
    print_report(&report, cli.output, cli.npd_max)?;
    Ok(report.exit_code())
}

fn print_report(report: &Report, format: Format, npd_max: usize) -> std::io::Result<()> {
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
