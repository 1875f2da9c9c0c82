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

/// Sends `count` bare TCP SYN segments from `src` to `dst` inside `netns` through a raw socket,
/// spread over at most `max_time`: packets of a probe's own connection, as many as wanted,
/// without the probe's TCP stack knowing. The kernel writes the IP header, with the source
/// address its route to `dst` picks, so `src` must hold that address.
pub fn tcp_flood(
    netns: &str,
    src: std::net::SocketAddrV4,
    dst: std::net::SocketAddrV4,
    count: u64,
    max_time: Duration,
) -> Result<u64> {
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket};
    let mut segment = [0u8; 20];
    segment[0..2].copy_from_slice(&src.port().to_be_bytes());
    segment[2..4].copy_from_slice(&dst.port().to_be_bytes());
    segment[4..8].copy_from_slice(&0x6e63_0001u32.to_be_bytes());
    segment[12] = 5 << 4; // header length: 5 words, no options
    segment[13] = 0x02; // SYN
    segment[14..16].copy_from_slice(&64240u16.to_be_bytes());
    // The checksum over the pseudo-header (addresses, protocol, length) and the segment.
    let mut words: Vec<u16> = Vec::new();
    for octets in [src.ip().octets(), dst.ip().octets()] {
        words.push(u16::from_be_bytes([octets[0], octets[1]]));
        words.push(u16::from_be_bytes([octets[2], octets[3]]));
    }
    words.extend([6, 20]);
    words.extend(segment.chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]])));
    let mut sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let checksum = !u16::try_from(sum).expect("folded to 16 bits");
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    in_netns(netns, move || {
        let sock = socket(AddressFamily::Inet, SockType::Raw, SockFlag::empty(), SockProtocol::Tcp)
            .context("raw TCP socket (CAP_NET_RAW)")?;
        let to = SockaddrIn::from(dst);
        let started = Instant::now();
        let mut sent = 0;
        while sent < count && started.elapsed() < max_time {
            if sendto(sock.as_raw_fd(), &segment, &to, MsgFlags::empty()).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })
}

/// A TCP listener on `addr` inside `netns` whose accept queue is full (backlog 1, two
/// connections made and never accepted): a SYN to it gets no answer and no drop event, since
/// `tcp_conn_request` counts ListenOverflows and its caller consumes the SYN rather than
/// freeing it as a drop (net/ipv4/tcp_input.c, tcp_rcv_state_process; the same from 5.10 to
/// 6.18). An application that stopped accepting, as a node sees it. Backlog 1, not 0: with 0
/// the request queue counts as full from the first SYN and the fillers would need SYN cookies.
/// Both sockets close when the returned value is dropped.
pub fn full_listener(netns: &str, addr: std::net::SocketAddrV4) -> Result<(std::os::fd::OwnedFd, [TcpStream; 2])> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket};
    in_netns(netns, move || {
        let sock = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
        setsockopt(&sock, nix::sys::socket::sockopt::ReuseAddr, &true)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &SockaddrIn::from(addr)).context("bind")?;
        listen(&sock, Backlog::new(1)?).context("listen")?;
        // The queue holds one more than the backlog: two connections fill it.
        let fill = || TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).context("fill the queue");
        Ok((sock, [fill()?, fill()?]))
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

/// `tool ARGS` in namespace `netns` with `input` on its stdin (a restore of rules, sets or
/// virtual servers); its stderr and the input in the error.
pub(crate) fn pipe_in(netns: &str, tool: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, tool])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("{tool} in {netns}"))?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{tool} {args:?} in {netns}: {}\n{input}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
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

/// What the lab needs root for, said when it is missing.
const ROOT_FOR: &str = "network namespaces, veths and iptables rules for the lab, eBPF programs for capture, \
                        mounts and bounding sets for the privilege tests";

/// Whether this process runs as root (euid 0), as the lab needs.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// This process's effective uid.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The lab needs root. A test or benchmark that cannot run fails naming what it lacked; it
/// never returns early and passes (`cargo xtask test` checks for root before it builds).
pub fn needs_root(what: &str) {
    assert!(is_root(), "needs root: {what} runs as euid {}, and needs euid 0 for {ROOT_FOR}: run it as root", euid());
}

/// An environment variable a test cannot run without: its value, or a failure naming it and
/// `how` to set it (never a quiet pass, never a guess).
pub fn needs_env(name: &str, how: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("needs {name}: it is not set; {how}"),
    }
}

/// Where the machine-wide capture lock lives: /run is root's and exists on the host and in the
/// kernel matrix's guests (a tmpfs there).
const CAPTURE_LOCK: &str = "/run/netcheck-tests-capture.lock";

/// Held by a test whose capture sees the whole machine or whose traffic every capture on the
/// machine sees: a drop flood, the ring buffer filled on purpose, `netcheck capture`
/// streaming every drop within a latency bound. They never overlap, in one test binary
/// (threads) or across binaries and `cargo test` runs (an exclusive `flock` on a file, which
/// the kernel releases when the holder exits, however it ends).
#[must_use = "the lock is held until this is dropped"]
pub struct MachineWide {
    _file: File,
}

/// Waits for the machine-wide capture lock (see [`MachineWide`]); `what` is said while waiting.
pub fn machine_wide(what: &str) -> MachineWide {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(CAPTURE_LOCK)
        .unwrap_or_else(|e| panic!("{what}: open {CAPTURE_LOCK}: {e}"));
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("{what}: waiting for {CAPTURE_LOCK} (another flood or live capture runs)");
            file.lock().unwrap_or_else(|e| panic!("{what}: lock {CAPTURE_LOCK}: {e}"));
        }
        Err(std::fs::TryLockError::Error(e)) => panic!("{what}: lock {CAPTURE_LOCK}: {e}"),
    }
    MachineWide { _file: file }
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
