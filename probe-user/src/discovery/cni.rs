//! The node's CNI configuration, as the container runtime picks it: the first file by name in
//! the CNI config folder (`.conf`, `.conflist`, `.json`), its plugin chain, and whether each
//! plugin's binary is where the runtime looks for it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::node_root::{Kind, NodeRoot};

/// Where CNI configurations live when the runtime's configuration does not say (see
/// [`super::runtime`]): the usual folder, then k3s's.
pub const CONF_DIRS: &[&str] = &["etc/cni/net.d", "var/lib/rancher/k3s/agent/etc/cni/net.d"];
/// Where plugin binaries live when the runtime's configuration does not say: the usual folder,
/// then k3s's: `data/cni` (the folder current k3s gives containerd as its CNI bin_dir, where
/// users add plugins) and its `current` data folder's `bin` (older releases).
pub const BIN_DIRS: &[&str] = &["opt/cni/bin", "var/lib/rancher/k3s/data/cni", "var/lib/rancher/k3s/data/current/bin"];

/// The folders the container runtime takes CNI configurations and plugins from (inside the
/// node), and what said so.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    pub conf: Vec<PathBuf>,
    pub bins: Vec<PathBuf>,
    /// `containerd (FILE)` / `CRI-O (FILES)` when the runtime's configuration gave them.
    pub source: Option<String>,
    /// Why the runtime's configuration could not be used (the usual folders were looked in).
    pub problem: Option<String>,
}

/// The runtime's CNI folders: from its configuration file, else the usual ones.
pub fn dirs(root: &NodeRoot) -> Dirs {
    let usual = |problem: Option<String>| Dirs {
        conf: CONF_DIRS.iter().map(PathBuf::from).collect(),
        bins: BIN_DIRS.iter().map(PathBuf::from).collect(),
        source: None,
        problem,
    };
    match super::runtime::read(root) {
        Ok(Some(r)) => Dirs {
            conf: vec![PathBuf::from(&r.conf_dir)],
            bins: r.bin_dirs.iter().map(PathBuf::from).collect(),
            source: Some(r.source()),
            problem: None,
        },
        Ok(None) => usual(None),
        Err(e) => usual(Some(e.to_string())),
    }
}

/// A network configuration (a `.conflist`, or a single-plugin `.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub file: PathBuf,
    pub name: String,
    pub cni_version: Option<String>,
    pub plugins: Vec<Plugin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// The plugin's `type`: its binary's name.
    pub kind: String,
    /// The bridge device it puts pods on (the bridge plugin's `bridge`, or flannel's delegate's;
    /// both default to `cni0`).
    pub bridge: Option<String>,
}

impl Plugin {
    /// The bridge device pods end up on, for the plugins that use one.
    pub fn bridge_device(&self) -> Option<String> {
        match self.kind.as_str() {
            "bridge" | "flannel" => Some(self.bridge.clone().unwrap_or_else(|| "cni0".into())),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    name: Option<String>,
    cni_version: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    bridge: Option<String>,
    delegate: Option<RawDelegate>,
    plugins: Option<Vec<RawConfig>>,
}

#[derive(Deserialize)]
struct RawDelegate {
    bridge: Option<String>,
}

/// Why the node has no usable CNI configuration.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI configuration")]
    NoConfig,
    /// The file is there but was not read (names it; a FIFO, too large, unreadable).
    #[error(transparent)]
    Read(super::node_root::RootError),
    #[error("{}: {source}", file.display())]
    Invalid {
        file: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// What is wrong with a network configuration file's text.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not a CNI configuration: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("a plugin without a \"type\"")]
    NoType,
    #[error("plugin type {0:?} is not a binary name")]
    NotABinary(String),
    #[error("\"plugins\" is empty")]
    EmptyPlugins,
    #[error("neither \"plugins\" nor \"type\"")]
    NoPlugins,
}

/// Parses a network configuration file's text: a list (`plugins`) or a single plugin (`type`).
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = serde_json::from_str(text).map_err(ConfigError::NotJson)?;
    let plugin = |r: &RawConfig| -> Result<Plugin, ConfigError> {
        let kind = r.kind.clone().filter(|k| !k.is_empty()).ok_or(ConfigError::NoType)?;
        if kind.contains('/') || kind.contains("..") {
            return Err(ConfigError::NotABinary(kind));
        }
        let bridge = r.bridge.clone().or_else(|| r.delegate.as_ref().and_then(|d| d.bridge.clone()));
        Ok(Plugin { kind, bridge })
    };
    let plugins = match (&raw.plugins, &raw.kind) {
        (Some(list), _) if !list.is_empty() => list.iter().map(plugin).collect::<Result<Vec<_>, _>>()?,
        (Some(_), _) => return Err(ConfigError::EmptyPlugins),
        (None, Some(_)) => vec![plugin(&raw)?],
        (None, None) => return Err(ConfigError::NoPlugins),
    };
    Ok(Config { file: file.to_path_buf(), name: raw.name.unwrap_or_default(), cni_version: raw.cni_version, plugins })
}

/// The configuration files of a folder in the order the runtime tries them (by name), as
/// paths inside the node. libcni (libcni/conf.go ConfFiles) lists names by extension and then
/// reads them; a FIFO or device there is kept, so reading it fails with a message instead of
/// the runtime silently taking the next file.
pub fn config_files(root: &NodeRoot, dir: &Path) -> Vec<PathBuf> {
    root.list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            root.kind(p).is_some_and(|k| k != Kind::Dir)
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "conf" | "conflist" | "json"))
        })
        .collect()
}

/// What the node's CNI setup looks like under `root`.
#[derive(Debug)]
pub struct Found {
    /// The folders looked in (as shown: under the root as given).
    pub dirs: Vec<PathBuf>,
    /// The configuration the runtime would use, or why there is none / it cannot be read.
    pub config: Result<Config, CniError>,
    /// Plugin types whose binary is in none of `bin_dirs`.
    pub missing_binaries: Vec<String>,
    /// The plugin folders that exist (as shown).
    pub bin_dirs: Vec<PathBuf>,
    /// Every plugin folder looked in (as shown).
    pub looked_in: Vec<PathBuf>,
    /// What named the folders: the runtime's configuration, or `None` for the usual ones.
    pub source: Option<String>,
    /// Why the runtime's configuration could not be used.
    pub runtime_problem: Option<String>,
}

/// The node's CNI configuration, looked for where the runtime looks ([`dirs`]).
pub fn read(root: &NodeRoot) -> Found {
    read_in(root, &dirs(root))
}

/// The node's CNI configuration in folders already found ([`dirs`]), so the runtime's
/// configuration is read once per run.
pub fn read_in(root: &NodeRoot, runtime: &Dirs) -> Found {
    let dirs: Vec<PathBuf> = runtime.conf.iter().map(|d| root.shown(d)).collect();
    let bins: Vec<&Path> = runtime.bins.iter().map(PathBuf::as_path).filter(|d| root.is_dir(d)).collect();
    let first = runtime.conf.iter().find_map(|d| config_files(root, d).into_iter().next());
    let config = match first {
        None => Err(CniError::NoConfig),
        Some(file) => match root.read_to_string(&file) {
            Ok(text) => {
                let file = root.shown(&file);
                parse(&file, &text).map_err(|source| CniError::Invalid { file, source })
            }
            Err(e) => Err(CniError::Read(e)),
        },
    };
    let missing_binaries = match &config {
        // The runtime execs the plugin: a symlink to it (k3s's data/current) counts, resolved
        // inside the node.
        Ok(c) => c
            .plugins
            .iter()
            .map(|p| p.kind.clone())
            .filter(|kind| !bins.iter().any(|d| root.is_file(&d.join(kind))))
            .collect(),
        Err(_) => Vec::new(),
    };
    let bin_dirs = bins.iter().map(|d| root.shown(d)).collect();
    // Looked in, whether they exist or not (a missing folder is the runtime's too).
    let looked_in = runtime.bins.iter().map(|d| root.shown(d)).collect();
    Found {
        dirs,
        config,
        missing_binaries,
        bin_dirs,
        looked_in,
        source: runtime.source.clone(),
        runtime_problem: runtime.problem.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNEL: &str = r#"{
      "name": "cbr0",
      "cniVersion": "0.3.1",
      "plugins": [
        { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
        { "type": "portmap", "capabilities": { "portMappings": true } }
      ]
    }"#;

    #[test]
    fn parses_flannel_conflist() {
        let c = parse(Path::new("10-flannel.conflist"), FLANNEL).unwrap();
        assert_eq!(c.name, "cbr0");
        assert_eq!(c.cni_version.as_deref(), Some("0.3.1"));
        let kinds: Vec<&str> = c.plugins.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["flannel", "portmap"]);
        assert_eq!(c.plugins[0].bridge_device().as_deref(), Some("cni0"));
        assert_eq!(c.plugins[1].bridge_device(), None);
    }

    #[test]
    fn single_plugin_conf_and_bad_files() {
        let c = parse(Path::new("a.conf"), r#"{"name":"n","type":"bridge","bridge":"br9"}"#).unwrap();
        assert_eq!(c.plugins[0].bridge_device().as_deref(), Some("br9"));
        let err = |text: &str| parse(Path::new("x"), text).unwrap_err();
        assert!(matches!(err("{"), ConfigError::NotJson(_)));
        assert!(err("{").to_string().starts_with("not a CNI configuration: "), "{}", err("{"));
        assert!(matches!(err(r#"{"name":"n"}"#), ConfigError::NoPlugins));
        assert!(matches!(err(r#"{"plugins":[]}"#), ConfigError::EmptyPlugins));
        assert_eq!(
            err(r#"{"plugins":[{"type":"../../bin/sh"}]}"#).to_string(),
            r#"plugin type "../../bin/sh" is not a binary name"#
        );
    }

    #[test]
    fn reads_the_first_file_and_finds_missing_binaries() {
        let root = std::env::temp_dir().join(format!("netcheck-cni-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let node = NodeRoot::open(&root).unwrap();
        assert!(matches!(read(&node).config, Err(CniError::NoConfig)));
        std::fs::create_dir_all(root.join("etc/cni/net.d")).unwrap();
        std::fs::create_dir_all(root.join("opt/cni/bin")).unwrap();
        std::fs::write(root.join("etc/cni/net.d/10-flannel.conflist"), FLANNEL).unwrap();
        std::fs::write(root.join("etc/cni/net.d/99-loopback.conf"), "{").unwrap();
        std::fs::write(root.join("etc/cni/net.d/README"), "not a config").unwrap();
        std::fs::write(root.join("opt/cni/bin/portmap"), "").unwrap();
        let found = read(&node);
        assert_eq!(found.config.as_ref().unwrap().name, "cbr0");
        assert_eq!(found.missing_binaries, ["flannel"]);
        // k3s: plugins under data/current, an absolute symlink to the versioned data folder.
        std::fs::create_dir_all(root.join("var/lib/rancher/k3s/data/abc123/bin")).unwrap();
        std::fs::write(root.join("var/lib/rancher/k3s/data/abc123/bin/flannel"), "").unwrap();
        std::os::unix::fs::symlink("/var/lib/rancher/k3s/data/abc123", root.join("var/lib/rancher/k3s/data/current"))
            .unwrap();
        assert_eq!(read(&node).missing_binaries, Vec::<String>::new());
        // A FIFO where the first configuration is: refused by name, not waited on.
        nix::unistd::mkfifo(&root.join("etc/cni/net.d/05-fifo.conf"), nix::sys::stat::Mode::S_IRUSR).unwrap();
        let err = read(&node).config.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: a FIFO, not a regular file; not read", root.join("etc/cni/net.d/05-fifo.conf").display())
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
