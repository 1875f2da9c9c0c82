//! The two-kernel lab (issue 15, acceptance 5): two guests, each a node with its own kernel,
//! joined by a link between their network cards. In the one-kernel lab every node is a namespace
//! of the same kernel, so node n1's capture sees n2's drops; here n1's kernel never sees them,
//! as on a real cluster, and `netcheck path` on n1 can place a drop on n2 only through n2's
//! agent.
//!
//! The link is QEMU's `dgram` netdev over two Unix sockets on the host (each guest sends its
//! frames to the other's socket): nothing goes through the host's network. Both guests share
//! one run folder, where `tests/src/bin/two-kernels.rs` keeps its marks and n2's node root; the
//! local guest (n1) runs the checks and serves the API stand-in, the peer (n2) runs the agent.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{Binaries, GUEST_DEADLINE, GUEST_MODULES, Guest, TIME_SCALE, fetch::Kernel, libtest_results, qemu, wait};
use crate::root;

/// The series of the two nodes: n1 runs Debian 12's kernel, its peer n2 the oldest of the
/// matrix (a cluster mid-upgrade, or nodes of two OS images).
pub const LOCAL: &str = "6.1";
pub const PEER: &str = "5.10";

/// One side of the lab: its role (the program's first argument), its card's MAC.
struct Side {
    role: &'static str,
    mac: &'static str,
}

const SIDES: [Side; 2] =
    [Side { role: "local", mac: "52:54:00:0c:00:01" }, Side { role: "peer", mac: "52:54:00:0c:00:02" }];

/// What the two guests did.
pub struct PairResult {
    pub releases: [String; 2],
    /// Per side: (passed, failed, names of the failures) of the program's check lines.
    tests: BTreeMap<&'static str, (usize, usize, Vec<String>)>,
    exited_ok: BTreeMap<&'static str, bool>,
    powered_off: bool,
    out: PathBuf,
}

/// Boots both guests at once (one vCPU each: the machine has two cores) and waits for both.
pub fn run(dir: &Path, kernels: [&Kernel; 2], bin: &Binaries) -> Result<PairResult> {
    let out = dir.join("run").join("pair");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("shared"))?;
    let mut modules = GUEST_MODULES.to_vec();
    modules.push("virtio_net");
    std::fs::write(out.join("modules"), modules.join("\n"))?;
    // The sockets stay out of the folder the guests see.
    let sockets = dir.join("run").join("pair-link");
    let _ = std::fs::remove_dir_all(&sockets);
    std::fs::create_dir_all(&sockets)?;
    let socket = |role: &str| sockets.join(format!("{role}.sock")).display().to_string();
    let mut children = Vec::new();
    for (i, side) in SIDES.iter().enumerate() {
        let other = SIDES[1 - i].role;
        std::fs::write(out.join(format!("{}.sh", side.role)), script(&out, side.role, bin))?;
        let guest = Guest {
            cpus: 1,
            memory_mib: 1536,
            script: if side.role == "local" { "local.sh" } else { "peer.sh" },
            console: if side.role == "local" { "console-local.log" } else { "console-peer.log" },
            nic: vec![
                "-netdev".into(),
                format!(
                    "dgram,id=link,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                    socket(side.role),
                    socket(other)
                ),
                "-device".into(),
                format!("virtio-net-pci,netdev=link,mac={}", side.mac),
            ],
        };
        match qemu(kernels[i], &out, &guest) {
            Ok(child) => children.push(child),
            Err(e) => {
                // Not one guest left waiting for a peer that never boots.
                for mut child in children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e);
            }
        }
    }
    let started = Instant::now();
    let mut powered_off = true;
    for child in &mut children {
        let left = GUEST_DEADLINE.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
        powered_off &= wait(child, left)?;
    }
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let mut tests = BTreeMap::new();
    let mut exited_ok = BTreeMap::new();
    for side in &SIDES {
        tests.insert(side.role, libtest_results(&read(&format!("{}.log", side.role))));
        exited_ok.insert(side.role, read(&format!("{}.rc", side.role)).trim() == "0");
    }
    let _ = std::fs::remove_dir_all(&sockets);
    Ok(PairResult {
        releases: [kernels[0].release.clone(), kernels[1].release.clone()],
        tests,
        exited_ok,
        powered_off,
        out,
    })
}

/// A side's script: the program in its role, its output and exit code beside it.
fn script(out: &Path, role: &str, bin: &Binaries) -> String {
    let o = out.display();
    let mut s = format!(
        "#!/bin/bash\n# Written by `cargo xtask kernels`; runs in the two-kernel lab's {role} guest.\ncd {}\n",
        root().display()
    );
    let _ = writeln!(s, "export NETLAB_TIME_SCALE={TIME_SCALE} NETCHECK_BIN={}", bin.netcheck.display());
    let _ =
        writeln!(s, "{} {role} {o}/shared > {o}/{role}.log 2>&1; echo $? > {o}/{role}.rc", bin.two_kernels.display());
    s
}

impl PairResult {
    pub fn ok(&self) -> bool {
        self.powered_off
            && self.tests.values().all(|(p, f, _)| *p > 0 && *f == 0)
            && self.exited_ok.values().all(|ok| *ok)
    }

    pub fn summary(&self, took: Duration) -> String {
        let [local, peer] = &self.releases;
        let mut s = format!(
            "two-kernel lab (n1 on {local}, n2 on {peer}): {} in {took:.0?}\n",
            if self.ok() { "ok" } else { "FAILED" }
        );
        if !self.powered_off {
            let _ = writeln!(s, "  a guest did not power off within {GUEST_DEADLINE:?}: see {}", self.out.display());
        }
        for side in &SIDES {
            let (pass, fail, names) = &self.tests[side.role];
            let log = self.out.join(format!("{}.log", side.role));
            let _ = writeln!(
                s,
                "  {}: {pass} passed, {fail} failed{}{}",
                side.role,
                if names.is_empty() { String::new() } else { format!(" ({})", names.join(", ")) },
                if self.exited_ok[side.role] {
                    String::new()
                } else {
                    format!("; did not exit 0: see {}", log.display())
                }
            );
        }
        s
    }
}
