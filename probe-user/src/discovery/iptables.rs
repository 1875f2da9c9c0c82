//! The node's iptables rules in both backends: the nf_tables one (`iptables-nft-save`, the
//! default of Debian 11+, RHEL 8+, Ubuntu 21.04+) and the x_tables one (`iptables-legacy-save`).
//! Both hook into the same netfilter hooks, so a packet must get through each backend's chains;
//! `iptables` itself shows only one of them. Reading either needs CAP_NET_ADMIN
//! (`nfnetlink_rcv` acks -EPERM without it, net/netfilter/nfnetlink.c; x_tables' getsockopt
//! checks it in `do_ipt_get_ctl`, net/ipv4/netfilter/ip_tables.c).
//!
//! The tools are run, not reimplemented: the nf_tables rule bytecode that iptables-nft writes is
//! only stable as iptables-nft itself reads it back, and the x_tables blob layout is the tool's.

use std::{path::PathBuf, time::Duration};

/// Where a Service's rules came from: one of iptables' two kernel interfaces, kube-proxy's
/// nftables mode (its own `ip kube-proxy` table, `discovery::kube_proxy_nft`), or its IPVS mode
/// (the IPVS table, `discovery::kube_proxy_ipvs`, over netlink or from procfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Legacy,
    NftablesMode,
    Ipvs { procfs: bool },
}

impl Backend {
    /// The tool's name, as operators type it.
    pub fn tool(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
            Self::NftablesMode => "nft (table ip kube-proxy)",
            Self::Ipvs { procfs: false } => "IPVS (generic netlink)",
            Self::Ipvs { procfs: true } => "IPVS (/proc/net/ip_vs)",
        }
    }

    /// The program that prints the rules.
    pub fn reader(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft-save",
            Self::Legacy => "iptables-legacy-save",
            Self::NftablesMode => "nft",
            Self::Ipvs { .. } => "ipvsadm -Ln",
        }
    }
}

/// One backend's tables, as its `-save` tool prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// A built-in chain's policy (`ACCEPT`, `DROP`); `None` for a user chain.
    pub policy: Option<String>,
    pub rules: Vec<Rule>,
}

/// A rule's arguments after `-A CHAIN`, unquoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub args: Vec<String>,
}

impl Rule {
    /// The value after `flag` (`-j`, `-s`, `-d`, ...), unless negated (`! -s X`).
    pub fn value(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|a| a == flag)?;
        if at > 0 && self.args[at - 1] == "!" {
            return None;
        }
        self.args.get(at + 1).map(String::as_str)
    }

    /// The jump target (`-j X`, or `-g X`).
    pub fn target(&self) -> Option<&str> {
        self.value("-j").or_else(|| self.value("-g"))
    }

    /// The flags the rule matches on besides `allowed` (and `-j`/`-g` with their targets, and
    /// comments): e.g. `["-i", "-m conntrack"]`.
    pub fn other_matches(&self, allowed: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut args = self.args.iter().peekable();
        while let Some(a) = args.next() {
            match a.as_str() {
                "-j" | "-g" => {
                    // The target and its options (`--to-destination`, `--reject-with`, ...).
                    break;
                }
                "-m" => {
                    let module = args.next().cloned().unwrap_or_default();
                    if module == "comment" {
                        args.next();
                        args.next();
                    } else if !allowed.contains(&format!("-m {module}").as_str()) {
                        out.push(format!("-m {module}"));
                    }
                }
                flag if flag.starts_with('-') && !allowed.contains(&flag) => out.push(flag.to_string()),
                _ => {}
            }
        }
        out
    }
}

impl Ruleset {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// How many rules it holds, in all tables.
    pub fn rule_count(&self) -> usize {
        self.tables.iter().flat_map(|t| &t.chains).map(|c| c.rules.len()).sum()
    }

    /// True when it holds no rule and every policy is ACCEPT: the backend is unused.
    pub fn is_empty(&self) -> bool {
        self.rule_count() == 0
            && self.tables.iter().flat_map(|t| &t.chains).all(|c| c.policy.as_deref().is_none_or(|p| p == "ACCEPT"))
    }
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// An `iptables-save` text that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {what}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
}

/// Parses `iptables-save` output: `*table`, `:CHAIN POLICY [p:b]`, `-A CHAIN args`, `COMMIT`.
pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
    let mut set = Ruleset::default();
    for (i, line) in text.lines().enumerate() {
        let err = |what: &str| ParseError { line: i + 1, what: what.to_string() };
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            set.tables.push(Table { name: name.to_string(), chains: Vec::new() });
            continue;
        }
        let table = set.tables.last_mut().ok_or_else(|| err("a chain or rule before any *table"))?;
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let name = words.next().ok_or_else(|| err("a chain without a name"))?;
            let policy = words.next().filter(|p| *p != "-").map(str::to_string);
            table.chains.push(Chain { name: name.to_string(), policy, rules: Vec::new() });
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let mut args = shlex::split(rest).ok_or_else(|| err("unbalanced quotes"))?;
            if args.is_empty() {
                return Err(err("-A without a chain"));
            }
            let chain = args.remove(0);
            // iptables-save declares every chain first; a rule for an undeclared one is kept
            // all the same.
            let at = if let Some(at) = table.chains.iter().position(|c| c.name == chain) {
                at
            } else {
                table.chains.push(Chain { name: chain, policy: None, rules: Vec::new() });
                table.chains.len() - 1
            };
            table.chains[at].rules.push(Rule { args });
        } else {
            return Err(err(&format!("not a table, chain or rule: {line:?}")));
        }
    }
    Ok(set)
}

/// Why a backend could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("{tool} is not installed here (looked in PATH)")]
    NoTool { tool: &'static str },
    #[error("reading iptables rules needs CAP_NET_ADMIN, which this process lacks")]
    NoCapability,
    #[error("{tool}: {why}")]
    Failed { tool: &'static str, why: String },
    #[error("{tool} printed what does not parse: {error}")]
    Unparsable { tool: &'static str, error: String },
}

/// Both backends of this network namespace, each read within `deadline`.
#[derive(Debug, Clone)]
pub struct Reading {
    pub nft: Result<Ruleset, ReadError>,
    pub legacy: Result<Ruleset, ReadError>,
}

/// Where x_tables lists the tables that exist in this namespace (procfs, per namespace): none
/// there means the legacy backend holds nothing, and its tool is not run (it would load the
/// `ip_tables` module).
const LEGACY_TABLES: &str = "/proc/net/ip_tables_names";

/// Reads both backends of the current network namespace.
pub async fn read(deadline: Duration) -> Reading {
    if !crate::privileges::net_admin() {
        return Reading { nft: Err(ReadError::NoCapability), legacy: Err(ReadError::NoCapability) };
    }
    let (nft, legacy) = tokio::join!(read_nft(deadline), read_legacy(deadline));
    Reading { nft, legacy }
}

async fn read_nft(deadline: Duration) -> Result<Ruleset, ReadError> {
    let tool = Backend::Nft.reader();
    match which("iptables-nft-save") {
        Some(exe) => save(tool, exe, &[], deadline).await,
        // Older distributions ship one `iptables-save`: it is the nf_tables one when its
        // version line says so ("iptables-save v1.8.9 (nf_tables)").
        None => match plain_save(deadline).await {
            Some((Backend::Nft, exe)) => save(tool, exe, &[], deadline).await,
            _ => Err(ReadError::NoTool { tool }),
        },
    }
}

async fn read_legacy(deadline: Duration) -> Result<Ruleset, ReadError> {
    let tool = Backend::Legacy.reader();
    let names = match std::fs::read_to_string(LEGACY_TABLES) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ruleset::default()),
        Err(e) => return Err(ReadError::Failed { tool, why: format!("{LEGACY_TABLES}: {e}") }),
    };
    let tables: Vec<&str> = names.split_whitespace().collect();
    if tables.is_empty() {
        return Ok(Ruleset::default());
    }
    let exe = match which("iptables-legacy-save") {
        Some(exe) => exe,
        None => match plain_save(deadline).await {
            Some((Backend::Legacy, exe)) => exe,
            _ => return Err(ReadError::NoTool { tool }),
        },
    };
    let mut set = Ruleset::default();
    for table in tables {
        set.tables.extend(save(tool, exe.clone(), &["-t", table], deadline).await?.tables);
    }
    Ok(set)
}

/// `iptables-save` and the backend its `--version` names.
async fn plain_save(deadline: Duration) -> Option<(Backend, PathBuf)> {
    let exe = which("iptables-save")?;
    let out = run(&exe, &["--version"], deadline).await.ok()?;
    let backend = if out.contains("(nf_tables)") {
        Backend::Nft
    } else if out.contains("(legacy)") {
        Backend::Legacy
    } else {
        return None;
    };
    Some((backend, exe))
}

async fn save(tool: &'static str, exe: PathBuf, args: &[&str], deadline: Duration) -> Result<Ruleset, ReadError> {
    let text = run(&exe, args, deadline).await.map_err(|why| ReadError::Failed { tool, why })?;
    parse(&text).map_err(|e| ReadError::Unparsable { tool, error: e.to_string() })
}

/// Runs a tool with a deadline; its stdout, or why not (its stderr's first line).
pub(crate) async fn run(exe: &std::path::Path, args: &[&str], deadline: Duration) -> Result<String, String> {
    let child =
        tokio::process::Command::new(exe).args(args).stdin(std::process::Stdio::null()).kill_on_drop(true).output();
    match tokio::time::timeout(deadline, child).await {
        Err(_) => Err(format!("no answer within {deadline:?}")),
        Ok(Err(e)) => Err(format!("cannot run {}: {e}", exe.display())),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!("{}: {}", out.status, err.lines().next().unwrap_or("no message")))
        }
    }
}

/// The first `name` in PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As iptables-nft-save 1.8.9 prints a flannel node whose FORWARD policy Docker set to DROP.
    const SAVED: &str = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Wed Dec  2 18:00:00 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:FLANNEL-FWD - [0:0]
-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT
COMMIT
# Completed on Wed Dec  2 18:00:00 2026
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully
COMMIT
";

    #[test]
    fn tables_chains_policies_and_rules() {
        let set = parse(SAVED).unwrap();
        let filter = set.table("filter").unwrap();
        assert_eq!(filter.chain("FORWARD").unwrap().policy.as_deref(), Some("DROP"));
        assert_eq!(filter.chain("FLANNEL-FWD").unwrap().policy, None);
        let fwd = &filter.chain("FLANNEL-FWD").unwrap().rules;
        assert_eq!(fwd[0].value("-s"), Some("10.244.0.0/16"));
        assert_eq!(fwd[0].target(), Some("ACCEPT"));
        assert_eq!(fwd[0].args[4..6], ["--comment", "flanneld forward"]);
        assert!(fwd[0].other_matches(&["-s"]).is_empty(), "{:?}", fwd[0].other_matches(&["-s"]));
        let masq = &set.table("nat").unwrap().chain("POSTROUTING").unwrap().rules[0];
        assert_eq!(masq.value("-d"), None, "a negated match is not a match on the value");
        assert_eq!(masq.other_matches(&["-s"]), ["-d"]);
        assert_eq!(set.rule_count(), 4);
        assert!(!set.is_empty());
    }

    #[test]
    fn an_unused_backend_is_empty() {
        let set = parse("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n").unwrap();
        assert!(set.is_empty());
        assert!(!parse("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n").unwrap().is_empty());
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn what_is_not_iptables_save_is_refused_with_its_line() {
        assert_eq!(parse(":INPUT ACCEPT\n").unwrap_err().line, 1);
        let e = parse("*filter\n-A X -m comment --comment \"open\n").unwrap_err();
        assert_eq!(e, ParseError { line: 2, what: "unbalanced quotes".into() });
        assert_eq!(parse("*filter\nhello\n").unwrap_err().line, 2);
    }
}
