//! The host side of the lab: namespace bookkeeping, running commands in namespaces, floods,
//! privileges, scratch folders.

use super::*;

/// Sends `count` UDP datagrams from inside `netns` to `dst`, spread over at most `max_time`
/// (bounded in count and time). Used to make background drops.
pub fn udp_flood(netns: &str, dst: SocketAddr, count: u64, max_time: Duration) -> Result<u64> {
    in_netns(netns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        let started = Instant::now();
        let payload = [0u8; 64];
        let mut sent = 0;
        while sent < count && started.elapsed() < max_time {
            if sock.send_to(&payload, dst).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })
}

/// Runs `f` on a thread that has entered `netns` (sockets it makes live there).
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let path = Path::new(NETNS_DIR).join(netns);
    std::thread::spawn(move || {
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns panicked"))?
}

/// A prefix unique to this process and lab: `nclab<pid>x<n>`.
pub fn unique_prefix() -> String {
    format!("{NAME_PREFIX}{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Removes lab namespaces whose owning process is gone (a killed test, a crashed xtask).
pub fn clean_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_netns()? {
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = !pid.is_empty() && Path::new("/proc").join(&pid).exists();
        if !alive || pid.is_empty() {
            kill_netns_processes(&name);
            let _ = run("ip", &["netns", "del", &name]);
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Names of every named network namespace on the machine.
pub fn list_netns() -> Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return Ok(Vec::new()) };
    Ok(entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
}

/// Kills what still runs inside a lab namespace (a daemon whose lab was killed).
pub(crate) fn kill_netns_processes(name: &str) {
    if let Ok(pids) = output("ip", &["netns", "pids", name]) {
        for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

pub(crate) fn add_netns(name: &str) -> Result<()> {
    run("ip", &["netns", "add", name])
}

pub(crate) fn ip(netns: &str, args: &str) -> Result<()> {
    let mut v = vec!["-n", netns];
    v.extend(args.split_whitespace());
    run("ip", &v)
}

pub(crate) fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    run("ip", &["netns", "exec", netns, "sysctl", "-qw", &format!("{key}={value}")])
}

pub(crate) fn iptables(netns: &str, args: &str) -> Result<()> {
    let mut v = vec!["netns", "exec", netns, "iptables", "-w"];
    v.extend(args.split_whitespace());
    run("ip", &v)
}

/// `program` run inside `netns` as nobody, with every capability dropped (what an unprivileged
/// `kubectl debug` pod gets): `ip netns exec NETNS setpriv ... -- PROGRAM`.
pub fn unprivileged(netns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(program);
    cmd
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    output(program, args).map(|_| ())
}

pub(crate) fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask setup` installs it)"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How much slower than the project's own machine this one runs: `cargo xtask kernels` sets
/// `NETLAB_TIME_SCALE` for guests emulated with TCG. Latency bounds in tests multiply by it.
pub fn time_scale() -> u32 {
    std::env::var("NETLAB_TIME_SCALE").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(1)
}

/// The lab needs root: a test that cannot run fails, it never passes quietly (`cargo xtask
/// test` runs as root). Returns true so callers keep their `if !require_root(..)` guard.
pub fn require_root(test: &str) -> bool {
    assert!(nix::unistd::geteuid().is_root(), "{test} needs root (network namespaces, iptables, eBPF): run it as root");
    true
}

/// A scratch folder under the system temp dir, removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    /// `netcheck-<name>-<pid>`, created empty.
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("netcheck-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }

    /// Writes `text` to `name` inside (folders must exist) and returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.path.join(name);
        std::fs::write(&p, text).expect("temp file");
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
