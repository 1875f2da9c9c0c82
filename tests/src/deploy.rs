//! What deploy/ grants the agent, read from the manifests themselves, so tests run netcheck with
//! exactly that and nothing more.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The deploy/ folder of this checkout.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of a YAML file under deploy/.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capabilities the DaemonSet adds, as setpriv names them ("bpf", "perfmon", ...), plus
/// those an overlay's patches add (`kernel-5.10`).
pub fn capabilities(overlay: Option<&str>) -> Vec<String> {
    let ds = documents(&dir().join("daemonset.yaml")).remove(0);
    let mut caps: Vec<String> =
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array()
            .expect("the DaemonSet adds capabilities")
            .iter()
            .filter_map(|c| c.as_str().map(str::to_ascii_lowercase))
            .collect();
    if let Some(o) = overlay {
        let k = documents(&dir().join(o).join("kustomization.yaml")).remove(0);
        for patch in k["patches"].as_array().into_iter().flatten() {
            let ops: Vec<Value> = serde_saphyr::from_str(patch["patch"].as_str().unwrap_or("[]")).expect("patch ops");
            for op in ops {
                if op["op"] == "add" && op["path"].as_str().is_some_and(|p| p.ends_with("/capabilities/add/-")) {
                    caps.push(op["value"].as_str().expect("a capability").to_ascii_lowercase());
                }
            }
        }
    }
    caps
}

/// `-all,+bpf,+perfmon,...`: setpriv's bounding set for those capabilities.
pub fn bounding_set(overlay: Option<&str>) -> String {
    let caps: Vec<String> = capabilities(overlay).iter().map(|c| format!("+{c}")).collect();
    format!("-all,{}", caps.join(","))
}
