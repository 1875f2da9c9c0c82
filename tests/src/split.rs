//! A lab split across machines: each machine (a QEMU guest with its own kernel, see `cargo xtask
//! kernels`) holds one node of the cluster, its underlay the machine's own network card, joined
//! to the other machines by the link between them. In the one-kernel lab every node's packets
//! are seen by the one kernel; here a node's kernel sees only its own, as in a real cluster.
//!
//! The machines agree through a folder they share ([`Rendezvous`]): each writes a mark when a
//! step is done and waits for the other's.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::*;

impl Lab {
    /// Node `here` of a `count`-node lab named `prefix`, on this machine; `nic` (this machine's
    /// network card, on the link to the others) becomes its `eth0`. The other nodes are on
    /// other machines: known here by their addresses (the API stand-in lists them, the overlay
    /// is wired to them), with no namespace here. The usual pods of node `here` are added.
    /// Each machine's `pki` is its own: the cluster's is the one of the machine serving the API,
    /// whose files (kubeconfigs, node roots) the others read from the shared folder.
    pub fn split(prefix: &str, count: u8, here: u8, nic: &str) -> Result<Self> {
        if !(2..=9).contains(&count) || !(1..=count).contains(&here) {
            bail!("a split lab has 2 to 9 nodes and this machine holds one of them, not node {here} of {count}");
        }
        let mut lab = Self::empty(prefix, (1..=count).map(|i| Node::of(prefix, i)).collect())?;
        let node = lab.node(here).clone();
        add_netns(&node.netns)?;
        // Moved into the namespace the card is down; renamed there, as a CNI renames a pod's.
        run("ip", &["link", "set", nic, "netns", &node.netns])?;
        ip(&node.netns, &format!("link set {nic} name eth0"))?;
        node.configure()?;
        node.wire_overlay(&lab.nodes)?;
        for (name, on, host) in [("a", 1, 2), ("b", 2, 2), ("c", 1, 3)] {
            if on == here {
                lab.add_pod(on, name, host)?;
            }
        }
        Ok(lab)
    }
}

/// This machine's network card: the one device of the root namespace with a bus device behind it
/// (a guest has `lo` and its virtio card).
pub fn machine_nic() -> Result<String> {
    let mut cards = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net").context("/sys/class/net")?.flatten() {
        if entry.path().join("device").exists() {
            cards.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    match cards.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("a split lab's machine needs exactly one network card, found {cards:?}"),
    }
}

/// Marks in a shared folder: one machine writes `name` when a step is done, the other waits for
/// it. A machine that gives up writes `failed-<role>`, so the other stops waiting at once.
pub struct Rendezvous {
    dir: PathBuf,
    role: String,
}

impl Rendezvous {
    pub fn new(dir: &Path, role: &str) -> Self {
        Self { dir: dir.to_path_buf(), role: role.to_string() }
    }

    /// Writes mark `name` with `text` (written whole, then renamed: the other side never reads
    /// half of it).
    pub fn mark(&self, name: &str, text: &str) -> Result<()> {
        let part = self.dir.join(format!(".{name}.part"));
        std::fs::write(&part, text).with_context(|| format!("writing {}", part.display()))?;
        std::fs::rename(&part, self.dir.join(name)).with_context(|| format!("mark {name}"))
    }

    /// Gives up: the other side's waits end with this `why`.
    pub fn fail(&self, why: &str) {
        let _ = self.mark(&format!("failed-{}", self.role), why);
    }

    /// The text of mark `name` once it is there, at most `deadline`; an error at once if the
    /// other side gave up.
    pub fn wait(&self, name: &str, deadline: Duration) -> Result<String> {
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name)) {
                return Ok(text);
            }
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if file.starts_with("failed-") && file != format!("failed-{}", self.role) {
                    let why = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    bail!("waiting for {name}: the other machine gave up ({file}): {why}");
                }
            }
            if started.elapsed() > deadline {
                bail!("no {name} from the other machine within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
