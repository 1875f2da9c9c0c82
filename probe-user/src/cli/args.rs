//! The command line's shape (clap): every command, argument and default. The deploy test parses
//! the DaemonSet's arguments with these types.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use probe_common::FLANNEL_VXLAN_PORT;

use crate::{
    output::Format,
    probes::kubelet,
    time::{parse_duration, parse_interval},
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
    #[arg(long, global = true, default_value_t = FLANNEL_VXLAN_PORT, value_name = "PORT")]
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
    /// Print the shell completion script (bash: `source <(netcheck completions bash)`, or save it
    /// as /usr/share/bash-completion/completions/netcheck).
    Completions {
        #[arg(value_enum)]
        shell: super::docs::Shell,
    },
    /// Write a man page per command into DIR (netcheck.1, netcheck-check-tcp.1, ...).
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
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
    /// (without a port, an ICMP echo), or a Service as NAMESPACE/NAME[:PORT]. To a Service IP
    /// and port the path shows the node's DNAT as a hop and follows the endpoint it chose.
    #[arg(value_name = "DST[:PORT]|NAMESPACE/NAME[:PORT]")]
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
    /// Time between probe cycles (at least 1s).
    #[arg(long, default_value = "30s", value_parser = parse_interval, value_name = "DUR")]
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
    /// Require a bearer token on /metrics too (checked as on /events and /report: TokenReview,
    /// then SubjectAccessReview of `get` on the path).
    #[arg(long)]
    pub protect_metrics: bool,
    /// Serve /events and /report to anyone who reaches the port (they hold the node's traffic
    /// and setup): only where the port is closed off by other means.
    #[arg(long, conflicts_with = "protect_metrics")]
    pub no_auth: bool,
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
    /// A Service port through kube-proxy, as an operator walks it: the Service and its
    /// EndpointSlices in the API, kube-proxy's health and mode, its rules for the port (needs
    /// CAP_NET_ADMIN), the Service IP probed several times with the endpoint conntrack says each
    /// probe was DNATed to (CAP_NET_ADMIN), each endpoint directly, for UDP the Service IP's
    /// conntrack entries that point at no endpoint, and a NodePort on this node and on other
    /// nodes' InternalIPs. Run it on a node (its network namespace).
    Service {
        /// NAMESPACE/NAME[:PORT] (the port by name or number; none: the Service's only port) or
        /// SERVICE_IP:PORT.
        #[arg(required = true, value_name = "NAMESPACE/NAME[:PORT]|VIP:PORT")]
        services: Vec<String>,
        /// Probe over UDP (with a DNS query) rather than the Service port's protocol.
        #[arg(long)]
        udp: bool,
        /// How many times the Service IP is probed (kube-proxy picks an endpoint per connection).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64), value_name = "N")]
        probes: u16,
        /// A NodePort Service: other nodes whose NodePort is probed besides this node's (nodes with
        /// ready endpoints first, then by name; 0: this node only).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(0..=256), value_name = "N")]
        nodeport_peers: u16,
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
        #[arg(long, default_value_t = FLANNEL_VXLAN_PORT)]
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
