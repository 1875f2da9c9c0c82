//! The kubelet's configuration as the kubelet itself reads it. kubeadm's
//! `/var/lib/kubelet/config.yaml` is one layout; others pass `--config` elsewhere, add
//! `--config-dir` drop-ins (k3s and RKE2: `/var/lib/rancher/{k3s,rke2}/agent/etc/kubelet.conf.d`)
//! or still set `--cluster-dns`, `--cluster-domain`, `--resolv-conf` as flags. So the kubelet's
//! own command line comes first: the process whose root is this node root (a `kubectl debug
//! node` pod shares the host's PID namespace, and `/proc/PID/root` is the same directory as
//! its `/host`). The kubelet's order (KEP-3983, pkg/kubelet/apis/config + cmd/kubelet/app/
//! server.go): the `--config` file, then each `*.conf` drop-in of `--config-dir` by name, each
//! field it sets replacing the one before, then command-line flags over all of it. Without a
//! kubelet process the well-known files stand in. Every value keeps where it came from.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::node_root::{Kind, NodeRoot, read_file};

/// kubeadm's kubelet configuration file.
pub const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
/// Drop-in folders the kubelet is given by the distributions that use one.
pub const CONFIG_DIRS: &[&str] =
    &["var/lib/rancher/k3s/agent/etc/kubelet.conf.d", "var/lib/rancher/rke2/agent/etc/kubelet.conf.d"];
/// The kubelet's kubeconfig: kubeadm, then k3s's and RKE2's agent.
pub const KUBELET_KUBECONFIGS: &[&str] = &[
    "etc/kubernetes/kubelet.conf",
    "var/lib/rancher/k3s/agent/kubelet.kubeconfig",
    "var/lib/rancher/rke2/agent/kubelet.kubeconfig",
];

/// The fields of a KubeletConfiguration netcheck uses (kubelet.config.k8s.io/v1beta1), each
/// absent when no source set it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfig {
    #[serde(default, rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    pub cluster_domain: Option<String>,
    pub healthz_port: Option<u16>,
    pub port: Option<u16>,
    pub resolv_conf: Option<String>,
    pub authentication: Option<Authentication>,
}

/// `authentication` of a KubeletConfiguration: the CA client certificates are judged against
/// (kubeadm: /etc/kubernetes/pki/ca.crt; k3s: its separate client CA, agent/client-ca.crt).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Authentication {
    pub x509: Option<X509Authentication>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Authentication {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<String>,
}

impl KubeletConfig {
    /// The CA file the cluster's client certificates chain to, as the kubelet names it.
    pub fn client_ca_file(&self) -> Option<&str> {
        self.authentication.as_ref()?.x509.as_ref()?.client_ca_file.as_deref().filter(|f| !f.is_empty())
    }

    pub fn parse(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    /// clusterDNS entries that are IP addresses.
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        self.cluster_dns.iter().flatten().filter_map(|s| s.trim().parse().ok()).collect()
    }
}

/// The kubelet's command line, as far as netcheck reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub config: Option<String>,
    pub config_dir: Option<String>,
    pub kubeconfig: Option<String>,
    /// The legacy flags, as a configuration (what they set).
    pub set: KubeletConfig,
}

/// The flags of a kubelet command line (`argv` without the program), as the kubelet's pflag
/// set reads them: `--name=value` or `--name value`, `_` in a name as `-` (its word-separator
/// normaliser), `--cluster-dns` repeatable and comma-separated (a string slice: values add up),
/// an empty `--config=`/`--config-dir=`/`--kubeconfig=` leaving it unset. Unknown flags are
/// skipped (a single dash is accepted too; the kubelet would refuse it).
pub fn parse_flags(args: &[String]) -> Flags {
    let mut flags = Flags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else { continue };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let name = name.replace('_', "-");
        let name = name.as_str();
        let known = matches!(
            name,
            "config"
                | "config-dir"
                | "kubeconfig"
                | "cluster-dns"
                | "cluster-domain"
                | "resolv-conf"
                | "healthz-port"
                | "port"
        );
        if !known {
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None if i < args.len() => {
                i += 1;
                args[i - 1].clone()
            }
            None => continue,
        };
        let path = |v: String| (!v.is_empty()).then_some(v);
        match name {
            "config" => flags.config = path(value),
            "config-dir" => flags.config_dir = path(value),
            "kubeconfig" => flags.kubeconfig = path(value),
            "cluster-dns" => {
                let added = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from);
                flags.set.cluster_dns.get_or_insert_with(Vec::new).extend(added);
            }
            "cluster-domain" => flags.set.cluster_domain = Some(value),
            "resolv-conf" => flags.set.resolv_conf = Some(value),
            "healthz-port" => flags.set.healthz_port = value.parse().ok(),
            "port" => flags.set.port = value.parse().ok(),
            _ => {}
        }
    }
    flags
}

/// A kubelet running on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub args: Vec<String>,
}

/// The kubelet whose root directory is `root`: a process named `kubelet` (argv[0]'s base name)
/// whose `/proc/PID/root` is the same directory. `Err` says why none could be checked.
pub fn find_process(root: &Path) -> Result<Option<Process>, String> {
    let want = std::fs::metadata(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let want = {
        use std::os::unix::fs::MetadataExt as _;
        (want.dev(), want.ino())
    };
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    let mut pids: Vec<u32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    let mut denied = None;
    for pid in pids {
        let Ok(cmdline) = read_file(Path::new(&format!("/proc/{pid}/cmdline"))) else { continue };
        // NUL-terminated arguments; an empty one (`--resolv-conf ""`) is an argument too.
        let cmdline = cmdline.strip_suffix(&[0]).unwrap_or(&cmdline);
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let Some(program) = args.first() else { continue };
        if Path::new(program).file_name().and_then(|n| n.to_str()) != Some("kubelet") {
            continue;
        }
        // stat through the magic link: the process's root directory (needs ptrace access to
        // the process: root, or CAP_SYS_PTRACE in a pod).
        match std::fs::metadata(format!("/proc/{pid}/root")) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt as _;
                if (meta.dev(), meta.ino()) == want {
                    return Ok(Some(Process { pid, args }));
                }
            }
            Err(e) => denied = Some(format!("kubelet pid {pid}: its root cannot be compared ({e})")),
        }
    }
    denied.map_or(Ok(None), Err)
}

/// The kubelet's configuration and kubeconfig, and where each value came from.
#[derive(Debug, Clone, Default)]
pub struct KubeletSetup {
    pub config: KubeletConfig,
    /// The kubeconfig, as a path inside the node.
    pub kubeconfig: Option<PathBuf>,
    /// Field (as the KubeletConfiguration names it, or `kubeconfig`) → where its value came from.
    pub sources: BTreeMap<&'static str, String>,
    /// The kubelet process read, if one was.
    pub pid: Option<u32>,
    /// Files read (configuration and drop-ins), in order.
    pub files: Vec<PathBuf>,
    /// What could not be learnt, and why (a well-known file that is not there).
    pub notes: Vec<String>,
    /// Files the kubelet reads that are there but unreadable or no configuration, and files
    /// its flags name that are missing: the kubelet would not start with them.
    pub problems: Vec<String>,
}

impl KubeletSetup {
    /// Nothing of a kubelet was found (no process, no configuration file or drop-in, read or
    /// broken).
    pub fn is_empty(&self) -> bool {
        self.pid.is_none() && self.files.is_empty() && self.problems.is_empty()
    }

    /// Each value with its source, for the output: `clusterDNS=10.96.0.10 (…)`.
    pub fn describe(&self) -> Vec<String> {
        let c = &self.config;
        let mut out = Vec::new();
        let mut add = |field: &'static str, value: Option<String>| {
            if let Some(v) = value {
                out.push(format!("{field}={v} ({})", self.sources.get(field).map_or("?", String::as_str)));
            }
        };
        add("clusterDNS", c.cluster_dns.as_ref().map(|d| d.join(",")));
        add("clusterDomain", c.cluster_domain.clone());
        add("resolvConf", c.resolv_conf.clone());
        add("healthzPort", c.healthz_port.map(|p| p.to_string()));
        add("port", c.port.map(|p| p.to_string()));
        add("kubeconfig", self.kubeconfig.as_ref().map(|p| p.display().to_string()));
        out
    }

    /// Lays `layer` over what is there, noting `from` for each field it sets.
    fn overlay(&mut self, layer: KubeletConfig, from: &str) {
        let mut set = |field: &'static str, present: bool| {
            if present {
                self.sources.insert(field, from.to_string());
            }
        };
        set("clusterDNS", layer.cluster_dns.is_some());
        set("clusterDomain", layer.cluster_domain.is_some());
        set("resolvConf", layer.resolv_conf.is_some());
        set("healthzPort", layer.healthz_port.is_some());
        set("port", layer.port.is_some());
        let ca = layer.client_ca_file().map(str::to_string);
        let c = &mut self.config;
        c.cluster_dns = layer.cluster_dns.or(c.cluster_dns.take());
        c.cluster_domain = layer.cluster_domain.or(c.cluster_domain.take());
        c.resolv_conf = layer.resolv_conf.or(c.resolv_conf.take());
        c.healthz_port = layer.healthz_port.or(c.healthz_port);
        c.port = layer.port.or(c.port);
        if let Some(ca) = ca {
            self.sources.insert("clientCAFile", from.to_string());
            c.authentication = Some(Authentication { x509: Some(X509Authentication { client_ca_file: Some(ca) }) });
        }
    }

    /// Reads one configuration file (inside the node) and lays it over. `named`: the kubelet's
    /// flags name it (missing is then a problem, not a note).
    fn read_layer(&mut self, root: &NodeRoot, inside: &Path, from: &str, named: bool) {
        match root.read_to_string(inside) {
            Ok(text) => match KubeletConfig::parse(&text) {
                Ok(mut layer) => {
                    // The kubelet resolves a relative path field against the folder of the file
                    // that sets it (pkg/kubelet/apis/config: ResolveRelativePaths).
                    let folder = Path::new("/").join(inside.parent().unwrap_or(Path::new("")));
                    let absolute = |p: &mut String| {
                        if !p.is_empty() && !p.starts_with('/') {
                            *p = folder.join(&*p).display().to_string();
                        }
                    };
                    if let Some(r) = layer.resolv_conf.as_mut() {
                        absolute(r);
                    }
                    if let Some(ca) = layer
                        .authentication
                        .as_mut()
                        .and_then(|a| a.x509.as_mut())
                        .and_then(|x| x.client_ca_file.as_mut())
                    {
                        absolute(ca);
                    }
                    self.files.push(inside.to_path_buf());
                    self.overlay(layer, from);
                }
                Err(e) => {
                    self.problems.push(format!("{}: not a kubelet configuration ({e})", root.shown(inside).display()));
                }
            },
            Err(e) if e.is_not_found() && !named => self.notes.push(e.to_string()),
            Err(e) => self.problems.push(e.to_string()),
        }
    }

    /// The `*.conf` drop-ins of a folder and its subfolders, in the order the kubelet walks
    /// them (filepath.WalkDir: by name, a folder's files where its name sorts). `named`: the
    /// kubelet's `--config-dir` names it, and a missing one stops the kubelet.
    fn read_drop_ins(&mut self, root: &NodeRoot, dir: &Path, from: &str, named: bool) {
        let entries = match root.list(dir) {
            Ok(entries) => entries,
            Err(e) if e.is_not_found() && !named => return,
            Err(e) => return self.problems.push(e.to_string()),
        };
        for entry in entries {
            match root.kind(&entry) {
                Some(Kind::Dir) => self.read_drop_ins(root, &entry, from, true),
                // A FIFO or device named *.conf is read (and refused with why), as the kubelet
                // would try to read it.
                Some(_) if entry.extension().is_some_and(|e| e == "conf") => {
                    let label = format!("{} {from}", Path::new("/").join(&entry).display());
                    self.read_layer(root, &entry, &label, true);
                }
                _ => {}
            }
        }
    }
}

/// The kubelet's setup under `root`: from its process when one runs there, else the
/// well-known files.
pub fn read(root: &NodeRoot) -> KubeletSetup {
    let mut setup = KubeletSetup::default();
    let process = match find_process(root.path()) {
        Ok(p) => p,
        Err(why) => {
            setup.notes.push(why);
            None
        }
    };
    if let Some(p) = process {
        from_flags(root, &mut setup, p.pid, &parse_flags(&p.args[1..]));
    } else {
        setup.read_layer(root, Path::new(KUBELET_CONFIG), &format!("/{KUBELET_CONFIG}, kubeadm's path"), false);
        for dir in CONFIG_DIRS {
            setup.read_drop_ins(root, Path::new(dir), "(drop-in)", false);
        }
        if let Some(kc) = KUBELET_KUBECONFIGS.iter().map(Path::new).find(|p| root.is_file(p)) {
            setup.kubeconfig = Some(Path::new("/").join(kc));
            setup.sources.insert("kubeconfig", "well-known path".into());
        }
    }
    setup
}

/// The kubelet's sources as its flags name them.
fn from_flags(root: &NodeRoot, setup: &mut KubeletSetup, pid: u32, flags: &Flags) {
    setup.pid = Some(pid);
    if let Some(config) = &flags.config {
        setup.read_layer(root, Path::new(config), &format!("{config}, --config of kubelet pid {pid}"), true);
    }
    if let Some(dir) = &flags.config_dir {
        setup.read_drop_ins(root, Path::new(dir), &format!("(drop-in, --config-dir of kubelet pid {pid})"), true);
    }
    let from = format!("flag of kubelet pid {pid}");
    setup.overlay(flags.set.clone(), &from);
    if let Some(kc) = &flags.kubeconfig {
        setup.kubeconfig = Some(PathBuf::from(kc));
        setup.sources.insert("kubeconfig", format!("--kubeconfig of kubelet pid {pid}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_as_pflag_reads_them() {
        let f = parse_flags(&args(
            "--config=/etc/k/config.yaml --kubeconfig /etc/k/kubelet.conf --config-dir=/etc/k/conf.d \
             --cluster-dns=10.43.0.10,fd00::a --cluster-domain cluster.test -resolv-conf=/run/r.conf \
             --node-ip=1.2.3.4 --healthz-port=1x --port 10250 --v=2 --register-node",
        ));
        assert_eq!(f.config.as_deref(), Some("/etc/k/config.yaml"));
        assert_eq!(f.kubeconfig.as_deref(), Some("/etc/k/kubelet.conf"));
        assert_eq!(f.config_dir.as_deref(), Some("/etc/k/conf.d"));
        assert_eq!(f.set.cluster_dns, Some(vec!["10.43.0.10".to_string(), "fd00::a".to_string()]));
        assert_eq!(f.set.cluster_domain.as_deref(), Some("cluster.test"));
        assert_eq!(f.set.resolv_conf.as_deref(), Some("/run/r.conf"));
        assert_eq!(f.set.healthz_port, None, "not a port");
        assert_eq!(f.set.port, Some(10250));
        assert_eq!(parse_flags(&args("--config")), Flags::default(), "a flag without its value");
        let f = parse_flags(&args(
            "--cluster-dns=10.0.0.1 --cluster_domain=x.test --cluster-dns 10.0.0.2,10.0.0.3 --config=",
        ));
        assert_eq!(
            f.set.cluster_dns,
            Some(vec!["10.0.0.1".into(), "10.0.0.2".into(), "10.0.0.3".into()]),
            "values add up"
        );
        assert_eq!(f.set.cluster_domain.as_deref(), Some("x.test"), "_ is -");
        assert_eq!(f.config, None, "an empty --config= is unset");
        let empty = parse_flags(&["--resolv-conf".into(), String::new(), "--config".into(), "/c.yaml".into()]);
        assert_eq!((empty.set.resolv_conf.as_deref(), empty.config.as_deref()), (Some(""), Some("/c.yaml")));
    }

    #[test]
    fn config_then_drop_ins_by_name_then_flags() {
        let dir = std::env::temp_dir().join(format!("netcheck-kubelet-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc/k/conf.d")).unwrap();
        std::fs::write(dir.join("etc/k/config.yaml"), "clusterDNS: [10.0.0.1]\nclusterDomain: base\nhealthzPort: 1\n")
            .unwrap();
        std::fs::write(dir.join("etc/k/conf.d/20-b.conf"), "clusterDomain: twenty\n").unwrap();
        std::fs::write(dir.join("etc/k/conf.d/10-a.conf"), "clusterDomain: ten\nhealthzPort: 2\n").unwrap();
        std::fs::write(dir.join("etc/k/conf.d/30-c.yaml"), "clusterDomain: not-a-drop-in\n").unwrap();
        std::fs::create_dir_all(dir.join("etc/k/conf.d/15-sub")).unwrap();
        std::fs::write(dir.join("etc/k/conf.d/15-sub/x.conf"), "resolvConf: r.conf\n").unwrap();
        let root = NodeRoot::open(&dir).unwrap();
        let mut setup = KubeletSetup::default();
        let flags = parse_flags(&args("--config=/etc/k/config.yaml --config-dir=/etc/k/conf.d --cluster-dns=10.0.0.9"));
        from_flags(&root, &mut setup, 42, &flags);
        assert_eq!(setup.config.cluster_domain.as_deref(), Some("twenty"));
        assert_eq!(setup.config.healthz_port, Some(2));
        assert_eq!(setup.config.dns_servers(), vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            setup.describe(),
            [
                "clusterDNS=10.0.0.9 (flag of kubelet pid 42)",
                "clusterDomain=twenty (/etc/k/conf.d/20-b.conf (drop-in, --config-dir of kubelet pid 42))",
                // A subfolder's drop-in, its relative path resolved against its own folder.
                "resolvConf=/etc/k/conf.d/15-sub/r.conf (/etc/k/conf.d/15-sub/x.conf (drop-in, --config-dir of kubelet pid 42))",
                "healthzPort=2 (/etc/k/conf.d/10-a.conf (drop-in, --config-dir of kubelet pid 42))",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_kubelet_the_well_known_files_stand_in() {
        let dir = std::env::temp_dir().join(format!("netcheck-kubelet-known-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("var/lib/rancher/k3s/agent/etc/kubelet.conf.d")).unwrap();
        std::fs::write(
            dir.join("var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS: [10.43.0.10]\nclusterDomain: cluster.local\n",
        )
        .unwrap();
        std::fs::write(dir.join("var/lib/rancher/k3s/agent/kubelet.kubeconfig"), "x").unwrap();
        let setup = read(&NodeRoot::open(&dir).unwrap());
        assert_eq!(setup.problems, Vec::<String>::new());
        assert_eq!(
            setup.notes,
            [format!("{}: No such file or directory (os error 2)", dir.join(KUBELET_CONFIG).display())]
        );
        assert_eq!(setup.pid, None, "no kubelet runs with this root");
        assert_eq!(setup.config.dns_servers(), vec!["10.43.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(setup.kubeconfig.as_deref(), Some(Path::new("/var/lib/rancher/k3s/agent/kubelet.kubeconfig")));
        let from = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf (drop-in)";
        assert_eq!(setup.describe()[0], format!("clusterDNS=10.43.0.10 ({from})"));
        // A FIFO where kubeadm's file is: a problem named, not a hang.
        std::fs::create_dir_all(dir.join("var/lib/kubelet")).unwrap();
        nix::unistd::mkfifo(&dir.join(KUBELET_CONFIG), nix::sys::stat::Mode::S_IRUSR).unwrap();
        let setup = read(&NodeRoot::open(&dir).unwrap());
        assert_eq!(
            setup.problems,
            [format!("{}: a FIFO, not a regular file; not read", dir.join(KUBELET_CONFIG).display())]
        );
        assert_eq!(
            setup.config.dns_servers(),
            vec!["10.43.0.10".parse::<IpAddr>().unwrap()],
            "the drop-in still counts"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
