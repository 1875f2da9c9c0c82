//! Where the node's container runtime looks for CNI configurations and plugins, from its own
//! configuration: containerd's `config.toml` (k3s's and RKE2's generated ones first) with the
//! files it imports, or CRI-O's `crio.conf` and its drop-ins. The kubelet does not run CNI plugins; the runtime
//! does, so a plugin is missing only if it is missing from the runtime's folders (GKE's
//! containerd, for one, keeps them in /home/kubernetes/bin, not /opt/cni/bin).

pub mod containerd;
pub mod crio;

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
    /// containerd does not start with an import it cannot read.
    #[error("{} (imported by {}) is not there", file.display(), by.display())]
    MissingImport { file: PathBuf, by: PathBuf },
    #[error("{} imports more than {max} files", file.display())]
    TooManyImports { file: PathBuf, max: usize },
}

/// The runtime's CNI folders under `root`: the first containerd configuration found whose CRI
/// plugin is enabled (with its imports), else CRI-O's; `Ok(None)` when the node has neither
/// (the defaults apply).
pub fn read(root: &NodeRoot) -> Result<Option<RuntimeCni>, RuntimeError> {
    for main in CONTAINERD_FILES.iter().map(Path::new).filter(|f| root.is_file(f)) {
        let (merged, files) = containerd::load(root, main, |file| parsed(root, file, containerd::parse))?;
        let settings = merged.settings();
        if !settings.cri_disabled {
            return Ok(Some(RuntimeCni::new("containerd", files, settings)));
        }
    }
    let Some(files) = crio::files(root, Path::new(CRIO_FILE), Path::new(CRIO_DROP_INS))? else { return Ok(None) };
    // Later keys over earlier, file by file.
    let mut settings = CniSettings::default();
    for file in &files {
        settings = settings.overlay(parsed(root, file, crio::parse)?);
    }
    Ok(Some(RuntimeCni::new("CRI-O", files.iter().map(|f| root.shown(f)).collect(), settings)))
}

/// One configuration file read and parsed; a TOML error names the file, line and column.
fn parsed<T>(root: &NodeRoot, file: &Path, parse: fn(&str) -> Result<T, toml::de::Error>) -> Result<T, RuntimeError> {
    let text = root.read_to_string(file)?;
    parse(&text).map_err(|e| {
        let at = e.span().map_or_else(|| "1:1".to_string(), |span| line_column(&text, span.start));
        RuntimeError::Toml { file: root.shown(file), at, message: e.message().to_string() }
    })
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

/// The non-empty strings of a TOML array (anything else in it is not a folder).
pub(crate) fn strings(values: &[toml::Value]) -> Vec<String> {
    values.iter().filter_map(toml::Value::as_str).filter(|s| !s.is_empty()).map(String::from).collect()
}

pub(crate) fn string(table: &toml::Value, key: &str) -> Option<String> {
    table.get(key).and_then(toml::Value::as_str).filter(|s| !s.is_empty()).map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch folder, removed when dropped (also when the test fails).
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl Scratch {
        /// An empty folder `netcheck-NAME-PID` under the temporary folder.
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("netcheck-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Writes `text` at `path` under the folder, making the folders on the way.
        fn write(&self, path: &str, text: &str) {
            let p = self.0.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn the_runtime_found_under_a_root() {
        let scratch = Scratch::new("runtime");
        let dir = scratch.0.clone();
        let write = |path: &str, text: &str| scratch.write(path, text);
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

    #[test]
    fn containerd_imports_are_read_under_the_root() {
        let scratch = Scratch::new("imports");
        let dir = scratch.0.clone();
        let write = |path: &str, text: &str| scratch.write(path, text);
        // As EKS lays it out: the main file imports a folder by glob (an absolute path: the
        // node's, not this machine's), and a file by a relative path, which imports the main
        // file back (a loop containerd reads once).
        write(
            "etc/containerd/config.toml",
            "version = 2\nimports = [\"/etc/containerd/config.d/*.toml\", \"../containerd-extra/more.toml\"]\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/main/bin\"\n",
        );
        write(
            "etc/containerd/config.d/20-cni.toml",
            "[plugins.\"io.containerd.grpc.v1.cri\".cni]\nconf_dir = \"/20\"\nbin_dir = \"/20/bin\"\n",
        );
        write(
            "etc/containerd/config.d/10-cni.toml",
            "[plugins.\"io.containerd.grpc.v1.cri\".cni]\nconf_dir = \"/10\"\n",
        );
        write("etc/containerd/config.d/notes.txt", "not toml, not matched");
        write("etc/containerd-extra/more.toml", "imports = [\"/etc/containerd/config.toml\"]\n");
        let root = NodeRoot::open(&dir).unwrap();
        let found = read(&root).unwrap().unwrap();
        let shown = |p: &str| dir.join(p);
        assert_eq!(
            found.files,
            [
                shown("etc/containerd/config.toml"),
                shown("etc/containerd/config.d/10-cni.toml"),
                shown("etc/containerd/config.d/20-cni.toml"),
                shown("etc/containerd-extra/more.toml"),
            ]
        );
        // The last table of the plugin wins whole: 20's.
        assert_eq!((found.conf_dir.as_str(), found.bin_dirs.as_slice()), ("/20", &["/20/bin".to_string()][..]));
        // An import that is not there: containerd would not start; named with its importer.
        write("etc/containerd/config.toml", "version = 2\nimports = [\"gone.toml\"]\n");
        let err = read(&root).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} (imported by {}) is not there",
                shown("etc/containerd/gone.toml").display(),
                shown("etc/containerd/config.toml").display()
            )
        );
        // A glob that matches nothing is no error (Go's Glob).
        write("etc/containerd/config.toml", "version = 2\nimports = [\"/etc/containerd/none.d/*.toml\"]\n");
        assert_eq!(read(&root).unwrap().unwrap().files, [shown("etc/containerd/config.toml")]);
    }
}
