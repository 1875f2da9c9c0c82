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
}

impl CniSettings {
    /// `later`'s settings over these (a CRI-O drop-in over the main file).
    fn overlay(self, later: Self) -> Self {
        Self { conf_dir: later.conf_dir.or(self.conf_dir), bin_dirs: later.bin_dirs.or(self.bin_dirs) }
    }
}

/// Why a runtime's configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Read(#[from] super::node_root::RootError),
    #[error("{}: not valid TOML: {}", file.display(), source.message())]
    Toml { file: PathBuf, source: toml::de::Error },
}

/// The runtime's CNI folders under `root`: the first containerd configuration found, else
/// CRI-O's; `Ok(None)` when the node has neither (the defaults apply).
pub fn read(root: &NodeRoot) -> Result<Option<RuntimeCni>, RuntimeError> {
    let parsed = |file: &Path, parse: fn(&str) -> Result<CniSettings, toml::de::Error>| {
        let text = root.read_to_string(file)?;
        parse(&text).map_err(|source| RuntimeError::Toml { file: root.shown(file), source })
    };
    if let Some(file) = CONTAINERD_FILES.iter().map(Path::new).find(|f| root.is_file(f)) {
        let settings = parsed(file, parse_containerd)?;
        return Ok(Some(RuntimeCni::new("containerd", vec![root.shown(file)], settings)));
    }
    let main = Path::new(CRIO_FILE);
    let drop_ins: Vec<PathBuf> = root
        .list(Path::new(CRIO_DROP_INS))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "conf") && root.is_file(p))
        .collect();
    if !root.is_file(main) && drop_ins.is_empty() {
        return Ok(None);
    }
    // crio.conf, then each drop-in in name order, later keys over earlier (crio(8)).
    let mut settings = CniSettings::default();
    let mut files = Vec::new();
    for file in root.is_file(main).then_some(main.to_path_buf()).into_iter().chain(drop_ins) {
        settings = settings.overlay(parsed(&file, parse_crio)?);
        files.push(root.shown(&file));
    }
    Ok(Some(RuntimeCni::new("CRI-O", files, settings)))
}

impl RuntimeCni {
    fn new(runtime: &'static str, files: Vec<PathBuf>, settings: CniSettings) -> Self {
        let bin_dirs = settings.bin_dirs.filter(|d| !d.is_empty()).unwrap_or_else(|| vec![DEFAULT_BIN_DIR.into()]);
        Self { runtime, files, conf_dir: settings.conf_dir.unwrap_or_else(|| DEFAULT_CONF_DIR.into()), bin_dirs }
    }

    /// Where the settings came from, for a check's detail: `containerd (/etc/containerd/config.toml)`.
    pub fn source(&self) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        format!("{} ({})", self.runtime, files.join(", "))
    }
}

/// containerd's CNI settings: the CRI plugin's `cni` table, whose name depends on the file's
/// `version` (containerd's config migration, `pkg/cri/config`): 3 (containerd 2.x)
/// `plugins."io.containerd.cri.v1.runtime".cni` with `bin_dirs` (2.1+) or `bin_dir`; 2
/// `plugins."io.containerd.grpc.v1.cri".cni`; 1 or none `plugins.cri.cni`.
pub fn parse_containerd(text: &str) -> Result<CniSettings, toml::de::Error> {
    let doc: toml::Table = text.parse()?;
    let version = doc.get("version").and_then(toml::Value::as_integer).unwrap_or(1);
    let plugin = match version {
        3.. => "io.containerd.cri.v1.runtime",
        2 => "io.containerd.grpc.v1.cri",
        _ => "cri",
    };
    let cni = doc.get("plugins").and_then(|p| p.get(plugin)).and_then(|c| c.get("cni"));
    let Some(cni) = cni else { return Ok(CniSettings::default()) };
    let bin_dirs = cni
        .get("bin_dirs")
        .and_then(toml::Value::as_array)
        .map(|dirs| strings(dirs))
        .or_else(|| string(cni, "bin_dir").map(|d| vec![d]));
    Ok(CniSettings { conf_dir: string(cni, "conf_dir"), bin_dirs })
}

/// CRI-O's CNI settings: `[crio.network]` `network_dir` and `plugin_dirs` (or the older
/// single `plugin_dir`).
pub fn parse_crio(text: &str) -> Result<CniSettings, toml::de::Error> {
    let doc: toml::Table = text.parse()?;
    let Some(network) = doc.get("crio").and_then(|c| c.get("network")) else { return Ok(CniSettings::default()) };
    let bin_dirs = network
        .get("plugin_dirs")
        .and_then(toml::Value::as_array)
        .map(|dirs| strings(dirs))
        .or_else(|| string(network, "plugin_dir").map(|d| vec![d]));
    Ok(CniSettings { conf_dir: string(network, "network_dir"), bin_dirs })
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
        let v1 = "[plugins.cri.cni]\nbin_dir = \"/usr/libexec/cni\"\n";
        assert_eq!(parse_containerd(v1).unwrap(), settings(None, Some(&["/usr/libexec/cni"])));
        // A version 2 file's table under a version 3 name is not what containerd reads.
        let mismatched = "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/x\"\n";
        assert_eq!(parse_containerd(mismatched).unwrap(), CniSettings::default());
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
        assert_eq!(
            parse_crio("[crio.network]\nplugin_dir = \"/opt/bin\"\n").unwrap(),
            settings(None, Some(&["/opt/bin"]))
        );
        assert_eq!(parse_crio("[crio.runtime]\nx = 1\n").unwrap(), CniSettings::default());
    }

    #[test]
    fn the_runtime_found_under_a_root() {
        let dir = std::env::temp_dir().join(format!("netcheck-runtime-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |path: &str, text: &str| {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        std::fs::create_dir_all(&dir).unwrap();
        let root = NodeRoot::open(&dir).unwrap();
        assert_eq!(read(&root).unwrap(), None, "nothing: the defaults apply");
        // CRI-O: a drop-in over crio.conf.
        write(
            "etc/crio/crio.conf",
            "[crio.network]\nnetwork_dir = \"/etc/cni/net.d\"\nplugin_dirs = [\"/opt/cni/bin\"]\n",
        );
        write("etc/crio/crio.conf.d/10-bins.conf", "[crio.network]\nplugin_dirs = [\"/usr/libexec/cni\"]\n");
        write("etc/crio/crio.conf.d/README", "not read");
        let crio = read(&root).unwrap().unwrap();
        assert_eq!((crio.runtime, crio.conf_dir.as_str()), ("CRI-O", "/etc/cni/net.d"));
        assert_eq!(crio.bin_dirs, ["/usr/libexec/cni"]);
        assert_eq!(crio.files, [dir.join("etc/crio/crio.conf"), dir.join("etc/crio/crio.conf.d/10-bins.conf")]);
        // containerd's file comes first; one without a cni table has the defaults.
        write("etc/containerd/config.toml", "version = 2\n");
        let containerd = read(&root).unwrap().unwrap();
        assert_eq!(containerd.source(), format!("containerd ({})", dir.join("etc/containerd/config.toml").display()));
        assert_eq!(
            (containerd.conf_dir.as_str(), containerd.bin_dirs.as_slice()),
            (DEFAULT_CONF_DIR, &[DEFAULT_BIN_DIR.to_string()][..])
        );
        write("etc/containerd/config.toml", "version = = 2\n");
        let err = read(&root).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: not valid TOML: ", dir.join("etc/containerd/config.toml").display())),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
