//! `kubectl netcheck`: netcheck on a node of the cluster kubectl points at, through
//! `kubectl debug node/<node>` (a pod in the node's network, PID and IPC namespaces with its
//! root filesystem at /host, which netcheck discovers by itself).
//!
//! Installed as `kubectl-netcheck` anywhere on PATH, kubectl runs it for `kubectl netcheck ...`.
//! It builds the `kubectl debug` command line and runs kubectl with it (`--dry-run` prints it).

use std::{os::unix::process::CommandExt as _, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

/// The image `kubectl netcheck` runs unless told otherwise (`cargo xtask image` builds it).
const DEFAULT_IMAGE: &str = concat!("netcheck:", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Parser)]
#[command(name = "kubectl-netcheck", version, about = "Run netcheck on a node through `kubectl debug node/<node>`.")]
struct Cli {
    /// The image holding netcheck.
    #[arg(long, global = true, default_value = DEFAULT_IMAGE, env = "KUBECTL_NETCHECK_IMAGE")]
    image: String,
    /// `sysadmin` (privileged: kernel evidence from eBPF capture, pod namespaces) or
    /// `general` (unprivileged: the probes run, capture says which capabilities it lacked).
    #[arg(long, global = true, value_enum, default_value_t = Profile::Sysadmin)]
    profile: Profile,
    /// kubectl context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the debug pod.
    #[arg(long, short = 'n', global = true)]
    namespace: Option<String>,
    /// The kubectl binary.
    #[arg(long, global = true, default_value = "kubectl", hide = true)]
    kubectl: String,
    /// Print the kubectl command instead of running it.
    #[arg(long, global = true)]
    dry_run: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    Sysadmin,
    General,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `netcheck node` on NODE: every check for that node.
    Node {
        node: String,
        /// More netcheck arguments (after `--`), e.g. `-- -o json --timeout 5s`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// `netcheck path` on NODE: which hop from a pod on NODE to DST is broken.
    Path {
        node: String,
        /// The source: a pod's IP on NODE (default: the node itself).
        #[arg(long, default_value = "host")]
        from: String,
        /// DST[:PORT]
        destination: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A shell on NODE in the netcheck image (busybox), netcheck on its PATH.
    Shell { node: String },
    /// Print the shell completion script of kubectl-netcheck.
    Completions {
        #[arg(value_enum)]
        shell: netcheck::cli::docs::Shell,
    },
    /// Write a man page per command into DIR (kubectl-netcheck.1, kubectl-netcheck-path.1, ...).
    Man {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

/// The kubectl arguments for a command line.
fn kubectl_args(cli: &Cli) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &cli.context {
        out.extend(["--context".to_string(), c.clone()]);
    }
    if let Some(n) = &cli.namespace {
        out.extend(["--namespace".to_string(), n.clone()]);
    }
    let (node, netcheck): (&str, Vec<String>) = match &cli.command {
        Command::Node { node, args } => (node, [vec!["netcheck".into()], args.clone(), vec!["node".into()]].concat()),
        Command::Path { node, from, destination, args } => {
            let path = vec!["path".into(), "--from".into(), from.clone(), destination.clone()];
            (node, [vec!["netcheck".into()], args.clone(), path].concat())
        }
        Command::Shell { node } => (node, vec!["sh".into()]),
        // Answered by `main` without kubectl.
        Command::Completions { .. } | Command::Man { .. } => return Vec::new(),
    };
    let profile = match cli.profile {
        Profile::Sysadmin => "sysadmin",
        Profile::General => "general",
    };
    out.extend([
        "debug".to_string(),
        format!("node/{node}"),
        "--stdin".into(),
        "--tty".into(),
        format!("--profile={profile}"),
        format!("--image={}", cli.image),
        "--".into(),
    ]);
    out.extend(netcheck);
    out
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match &cli.command {
        Command::Completions { shell } => {
            netcheck::cli::docs::completions(<Cli as clap::CommandFactory>::command(), *shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            return match netcheck::cli::docs::man_pages(<Cli as clap::CommandFactory>::command(), dir) {
                Ok(pages) => {
                    println!("{} man pages in {}", pages.len(), dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kubectl-netcheck: man pages into {}: {e}", dir.display());
                    ExitCode::from(2)
                }
            };
        }
        _ => {}
    }
    let args = kubectl_args(&cli);
    if cli.dry_run {
        println!("{} {}", cli.kubectl, args.join(" "));
        return ExitCode::SUCCESS;
    }
    // Only returns when kubectl could not be started.
    let e = std::process::Command::new(&cli.kubectl).args(&args).exec();
    eprintln!("kubectl-netcheck: cannot run {}: {e}", cli.kubectl);
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> String {
        kubectl_args(&Cli::try_parse_from(std::iter::once("kubectl-netcheck").chain(line.iter().copied())).unwrap())
            .join(" ")
    }

    #[test]
    fn node_path_and_shell_become_kubectl_debug() {
        let image = format!("--image={DEFAULT_IMAGE}");
        assert_eq!(
            args(&["node", "w1"]),
            format!("debug node/w1 --stdin --tty --profile=sysadmin {image} -- netcheck node")
        );
        assert_eq!(
            args(&["--profile", "general", "--context", "prod", "node", "w1", "--", "-o", "json"]),
            format!("--context prod debug node/w1 --stdin --tty --profile=general {image} -- netcheck -o json node")
        );
        assert_eq!(
            args(&["path", "w2", "--from", "10.244.1.5", "10.244.2.7:8080", "--image", "r/n:1"]),
            "debug node/w2 --stdin --tty --profile=sysadmin --image=r/n:1 -- netcheck path --from 10.244.1.5 10.244.2.7:8080"
        );
        assert_eq!(
            args(&["shell", "w1", "-n", "debug"]),
            format!("--namespace debug debug node/w1 --stdin --tty --profile=sysadmin {image} -- sh")
        );
        assert!(Cli::try_parse_from(["kubectl-netcheck", "node"]).is_err(), "a node is required");
        assert!(Cli::try_parse_from(["kubectl-netcheck", "--profile", "root", "node", "w1"]).is_err());
    }
}
