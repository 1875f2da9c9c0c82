//! CRI-O's configuration: `crio.conf`, then every file under `crio.conf.d` in path order
//! whatever its name (CRI-O's UpdateFromPath walks the folder; OpenShift writes
//! `00-default`), later keys over earlier.

use std::path::{Path, PathBuf};

use super::{CniSettings, RuntimeError, string, strings};
use crate::discovery::node_root::{Kind, NodeRoot};

/// How many files (crio.conf and its drop-ins) are read at most.
const MAX_DROP_INS: usize = 256;

/// CRI-O's CNI settings in one file: `[crio.network]` `network_dir`, `plugin_dirs` and the
/// older `plugin_dir` (which CRI-O adds after them, pkg/config/config.go).
pub fn parse(text: &str) -> Result<CniSettings, toml::de::Error> {
    let doc: toml::Table = text.parse()?;
    let Some(network) = doc.get("crio").and_then(|c| c.get("network")) else { return Ok(CniSettings::default()) };
    Ok(CniSettings {
        conf_dir: string(network, "network_dir"),
        bin_dirs: network.get("plugin_dirs").and_then(toml::Value::as_array).map(|dirs| strings(dirs)),
        extra_bin_dir: string(network, "plugin_dir"),
        cri_disabled: false,
    })
}

/// CRI-O's files under `root` in the order it reads them; `None` when it has none.
pub fn files(root: &NodeRoot, main: &Path, drop_ins: &Path) -> Result<Option<Vec<PathBuf>>, RuntimeError> {
    let mut files: Vec<PathBuf> = root.is_file(main).then(|| main.to_path_buf()).into_iter().collect();
    if root.is_dir(drop_ins) {
        walk_files(root, drop_ins, &mut files)?;
    }
    Ok((!files.is_empty()).then_some(files))
}

/// The regular files under `dir`, depth first in name order (Go's filepath.Walk), until `out`
/// holds [`MAX_DROP_INS`].
fn walk_files(root: &NodeRoot, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), RuntimeError> {
    for path in root.list(dir)? {
        if out.len() >= MAX_DROP_INS {
            break;
        }
        match root.kind(&path) {
            Some(Kind::Dir) => walk_files(root, &path, out)?,
            Some(Kind::File) => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::runtime::{DEFAULT_BIN_DIR, RuntimeCni};

    #[test]
    fn network_settings() {
        let conf = "[crio.network]\nnetwork_dir = \"/etc/kubernetes/cni/net.d/\"\nplugin_dirs = [\"/var/lib/cni/bin\", \"/usr/libexec/cni\"]\n";
        let s = parse(conf).unwrap();
        assert_eq!(s.conf_dir.as_deref(), Some("/etc/kubernetes/cni/net.d/"));
        assert_eq!(s.bin_dirs.unwrap(), ["/var/lib/cni/bin", "/usr/libexec/cni"]);
        // The older plugin_dir is added after plugin_dirs (their default when unset).
        let old = parse("[crio.network]\nplugin_dir = \"/opt/bin\"\n").unwrap();
        assert_eq!(old.extra_bin_dir.as_deref(), Some("/opt/bin"));
        assert_eq!(RuntimeCni::new("CRI-O", Vec::new(), old).bin_dirs, [DEFAULT_BIN_DIR, "/opt/bin"]);
        assert_eq!(parse("[crio.runtime]\nx = 1\n").unwrap(), CniSettings::default());
    }
}
