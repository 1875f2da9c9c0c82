//! Running netcheck as in a `kubectl debug node` pod, the node's root at `/host`.

use std::{path::Path, process::Command, sync::atomic::Ordering};

use anyhow::{Context as _, Result};

use super::ca::SERIALS;
use crate::netcheck;

/// Runs `netcheck ARGS` the way it runs in a `kubectl debug node` pod: in a filesystem of its
/// own where the node's root is `/host`. A private mount namespace (nothing outside sees its
/// mounts, and they go with it) gets a tmpfs root holding this machine's top-level folders
/// (bind mounts; a fresh `/tmp`), `fixture` at `/host` and the netcheck binary at `/netcheck`;
/// netcheck runs chrooted there. The real machine's `/` is not touched.
pub fn run_at_host(fixture: &Path, args: &[&str]) -> Result<netcheck::Run> {
    let newroot = crate::TempDir::new(&format!("debug-root-{}", SERIALS.fetch_add(1, Ordering::Relaxed)));
    let script = r#"set -e
new=$1; fixture=$2; shift 2
mount -t tmpfs -o mode=0755 netcheck-debug-root "$new"
for e in /*; do
  n=${e#/}
  case "$n" in host|tmp|lost+found) continue ;; esac
  if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$new/$n"
  elif [ -d "$e" ]; then mkdir "$new/$n"; mount --rbind "$e" "$new/$n"
  fi
done
mkdir -m 1777 "$new/tmp"
mkdir "$new/host"
mount --rbind "$fixture" "$new/host"
: > "$new/netcheck"
mount --bind "$1" "$new/netcheck"
shift
exec chroot "$new" /netcheck "$@"
"#;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&newroot.path)
        .arg(fixture)
        .arg(netcheck::binary()?)
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", "/nonexistent")
        .output()
        .context("unshare (util-linux)")?;
    Ok(netcheck::Run::from_output(&out))
}
