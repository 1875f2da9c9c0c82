//! `netcheck agent` processes in lab nodes, and a real Prometheus (Debian's) scraping them.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{NETNS_DIR, TempDir, http_get, netcheck};

/// The port the lab's agents listen on (the DaemonSet's default).
pub const AGENT_PORT: u16 = 9472;

/// A running agent; killed (SIGKILL) if the test did not stop it.
pub struct Agent {
    pub netns: String,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Agent {
    /// `netcheck --netns NETNS GLOBAL... agent --listen ADDR AGENT...` (the binary of
    /// [`netcheck::binary`]), stderr to the test's.
    pub fn start(netns: &str, addr: SocketAddr, global: &[&str], agent: &[&str]) -> Result<Self> {
        Self::start_binary(&netcheck::binary()?, netns, addr, global, agent, &[])
    }

    /// [`Self::start`] with a given binary and more environment variables.
    pub fn start_binary(
        binary: &Path,
        netns: &str,
        addr: SocketAddr,
        global: &[&str],
        agent: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let listen = addr.to_string();
        let child = Command::new(binary)
            .args(["--netns", netns])
            .args(global)
            .args(["agent", "--listen", &listen])
            .args(agent)
            .stdout(Stdio::null())
            .env("NETCHECK_LOG", "netcheck=info")
            .envs(env.iter().copied())
            .spawn()
            .context("start netcheck agent")?;
        Ok(Self { netns: netns.to_string(), addr, child: Some(child) })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.netns, self.addr, path)
    }

    /// [`Self::get`] with the API stand-in's admin token (the kubeconfig's), as a user allowed
    /// `/events` and `/report` sends it.
    pub fn get_authorized(&self, path: &str) -> Result<(u16, String)> {
        crate::http_get_as(&self.netns, self.addr, path, Some(crate::ADMIN_TOKEN))
    }

    /// Waits until `/readyz` answers 200 (the first cycle finished), at most `deadline`.
    pub fn wait_ready(&mut self, deadline: Duration) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("agent exited before it was ready: {status}");
            }
            if matches!(self.get("/readyz"), Ok((200, _))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("agent not ready within {deadline:?}")
    }

    /// Sends `signal` and waits (at most `deadline`) for the exit: its code and how long it took.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal, deadline: Duration) -> Result<(Option<i32>, Duration)> {
        let mut child = self.child.take().context("already stopped")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        let started = Instant::now();
        nix::sys::signal::kill(pid, signal)?;
        while started.elapsed() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok((status.code(), started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("agent still running {deadline:?} after {signal}")
    }

    /// Resident set size of the agent process, from /proc.
    pub fn rss_kib(&self) -> Result<u64> {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// The anonymous part of the resident set (heap, stacks: what a leak grows), and the
    /// file-backed part (the binary's pages as code paths first run, the ring buffer's mapping).
    pub fn rss_parts_kib(&self) -> Result<(u64, u64)> {
        Ok((proc_status_kib(self.pid(), "RssAnon:")?, proc_status_kib(self.pid(), "RssFile:")?))
    }

    /// CPU time (user + system) the agent used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let after = stat.rsplit_once(')').context("stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        let hz = u64::try_from(hz).unwrap_or(100).max(1);
        Ok(Duration::from_millis(ticks * 1000 / hz))
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Debian's Prometheus in a lab namespace, scraping the given targets every second.
pub struct Prometheus {
    pub netns: String,
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(netns: &str, addr: SocketAddr, targets: &[SocketAddr]) -> Result<Self> {
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        Self::start_with(netns, addr, &format!("  - targets: [{}]\n", list.join(", ")), &[])
    }

    /// [`Self::start`] with each target labelled `node` (what the ServiceMonitor's relabeling
    /// gives in a cluster) and these rule files evaluated every second.
    pub fn start_with_rules(
        netns: &str,
        addr: SocketAddr,
        targets: &[(SocketAddr, &str)],
        rules: &[&Path],
    ) -> Result<Self> {
        let mut static_configs = String::new();
        for (t, node) in targets {
            let _ = write!(static_configs, "  - targets: ['{t}']\n    labels: {{node: '{node}'}}\n");
        }
        Self::start_with(netns, addr, &static_configs, rules)
    }

    fn start_with(netns: &str, addr: SocketAddr, static_configs: &str, rules: &[&Path]) -> Result<Self> {
        let binary = Path::new("/usr/bin/prometheus");
        if !binary.exists() {
            bail!("{} missing: `cargo xtask setup` installs Debian's prometheus package", binary.display());
        }
        let dir = TempDir::new(&format!("prometheus-{netns}"));
        let rule_files: Vec<String> = rules.iter().map(|r| format!("'{}'", r.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\nscrape_configs:\n- job_name: netcheck\n  static_configs:\n{static_configs}",
            rule_files.join(", ")
        );
        let config_path = dir.write("prometheus.yml", &config);
        let data = dir.path.join("data");
        let child = Command::new("nsenter")
            .arg(format!("--net={NETNS_DIR}/{netns}"))
            .arg(binary)
            .arg(format!("--config.file={config_path}"))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start prometheus")?;
        let mut p = Self { netns: netns.to_string(), addr, child, _dir: dir };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("prometheus exited: {status}");
            }
            if matches!(http_get(&p.netns, p.addr, "/-/ready"), Ok((200, _))) {
                return Ok(p);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("prometheus not ready within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An instant PromQL query: each series' labels (as JSON) and value.
    pub fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(&self.netns, self.addr, &path)?;
        if status != 200 {
            bail!("query {promql}: HTTP {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let result = v["data"]["result"].as_array().context("no result")?;
        Ok(result.iter().filter_map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?))).collect())
    }

    /// The names of the rules Prometheus loaded (`/api/v1/rules`).
    pub fn rule_names(&self) -> Result<Vec<String>> {
        let (status, body) = http_get(&self.netns, self.addr, "/api/v1/rules")?;
        if status != 200 {
            bail!("/api/v1/rules: HTTP {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let groups = v["data"]["groups"].as_array().context("no groups")?;
        Ok(groups
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .filter_map(|r| r["name"].as_str().map(String::from))
            .collect())
    }

    /// Polls `promql` until `pred` holds on its result, at most `deadline`: how long it took.
    pub fn wait_for(
        &self,
        promql: &str,
        deadline: Duration,
        pred: impl Fn(&[(serde_json::Value, f64)]) -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < deadline {
            last = self.query(promql)?;
            if pred(&last) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!("{promql}: not as expected within {deadline:?}; last result {last:?}")
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
