//! Where the node's container runtime looks for CNI configurations and plugins, from its own
//! configuration file: containerd's `config.toml` (k3s's and RKE2's generated ones first) or
//! CRI-O's `crio.conf` and its drop-ins. The kubelet does not run CNI plugins; the runtime
//! does, so a plugin is missing only if it is missing from the runtime's folders (GKE's
//! containerd, for one, keeps them in /home/kubernetes/bin, not /opt/cni/bin).

use std::path::{Path, PathBuf};

use super::node_root::NodeRoot;

/// containerd's and CRI-O's default folders when their configuration sets none.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";

/// containerd configurations, in the order they are looked for: the ones k3s and RKE2 generate
/// for the containerd they run, then the system's.
const CONTAINERD_FILES: &[&str] = &[
    "var/lib/rancher/k3s/agent/etc/containerd/config.toml",
    "var/lib/rancher/rke2/agent/etc/containerd/config.toml",
    "etc/containerd/config.toml",
];
const CRIO_FILE: &str = "etc/crio/crio.conf";
const CRIO_DROP_INS: &str = "etc/crio/crio.conf.d";

/// What a runtime's configuration says of CNI (paths as the node names them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCni {
    /// `containerd` or `CRI-O`.
    pub runtime: &'static str,
    /// The files read, in order (as shown under the root).
    pub files: Vec<PathBuf>,
    pub conf_dir: String,
    pub bin_dirs: Vec<String>,
}

/// The CNI settings of one configuration file: `None` where it sets nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniSettings {
    pub conf_dir: Option<String>,
    pub bin_dirs: Option<Vec<String>>,
    /// CRI-O's older `plugin_dir`, which it adds after `plugin_dirs` (pkg/config/config.go).
    pub extra_bin_dir: Option<String>,
    /// containerd with its CRI plugin disabled (`disabled_plugins`, as Docker's containerd.io
    /// package ships it): not the kubelet's runtime.
    pub cri_disabled: bool,
}

impl CniSettings {
    /// `later`'s settings over these (a CRI-O drop-in over the main file), key by key.
    fn overlay(self, later: Self) -> Self {
        Self {
            conf_dir: later.conf_dir.or(self.conf_dir),
            bin_dirs: later.bin_dirs.or(self.bin_dirs),
            extra_bin_dir: later.extra_bin_dir.or(self.extra_bin_dir),
            cri_disabled: later.cri_disabled || self.cri_disabled,
        }
    }
}

/// Why a runtime's configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Read(#[from] super::node_root::RootError),
    /// `at`: `LINE:COLUMN` of the error in the file.
    #[error("{}:{at}: not valid TOML: {message}", file.display())]
    Toml { file: PathBuf, at: String, message: String },
}

/// How many CRI-O drop-in files are read at most (the folder is walked recursively).
const MAX_DROP_INS: usize = 256;

/// The runtime's CNI folders under `root`: the first containerd configuration found whose CRI
/// plugin is enabled, else CRI-O's; `Ok(None)` when the node has neither (the defaults apply).
pub fn read(root: &NodeRoot) -> Result<Option<RuntimeCni>, RuntimeError> {
    let parsed = |file: &Path, parse: fn(&str) -> Result<CniSettings, toml::de::Error>| {
        let text = root.read_to_string(file)?;
        parse(&text).map_err(|e| {
            let at = e.span().map_or_else(|| "1:1".to_string(), |span| line_column(&text, span.start));
            RuntimeError::Toml { file: root.shown(file), at, message: e.message().to_string() }
        })
    };
    for file in CONTAINERD_FILES.iter().map(Path::new).filter(|f| root.is_file(f)) {
        let settings = parsed(file, parse_containerd)?;
        if !settings.cri_disabled {
            return Ok(Some(RuntimeCni::new("containerd", vec![root.shown(file)], settings)));
        }
    }
    let main = Path::new(CRIO_FILE);
    let mut drop_ins = Vec::new();
    if root.is_dir(Path::new(CRIO_DROP_INS)) {
        walk_files(root, Path::new(CRIO_DROP_INS), &mut drop_ins)?;
    }
    if !root.is_file(main) && drop_ins.is_empty() {
        return Ok(None);
    }
    // crio.conf, then every file under crio.conf.d in path order whatever its name (CRI-O's
    // UpdateFromPath walks the folder; OpenShift writes `00-default`), later keys over earlier.
    let mut settings = CniSettings::default();
    let mut files = Vec::new();
    for file in root.is_file(main).then_some(main.to_path_buf()).into_iter().chain(drop_ins) {
        settings = settings.overlay(parsed(&file, parse_crio)?);
        files.push(root.shown(&file));
    }
    Ok(Some(RuntimeCni::new("CRI-O", files, settings)))
}

/// The regular files under `dir`, depth first in name order (Go's filepath.Walk), at most
/// [`MAX_DROP_INS`].
fn walk_files(root: &NodeRoot, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RuntimeError> {
    for path in root.list(dir)? {
        if out.len() >= MAX_DROP_INS {
            break;
        }
        match root.kind(&path) {
            Some(super::node_root::Kind::Dir) => walk_files(root, &path, out)?,
            Some(super::node_root::Kind::File) => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

/// `LINE:COLUMN` (from 1) of a byte offset in `text`.
fn line_column(text: &str, offset: usize) -> String {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.split(|&b| b == b'\n').count();
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    format!("{line}:{column}")
}

impl RuntimeCni {
    fn new(runtime: &'static str, files: Vec<PathBuf>, settings: CniSettings) -> Self {
        let mut bin_dirs = settings.bin_dirs.filter(|d| !d.is_empty()).unwrap_or_else(|| vec![DEFAULT_BIN_DIR.into()]);
        if let Some(extra) = settings.extra_bin_dir.filter(|d| !bin_dirs.contains(d)) {
            bin_dirs.push(extra);
        }
        Self { runtime, files, conf_dir: settings.conf_dir.unwrap_or_else(|| DEFAULT_CONF_DIR.into()), bin_dirs }
    }

    /// Where the settings came from, for a check's detail: `containerd's /etc/containerd/config.toml`.
    pub fn source(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        format!("{}'s {}", self.runtime, files.join(", "))
    }
}

/// The CRI plugin's names in a containerd configuration, by the file's `version`, the first
/// one's keys winning (containerd's config migration, internal/cri/config): 3 (containerd 2.x)
/// `io.containerd.cri.v1.runtime`, whose missing keys containerd 2.3 fills from a
/// `io.containerd.grpc.v1.cri` table; 2 `io.containerd.grpc.v1.cri`; 1 or none `cri`, or
/// the full name (a name with a dot is kept as it is).
fn cri_plugin_names(version: i64) -> &'static [&'static str] {
    match version {
        3.. => &["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"],
        2 => &["io.containerd.grpc.v1.cri"],
        _ => &["cri", "io.containerd.grpc.v1.cri"],
    }
}

/// containerd's CNI settings: the CRI plugin's `cni` table ([`cri_plugin_names`]): `conf_dir`,
/// `bin_dirs` (2.1+; an empty list counts as unset) or `bin_dir`; and whether
/// `disabled_plugins` turns the CRI plugin off.
pub fn parse_containerd(text: &str) -> Result<CniSettings, toml::de::Error> {
    let doc: toml::Table = text.parse()?;
    let version = doc.get("version").and_then(toml::Value::as_integer).unwrap_or(1);
    let cri_disabled = doc.get("disabled_plugins").and_then(toml::Value::as_array).is_some_and(|names| {
        names
            .iter()
            .filter_map(toml::Value::as_str)
            .any(|n| matches!(n, "cri" | "io.containerd.grpc.v1.cri" | "io.containerd.cri.v1.runtime"))
    });
    let mut settings = CniSettings { cri_disabled, ..CniSettings::default() };
    let plugins = doc.get("plugins");
    for name in cri_plugin_names(version) {
        let Some(cni) = plugins.and_then(|p| p.get(*name)).and_then(|c| c.get("cni")) else { continue };
        let bin_dirs = cni
            .get("bin_dirs")
            .and_then(toml::Value::as_array)
            .map(|dirs| strings(dirs))
            .filter(|dirs| !dirs.is_empty())
            .or_else(|| string(cni, "bin_dir").map(|d| vec![d]));
        settings.conf_dir = settings.conf_dir.or_else(|| string(cni, "conf_dir"));
        settings.bin_dirs = settings.bin_dirs.or(bin_dirs);
    }
    Ok(settings)
}

/// CRI-O's CNI settings: `[crio.network]` `network_dir`, `plugin_dirs` and the older
/// `plugin_dir` (added after them).
pub fn parse_crio(text: &str) -> Result<CniSettings, toml::de::Error> {
    let doc: toml::Table = text.parse()?;
    let Some(network) = doc.get("crio").and_then(|c| c.get("network")) else { return Ok(CniSettings::default()) };
    Ok(CniSettings {
        conf_dir: string(network, "network_dir"),
        bin_dirs: network.get("plugin_dirs").and_then(toml::Value::as_array).map(|dirs| strings(dirs)),
        extra_bin_dir: string(network, "plugin_dir"),
        cri_disabled: false,
    })
}

/// The non-empty strings of a TOML array (anything else in it is not a folder).
fn strings(values: &[toml::Value]) -> Vec<String> {
    values.iter().filter_map(toml::Value::as_str).filter(|s| !s.is_empty()).map(String::from).collect()
}

fn string(table: &toml::Value, key: &str) -> Option<String> {
    table.get(key).and_then(toml::Value::as_str).filter(|s| !s.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(conf: Option<&str>, bins: Option<&[&str]>) -> CniSettings {
        CniSettings {
            conf_dir: conf.map(String::from),
            bin_dirs: bins.map(|b| b.iter().map(|s| (*s).to_string()).collect()),
            ..CniSettings::default()
        }
    }

    #[test]
    fn containerd_keys_by_config_version() {
        // GKE's containerd (version 2).
        let v2 = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/home/kubernetes/bin"
  conf_dir = "/etc/cni/net.d"
"#;
        assert_eq!(parse_containerd(v2).unwrap(), settings(Some("/etc/cni/net.d"), Some(&["/home/kubernetes/bin"])));
        let v3 = r#"
version = 3
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/opt/cni/bin", "/var/lib/rancher/k3s/data/cni"]
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
"#;
        assert_eq!(
            parse_containerd(v3).unwrap(),
            settings(
                Some("/var/lib/rancher/k3s/agent/etc/cni/net.d"),
                Some(&["/opt/cni/bin", "/var/lib/rancher/k3s/data/cni"])
            )
        );
        // Version 1: the short name, or the full one.
        let v1 = "[plugins.cri.cni]\nbin_dir = \"/usr/libexec/cni\"\n";
        assert_eq!(parse_containerd(v1).unwrap(), settings(None, Some(&["/usr/libexec/cni"])));
        let v1_full = "[plugins.\"io.containerd.grpc.v1.cri\".cni]\nconf_dir = \"/c\"\n";
        assert_eq!(parse_containerd(v1_full).unwrap(), settings(Some("/c"), None));
        // Version 3: a key the new table lacks comes from the old one (containerd 2.3).
        let mixed = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\nconf_dir = \"/c\"\n\
                     [plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/x\"\nconf_dir = \"/old\"\n";
        assert_eq!(parse_containerd(mixed).unwrap(), settings(Some("/c"), Some(&["/x"])));
        // An empty bin_dirs leaves bin_dir in force.
        let empty = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\nbin_dirs = []\nbin_dir = \"/x\"\n";
        assert_eq!(parse_containerd(empty).unwrap(), settings(None, Some(&["/x"])));
        // Docker's containerd.io package: CRI off, not the kubelet's runtime.
        let docker = "disabled_plugins = [\"cri\"]\n";
        assert!(parse_containerd(docker).unwrap().cri_disabled);
        assert!(!parse_containerd(v2).unwrap().cri_disabled);
        assert_eq!(parse_containerd("").unwrap(), CniSettings::default());
        assert!(parse_containerd("version = [").is_err());
    }

    #[test]
    fn crio_network_settings() {
        let conf = "[crio.network]\nnetwork_dir = \"/etc/kubernetes/cni/net.d/\"\nplugin_dirs = [\"/var/lib/cni/bin\", \"/usr/libexec/cni\"]\n";
        assert_eq!(
            parse_crio(conf).unwrap(),
            settings(Some("/etc/kubernetes/cni/net.d/"), Some(&["/var/lib/cni/bin", "/usr/libexec/cni"]))
        );
        // The older plugin_dir is added after plugin_dirs (their default when unset).
        let old = parse_crio("[crio.network]\nplugin_dir = \"/opt/bin\"\n").unwrap();
        assert_eq!(old.extra_bin_dir.as_deref(), Some("/opt/bin"));
        assert_eq!(RuntimeCni::new("CRI-O", Vec::new(), old).bin_dirs, [DEFAULT_BIN_DIR, "/opt/bin"]);
        assert_eq!(parse_crio("[crio.runtime]\nx = 1\n").unwrap(), CniSettings::default());
    }

    /// A scratch folder, removed when dropped (also when the test fails).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_runtime_found_under_a_root() {
        let scratch = Scratch(std::env::temp_dir().join(format!("netcheck-runtime-{}", std::process::id())));
        let dir = scratch.0.clone();
        let _ = std::fs::remove_dir_all(&dir);
        let write = |path: &str, text: &str| {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        std::fs::create_dir_all(&dir).unwrap();
        let root = NodeRoot::open(&dir).unwrap();
        assert_eq!(read(&root).unwrap(), None, "nothing: the defaults apply");
        // CRI-O: every file under crio.conf.d over crio.conf, in path order, whatever its name
        // (OpenShift's `00-default`), subfolders too.
        write(
            "etc/crio/crio.conf",
            "[crio.network]\nnetwork_dir = \"/etc/cni/net.d\"\nplugin_dirs = [\"/opt/cni/bin\"]\n",
        );
        write(
            "etc/crio/crio.conf.d/00-default",
            "[crio.network]\nnetwork_dir = \"/etc/kubernetes/cni/net.d/\"\nplugin_dirs = [\"/var/lib/cni/bin\"]\n",
        );
        write("etc/crio/crio.conf.d/10-more/bins.conf", "[crio.network]\nplugin_dirs = [\"/usr/libexec/cni\"]\n");
        let crio = read(&root).unwrap().unwrap();
        assert_eq!((crio.runtime, crio.conf_dir.as_str()), ("CRI-O", "/etc/kubernetes/cni/net.d/"));
        assert_eq!(crio.bin_dirs, ["/usr/libexec/cni"]);
        assert_eq!(
            crio.files,
            [
                dir.join("etc/crio/crio.conf"),
                dir.join("etc/crio/crio.conf.d/00-default"),
                dir.join("etc/crio/crio.conf.d/10-more/bins.conf")
            ]
        );
        // A containerd whose CRI plugin is off (Docker's) is not the runtime: CRI-O still is.
        write("etc/containerd/config.toml", "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n");
        assert_eq!(read(&root).unwrap().unwrap().runtime, "CRI-O");
        // containerd's file comes first; one without a cni table has the defaults.
        write("etc/containerd/config.toml", "version = 2\n");
        let containerd = read(&root).unwrap().unwrap();
        assert_eq!(containerd.source(), format!("containerd's {}", dir.join("etc/containerd/config.toml").display()));
        assert_eq!(
            (containerd.conf_dir.as_str(), containerd.bin_dirs.as_slice()),
            (DEFAULT_CONF_DIR, &[DEFAULT_BIN_DIR.to_string()][..])
        );
        // Invalid TOML: the file, the line and column, the parser's message.
        write("etc/containerd/config.toml", "version = 2\nroot = = 1\n");
        let err = read(&root).unwrap_err().to_string();
        let file = dir.join("etc/containerd/config.toml");
        assert!(err.starts_with(&format!("{}:2:8: not valid TOML: ", file.display())), "{err}");
    }
}
