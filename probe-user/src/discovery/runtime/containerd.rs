//! containerd's configuration as containerd loads it: the main file, then the files its
//! `imports` name (EKS's and Gardener's nodes put the CRI plugin's settings in
//! `/etc/containerd/config.d/*.toml`), each merged over what came before.
//!
//! containerd's merge (services/server/config/config.go, `LoadConfig` and `mergeConfig`, 1.5
//! to 2.x): files are loaded breadth first, each once; scalars set in a later file win, lists
//! (`disabled_plugins`, `imports`) are appended, and a plugin's table in a later file replaces
//! the whole table of that plugin (keys are not merged within it).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Component, Path, PathBuf},
};

use super::{CniSettings, RuntimeError, string, strings};
use crate::discovery::node_root::NodeRoot;

/// The plugin names that may carry the CRI plugin's `cni` table, in every config version.
const CRI_PLUGINS: &[&str] = &["cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"];

/// How many files one configuration may bring in, imports of imports included: containerd has
/// no bound, a node's configuration has a handful.
pub const MAX_FILES: usize = 64;

/// What of one containerd configuration file matters to CNI, or of several merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerdFile {
    /// `version`; `None` when the file does not set it.
    pub version: Option<i64>,
    /// `imports`, as written (a path, relative to the importing file's folder or absolute, with
    /// `*` for a glob).
    pub imports: Vec<String>,
    pub disabled_plugins: Vec<String>,
    /// The CRI plugins' tables, by plugin name: their `cni` settings (none for a table
    /// without `cni`).
    pub cri_tables: BTreeMap<String, PluginCni>,
}

/// One CRI plugin table's `cni` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginCni {
    pub conf_dir: Option<String>,
    /// `bin_dirs` (2.1+; an empty list counts as unset), else `bin_dir`.
    pub bin_dirs: Option<Vec<String>>,
}

impl PluginCni {
    fn of(cni: &toml::Value) -> Self {
        let bin_dirs = cni
            .get("bin_dirs")
            .and_then(toml::Value::as_array)
            .map(|dirs| strings(dirs))
            .filter(|dirs| !dirs.is_empty())
            .or_else(|| string(cni, "bin_dir").map(|d| vec![d]));
        Self { conf_dir: string(cni, "conf_dir"), bin_dirs }
    }
}

/// One file of containerd's configuration, parsed.
pub fn parse(text: &str) -> Result<ContainerdFile, toml::de::Error> {
    let doc: toml::Table = text.parse()?;
    let list = |key: &str| doc.get(key).and_then(toml::Value::as_array).map(|v| strings(v)).unwrap_or_default();
    let cri_tables = doc
        .get("plugins")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
        .filter(|(name, _)| CRI_PLUGINS.contains(&name.as_str()))
        .map(|(name, table)| (name.clone(), table.get("cni").map(PluginCni::of).unwrap_or_default()))
        .collect();
    Ok(ContainerdFile {
        version: doc.get("version").and_then(toml::Value::as_integer),
        imports: list("imports"),
        disabled_plugins: list("disabled_plugins"),
        cri_tables,
    })
}

impl ContainerdFile {
    /// `later` merged over this one, as containerd merges an imported file.
    #[must_use]
    pub fn merge(mut self, later: Self) -> Self {
        self.version = later.version.or(self.version);
        self.imports.extend(later.imports);
        self.disabled_plugins.extend(later.disabled_plugins);
        // A plugin's table is replaced whole, not merged key by key.
        self.cri_tables.extend(later.cri_tables);
        self
    }

    /// The CNI settings: the CRI plugin's `cni` table by the configuration's version (3
    /// `io.containerd.cri.v1.runtime`, whose missing keys containerd 2.3 fills from an
    /// `io.containerd.grpc.v1.cri` table; 2 `io.containerd.grpc.v1.cri`; 1 or none `cri` or
    /// its full name), key by key; and whether `disabled_plugins` turns the CRI plugin off (Docker's
    /// containerd.io package ships it so).
    pub fn settings(&self) -> CniSettings {
        let names: &[&str] = match self.version.unwrap_or(1) {
            3.. => &["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"],
            2 => &["io.containerd.grpc.v1.cri"],
            _ => &["cri", "io.containerd.grpc.v1.cri"],
        };
        let cri_disabled = self.disabled_plugins.iter().any(|n| CRI_PLUGINS.contains(&n.as_str()));
        let mut settings = CniSettings { cri_disabled, ..CniSettings::default() };
        for cni in names.iter().filter_map(|name| self.cri_tables.get(*name)) {
            settings.conf_dir = settings.conf_dir.or_else(|| cni.conf_dir.clone());
            settings.bin_dirs = settings.bin_dirs.or_else(|| cni.bin_dirs.clone());
        }
        settings
    }
}

/// `main` and everything it imports, merged; with the files read, in load order.
pub fn load(
    root: &NodeRoot,
    main: &Path,
    parsed: impl Fn(&Path) -> Result<ContainerdFile, RuntimeError>,
) -> Result<(ContainerdFile, Vec<PathBuf>), RuntimeError> {
    let mut merged = ContainerdFile::default();
    let mut loaded: Vec<PathBuf> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut pending = VecDeque::from([(clean(&Path::new("/").join(main)), None::<PathBuf>)]);
    while let Some((file, importer)) = pending.pop_front() {
        // Each file once (by inode, so two names of one file are one; by name when it cannot
        // be looked at): an import loop ends here, as in containerd.
        if !seen.insert(root.identity(&file).map_or_else(|| Err(file.clone()), Ok)) {
            continue;
        }
        if loaded.len() >= MAX_FILES {
            return Err(RuntimeError::TooManyImports { file: root.shown(main), max: MAX_FILES });
        }
        if let Some(by) = &importer
            && !root.is_file(&file)
        {
            // containerd does not start with an import it cannot read.
            return Err(RuntimeError::MissingImport { file: root.shown(&file), by: root.shown(by) });
        }
        let one = parsed(&file)?;
        let folder = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        for import in &one.imports {
            for path in resolve_import(root, &folder, import) {
                pending.push_back((path, Some(file.clone())));
            }
        }
        merged = merged.merge(one);
        loaded.push(root.shown(&file));
    }
    Ok((merged, loaded))
}

/// The files one `imports` entry names: relative to the importing file's folder; with `*`, the
/// existing files matching it (Go's filepath.Glob, sorted per folder), else the path itself.
pub fn resolve_import(root: &NodeRoot, folder: &Path, import: &str) -> Vec<PathBuf> {
    let path = clean(&folder.join(import));
    if !import.contains('*') {
        return vec![path];
    }
    // Component by component: a component with a wildcard lists its folder.
    let mut found = vec![PathBuf::from("/")];
    for part in path.components().skip(1) {
        let name = part.as_os_str().to_string_lossy();
        if !has_meta(&name) {
            for p in &mut found {
                p.push(&*name);
            }
            continue;
        }
        let Ok(pattern) = glob::Pattern::new(&name) else { return Vec::new() };
        found = found
            .iter()
            .flat_map(|dir| root.list(dir).unwrap_or_default())
            .filter(|p| p.file_name().is_some_and(|n| pattern.matches(&n.to_string_lossy())))
            .take(MAX_FILES)
            .collect();
    }
    found.retain(|p| root.kind(p).is_some());
    found
}

fn has_meta(name: &str) -> bool {
    name.contains(['*', '?', '['])
}

/// `path` with `.` and `..` folded (Go's filepath.Clean, which containerd applies), from `/`.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
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

    fn of(text: &str) -> CniSettings {
        parse(text).unwrap().settings()
    }

    #[test]
    fn keys_by_config_version() {
        // GKE's containerd (version 2).
        let v2 = r#"
version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/home/kubernetes/bin"
  conf_dir = "/etc/cni/net.d"
"#;
        assert_eq!(of(v2), settings(Some("/etc/cni/net.d"), Some(&["/home/kubernetes/bin"])));
        let v3 = r#"
version = 3
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/opt/cni/bin", "/var/lib/rancher/k3s/data/cni"]
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
"#;
        assert_eq!(
            of(v3),
            settings(
                Some("/var/lib/rancher/k3s/agent/etc/cni/net.d"),
                Some(&["/opt/cni/bin", "/var/lib/rancher/k3s/data/cni"])
            )
        );
        // Version 1: the short name, or the full one.
        assert_eq!(
            of("[plugins.cri.cni]\nbin_dir = \"/usr/libexec/cni\"\n"),
            settings(None, Some(&["/usr/libexec/cni"]))
        );
        assert_eq!(of("[plugins.\"io.containerd.grpc.v1.cri\".cni]\nconf_dir = \"/c\"\n"), settings(Some("/c"), None));
        // Version 3: a key the new table lacks comes from the old one (containerd 2.3).
        let mixed = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\nconf_dir = \"/c\"\n\
                     [plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/x\"\nconf_dir = \"/old\"\n";
        assert_eq!(of(mixed), settings(Some("/c"), Some(&["/x"])));
        // An empty bin_dirs leaves bin_dir in force.
        let empty = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\nbin_dirs = []\nbin_dir = \"/x\"\n";
        assert_eq!(of(empty), settings(None, Some(&["/x"])));
        // Docker's containerd.io package: CRI off, not the kubelet's runtime.
        assert!(of("disabled_plugins = [\"cri\"]\n").cri_disabled);
        assert!(!of(v2).cri_disabled);
        assert_eq!(of(""), CniSettings::default());
        assert!(parse("version = [").is_err());
    }

    #[test]
    fn an_import_replaces_a_plugins_table_whole() {
        let main = parse(
            "version = 2\nimports = [\"/etc/containerd/config.d/*.toml\"]\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\nbin_dir = \"/main/bin\"\nconf_dir = \"/main/conf\"\n",
        )
        .unwrap();
        assert_eq!(main.imports, ["/etc/containerd/config.d/*.toml"]);
        // The import's table has conf_dir only: bin_dir is gone with the main file's table.
        let import = parse("[plugins.\"io.containerd.grpc.v1.cri\".cni]\nconf_dir = \"/import/conf\"\n").unwrap();
        assert_eq!(main.clone().merge(import).settings(), settings(Some("/import/conf"), None));
        // Another plugin's table, or none, leaves it; the import's version (none) leaves 2.
        let other = parse("[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nsnapshotter = \"x\"\n").unwrap();
        assert_eq!(main.clone().merge(other).settings(), settings(None, None), "a table without cni replaces it too");
        let unrelated = parse("[plugins.\"io.containerd.snapshotter.v1.overlayfs\"]\nx = 1\n").unwrap();
        assert_eq!(main.clone().merge(unrelated).settings(), main.settings());
        // disabled_plugins are appended.
        let off = parse("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n").unwrap();
        assert!(main.merge(off).settings().cri_disabled);
    }

    #[test]
    fn paths_are_cleaned_from_the_root() {
        assert_eq!(clean(Path::new("/etc/containerd/../x/./y.toml")), Path::new("/etc/x/y.toml"));
        assert_eq!(clean(Path::new("/../../a")), Path::new("/a"));
    }
}
