//! Running the real `netcheck` binary from tests.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

/// The netcheck binary: `$NETCHECK_BIN`, else `netcheck` beside the test binary's `deps/`
/// folder (`cargo build -p probe-user` puts it there; `cargo xtask test` builds it first).
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NETCHECK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).context("test binary location")?;
    let bin = profile_dir.join("netcheck");
    if !bin.exists() {
        bail!("{} not found: run `cargo build -p probe-user` first (or `cargo xtask test`)", bin.display());
    }
    Ok(bin)
}

/// What one run printed, with its JSON parsed when it is JSON.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: serde_json::Value,
}

impl Run {
    pub fn from_output(out: &Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Self {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The first check of a `-o json` report.
    pub fn check(&self) -> &serde_json::Value {
        &self.json["checks"][0]
    }

    /// Evidence entries of the first check of the given kind ("drop", "rst", "icmp").
    pub fn evidence(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.check()["evidence"]
            .as_array()
            .map(|a| a.iter().filter(|e| e["kind"] == kind).collect())
            .unwrap_or_default()
    }
}

/// `netcheck ARGS...`
pub fn run(args: &[&str]) -> Result<Run> {
    run_with(args, &[])
}

/// [`run`] with more environment variables.
pub fn run_with(args: &[&str], env: &[(&str, &str)]) -> Result<Run> {
    let out = Command::new(binary()?).args(args).envs(env.iter().copied()).output()?;
    Ok(Run::from_output(&out))
}

/// `netcheck -o json --netns NETNS ARGS...`
pub fn run_json_in(netns: &str, args: &[&str]) -> Result<Run> {
    let mut all = vec!["-o", "json", "--netns", netns];
    all.extend_from_slice(args);
    run(&all)
}

/// The binary copied where an unprivileged user can run it (the checkout may be under a
/// directory only root can enter, such as /root); removed when dropped.
pub struct UnprivilegedCopy {
    dir: PathBuf,
    pub path: PathBuf,
}

impl UnprivilegedCopy {
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        // One directory per copy: tests of one binary run in parallel, and copying over a
        // binary another test is running fails with ETXTBSY.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("netcheck-unpriv-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.join("netcheck");
        std::fs::copy(binary().expect("netcheck binary"), &path).expect("copy netcheck");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { dir, path }
    }

    /// `netcheck -o json ARGS...` as nobody without capabilities inside `netns`.
    pub fn run_json_in(&self, netns: &str, args: &[&str]) -> Run {
        let out =
            crate::unprivileged(netns, &self.path).args(["-o", "json"]).args(args).output().expect("run netcheck");
        Run::from_output(&out)
    }
}

impl Default for UnprivilegedCopy {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for UnprivilegedCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
