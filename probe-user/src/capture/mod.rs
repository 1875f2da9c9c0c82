//! eBPF capture: loads the programs of `probe-ebpf`, reads their ring buffer on a thread of its
//! own and hands each event to whoever asked for it:
//! - a probe's [`Watch`] gets the events of its own flow inside its time window (attribution by
//!   flow, never by global counters: the machine's background drops never reach a probe);
//! - a subscriber (`netcheck capture`) gets every event as it happens.

pub mod btf;
pub mod event;
pub mod filter;
pub mod hooks;
mod load;
pub mod location;
mod matcher;
pub mod phases;
mod watch;
mod watched;

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
};
use probe_common::{Event, aggregate, counter, devclass, kind};
use serde::Serialize;

pub use self::{
    btf::Limit,
    hooks::HookStatus,
    load::{Inferred, kernel_release},
    matcher::FlowMatcher,
    watch::Watch,
};
use self::{
    event::KernelEvent,
    load::ebpf_error,
    watch::WatchSlot,
    watched::{Watched, address_key},
};
use crate::{
    error::{Error, Result},
    netns::NetnsNames,
    privileges::{self, Requirement},
};

/// The eBPF object built by probe-user/build.rs, embedded once.
#[cfg(feature = "ebpf")]
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netcheck-probe"));
/// Built without the `ebpf` feature (e.g. for fuzzing): no programs to load.
#[cfg(not(feature = "ebpf"))]
static PROBE_OBJECT: &[u8] = &[];

/// The ring buffer's size under `watched_only` (a power of two, a multiple of the page size).
const WATCHED_RING_BYTES: u32 = 256 << 10;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// UDP port whose payload is decoded as VXLAN (flannel: 8472).
    pub vxlan_port: u16,
    /// Only events of a flow being watched ([`Capture::watch`]) or touching an address given
    /// to [`Capture::watch_addresses`] reach userspace; the rest are only counted in the
    /// kernel ([`Capture::aggregates`]). Checks, `node`, `path` and the agent, which use only
    /// those events, on nodes that may drop packets all the time; not `netcheck capture`.
    pub watched_only: bool,
    /// Let UDP probes watch this namespace's other addresses until conntrack names their SNAT
    /// ([`Watch::candidates`]). Every event on those addresses reaches userspace meanwhile: a
    /// one-shot command can afford it, the agent cannot (a flood on a node address during its
    /// DNS probes would fill the ring buffer), so the agent leaves it off.
    pub snat_candidates: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { vxlan_port: probe_common::FLANNEL_VXLAN_PORT, watched_only: false, snat_candidates: true }
    }
}

/// Why capture is not running; probes still run without it.
#[derive(Debug, Clone, Serialize)]
pub struct Unavailable {
    /// Capabilities or kernel features that are missing (may be empty when the cause is other).
    pub missing: Vec<Requirement>,
    pub detail: String,
    /// The running kernel's release, when capture got as far as looking at it.
    pub kernel: Option<String>,
    /// What became of each hook before loading stopped.
    pub hooks: Vec<HookStatus>,
}

/// Capture state for reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub available: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Requirement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Events the kernel could not queue (ring buffer full): counted, not hidden.
    pub lost: u64,
    /// Probe flows and peer addresses the capture filter had no room for (its kernel map was
    /// full), the most at once in the run (the agent: in the cycle): their events never reached
    /// netcheck, so "no drop seen" is qualified as with `lost`.
    #[serde(skip_serializing_if = "is_zero")]
    pub unwatched: u64,
    /// The kernel release capture was fitted to (`uname -r`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// From reading the kernel's BTF to the reader running: the laps of `phases` (entries that
    /// ran "alongside the others" overlap the lap before them and are not added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u64>,
    /// Start-up, phase by phase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<phases::Phase>,
    /// Each tracepoint, the program chosen for this kernel's prototype, and whether it attached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookStatus>,
    /// What this kernel's capture cannot see, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<Limit>,
    /// Causes named from where a drop happened, on kernels whose reasons do not name them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inferred: Vec<load::Inferred>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Status {
    pub fn unavailable(u: &Unavailable) -> Self {
        Self {
            available: false,
            missing: u.missing.clone(),
            detail: Some(u.detail.clone()),
            kernel: u.kernel.clone(),
            hooks: u.hooks.clone(),
            ..Self::default()
        }
    }

    /// Capture not started, for `why`.
    pub fn off(why: &str) -> Self {
        Self { detail: Some(why.to_string()), ..Self::default() }
    }
}

/// Counters kept by the programs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub sent: u64,
    pub lost: u64,
    /// Left out of the ring buffer by the watched-address filter (still aggregated).
    pub filtered: u64,
}

/// One in-kernel aggregate: how many events of a kind, on a class of device, for a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Aggregate {
    /// `drop`, `rst_sent`, `rst_received` or `icmp_sent`.
    pub kind: &'static str,
    /// One of `probe_common::devclass::NAMES`.
    pub device_class: &'static str,
    /// The kernel's name of the reason (drop and reset reasons), or `type/code` for ICMP.
    pub reason: String,
    pub count: u64,
}

#[derive(Default)]
struct State {
    watches: Vec<WatchSlot>,
    next_id: u64,
    /// Incremented after every pass that emptied the ring buffer.
    drained: u64,
    subscriber: Option<mpsc::Sender<KernelEvent>>,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
    drained: Condvar,
    /// An eventfd in the reader's poll set (semaphore mode: each write of n wakes n passes), so
    /// `sync` and stopping do not wait for the 20 ms poll timeout.
    wake: OwnedFd,
}

impl Shared {
    /// Makes the reader's next `passes` polls return at once.
    fn nudge(&self, passes: u64) {
        // SAFETY: an 8-byte write to our eventfd; a failure only means the reader wakes at its
        // timeout instead.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&raw const passes).cast(), 8) };
    }
}

/// A non-blocking semaphore eventfd.
fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | libc::EFD_SEMAPHORE) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loaded and attached programs plus the thread that reads their events. Dropping it stops the
/// thread and detaches everything (nothing is pinned).
pub struct Capture {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    counters: PerCpuArray<MapData, u64>,
    aggregates: PerCpuArray<MapData, [u64; aggregate::SLOTS]>,
    /// The kernel's filter under `watched_only`, with how many holders each key has.
    watched: Option<Mutex<Watched>>,
    /// [`Options::snat_candidates`].
    snat_candidates: bool,
    names: btf::ReasonNames,
    kernel: String,
    hooks: Vec<HookStatus>,
    limits: Vec<Limit>,
    inferred: Vec<load::Inferred>,
    load_ms: u64,
    phases: Vec<phases::Phase>,
    // Keeps the programs attached; dropped last.
    ebpf: Ebpf,
}

impl Capture {
    /// Loads and attaches the programs, or says why it cannot (missing capability, no BTF, or
    /// the kernel's own refusal).
    pub fn start(opts: Options) -> Result<Self, Unavailable> {
        let missing = privileges::capture_missing();
        if !missing.is_empty() {
            let caps: Vec<String> =
                missing.iter().filter(|m| **m != Requirement::Btf).map(ToString::to_string).collect();
            let mut why = Vec::new();
            if !caps.is_empty() {
                why.push(format!("capture needs {} (missing here)", caps.join(", ")));
            }
            if missing.contains(&Requirement::Btf) {
                why.push(format!(
                    "capture needs the kernel's BTF, and {} is absent or unreadable (a kernel built without \
                     CONFIG_DEBUG_INFO_BTF has none; capture supports 5.10 and later with BTF)",
                    btf::VMLINUX_BTF
                ));
            }
            return Err(Unavailable {
                detail: why.join("; "),
                missing,
                kernel: Some(kernel_release()),
                hooks: Vec::new(),
            });
        }
        Self::load(opts)
    }

    fn load(opts: Options) -> Result<Self, Unavailable> {
        let loaded = load::load(opts).map_err(|f| {
            let mut detail = crate::error::chain(&f.error);
            if load::older_than_supported(&f.kernel) {
                detail = format!("{detail} (kernel {} is older than 5.10, the oldest capture supports)", f.kernel);
            }
            Unavailable { missing: f.missing, detail, kernel: Some(f.kernel), hooks: f.hooks }
        })?;
        let mut ebpf = loaded.ebpf;
        let unavailable = |e: Error| Unavailable {
            missing: Vec::new(),
            detail: crate::error::chain(&e),
            kernel: Some(loaded.kernel.clone()),
            hooks: loaded.hooks.clone(),
        };
        let mut take = |name: &str| ebpf.take_map(name).ok_or_else(|| unavailable(missing_map(name)));
        let ring = RingBuf::try_from(take("EVENTS")?).map_err(|e| unavailable(ebpf_error("EVENTS", e)))?;
        let counters = PerCpuArray::try_from(take("COUNTERS")?).map_err(|e| unavailable(ebpf_error("COUNTERS", e)))?;
        let aggregates =
            PerCpuArray::try_from(take("AGGREGATES")?).map_err(|e| unavailable(ebpf_error("AGGREGATES", e)))?;
        let map = BpfHashMap::try_from(take("WATCHED")?).map_err(|e| unavailable(ebpf_error("WATCHED", e)))?;
        let bits = Array::try_from(take("WATCH_BITS")?).map_err(|e| unavailable(ebpf_error("WATCH_BITS", e)))?;
        let watched = opts.watched_only.then(|| Mutex::new(Watched::new(map, bits)));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            drained: Condvar::new(),
            wake: eventfd().map_err(|e| unavailable(Error::Io(e)))?,
        });
        let decoder = Decoder {
            names: loaded.names.clone(),
            netns: NetnsNames::scan(),
            last_rescan: Instant::now(),
            symbols: loaded.symbols.then(location::Symbols::default),
        };
        let reader = Reader { ring, decoder, shared: shared.clone() };
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || reader.run())
            .map_err(|e| unavailable(Error::Io(e)))?;
        let mut timer = loaded.timer;
        timer.lap("maps, namespace names, reader thread");
        let load_ms = timer.total_ms();
        let phases = timer.into_phases();
        tracing::debug!(load_ms, "capture attached");
        Ok(Self {
            shared,
            thread: Some(thread),
            counters,
            aggregates,
            watched,
            snat_candidates: opts.snat_candidates,
            names: loaded.names,
            kernel: loaded.kernel,
            hooks: loaded.hooks,
            limits: loaded.limits,
            inferred: loaded.inferred,
            load_ms,
            phases,
            ebpf,
        })
    }

    /// Starts collecting the events of one flow. Call before the flow's first packet.
    pub fn watch(&self, matcher: FlowMatcher) -> Watch<'_> {
        if let Some(w) = &self.watched {
            w.lock().expect("watched map").hold(matcher.watch_key());
        }
        let mut state = self.shared.state.lock().expect("capture state");
        state.next_id += 1;
        let id = state.next_id;
        state.watches.push(WatchSlot::new(id, matcher));
        Watch { capture: self, id }
    }

    /// Every event from now on, as it happens.
    pub fn subscribe(&self) -> mpsc::Receiver<KernelEvent> {
        let (tx, rx) = mpsc::channel();
        self.shared.state.lock().expect("capture state").subscriber = Some(tx);
        rx
    }

    /// Waits until every event the kernel queued before this call has been read.
    pub fn sync(&self) {
        let state = self.shared.state.lock().expect("capture state");
        // Two passes: the one running now may have started before our events were queued.
        let target = state.drained + 2;
        self.shared.nudge(2);
        let _unused = self
            .shared
            .drained
            .wait_timeout_while(state, Duration::from_secs(2), |s| s.drained < target)
            .expect("capture state");
    }

    /// The most probe flows and peer addresses the capture filter had no room for at once in
    /// this window (see [`Status::unwatched`], [`Self::new_window`]).
    pub fn unwatched(&self) -> u64 {
        self.watched.as_ref().map_or(0, |w| w.lock().expect("watched map").unwatched() as u64)
    }

    /// Keys the capture filter refused so far (the agent's metric).
    pub fn refused_keys(&self) -> u64 {
        self.watched.as_ref().map_or(0, |w| w.lock().expect("watched map").refused())
    }

    /// Starts a window (the agent's cycle): [`Self::unwatched`] counts from the keys absent now.
    pub fn new_window(&self) {
        if let Some(w) = &self.watched {
            w.lock().expect("watched map").new_window();
        }
    }

    /// The programs' counters, summed over CPUs.
    pub fn counters(&self) -> Counters {
        let sum = |i: u32| self.counters.get(&i, 0).map_or(0, |v| v.iter().sum());
        Counters { sent: sum(counter::SENT), lost: sum(counter::LOST), filtered: sum(counter::FILTERED) }
    }

    /// Under `watched_only`: events touching these addresses reach userspace from now on
    /// (replacing the previous list). Without `watched_only` every event does anyway.
    pub fn watch_addresses(&self, addresses: &[std::net::IpAddr]) {
        let Some(w) = &self.watched else { return };
        let keys: Vec<_> = addresses.iter().map(|a| address_key(*a)).collect();
        w.lock().expect("watched map").set_addresses(&keys);
    }

    /// Every in-kernel aggregate, summed over CPUs, named from this kernel's BTF.
    pub fn aggregates(&self) -> Vec<Aggregate> {
        let mut out = Vec::new();
        for row in 0..aggregate::ROWS {
            let Ok(per_cpu) = self.aggregates.get(&row, 0) else { continue };
            let (k, class) = aggregate::row_parts(row);
            let device_class = devclass::NAMES.get(usize::from(class)).copied().unwrap_or("other");
            for (slot, index) in (0u32..).zip(0..aggregate::SLOTS) {
                let count: u64 = per_cpu.iter().map(|counters| counters[index]).sum();
                if count == 0 {
                    continue;
                }
                let reason = aggregate::slot_reason(k, slot);
                let (kind_name, reason) = match (k, reason) {
                    (kind::DROP, Some(r)) => ("drop", self.names.drop_name(r)),
                    (kind::DROP, None) if slot == aggregate::OTHER_SLOT => ("drop", "SUBSYSTEM".into()),
                    (kind::DROP, None) => ("drop", "OTHER".into()),
                    (kind::RST_SENT, Some(r)) => ("rst_sent", self.names.reset_name(r)),
                    (kind::RST_SENT, None) => ("rst_sent", "OTHER".into()),
                    (kind::RST_RECEIVED, _) => ("rst_received", String::new()),
                    (_, Some(r)) => ("icmp_sent", format!("{}/{}", r >> 8, r & 0xff)),
                    (_, None) => ("icmp_sent", "other".into()),
                };
                out.push(Aggregate { kind: kind_name, device_class, reason, count });
            }
        }
        out.sort_by(|a, b| (a.kind, a.device_class, &a.reason).cmp(&(b.kind, b.device_class, &b.reason)));
        out
    }

    /// Why ICMP errors this kernel sends are not captured, when they are not (the optional
    /// `icmp_send` hook did not attach).
    pub fn icmp_unseen(&self) -> Option<String> {
        let hook = self.hooks.iter().find(|h| h.tracepoint == "icmp_send")?;
        (!hook.attached).then(|| hook.note.clone().unwrap_or_else(|| "icmp_send is not attached".into()))
    }

    pub fn status(&self) -> Status {
        Status {
            available: true,
            lost: self.counters().lost,
            unwatched: self.unwatched(),
            kernel: Some(self.kernel.clone()),
            load_ms: Some(self.load_ms),
            phases: self.phases.clone(),
            hooks: self.hooks.clone(),
            limits: self.limits.clone(),
            inferred: self.inferred.clone(),
            ..Status::default()
        }
    }

    /// Name and kernel info (run_time_ns, run_cnt under `bpf_stats`) of each loaded program.
    pub fn program_infos(&self) -> Vec<(String, aya::programs::ProgramInfo)> {
        self.ebpf.programs().filter_map(|(name, p)| p.info().ok().map(|i| (name.to_string(), i))).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.nudge(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Reader {
    ring: RingBuf<MapData>,
    decoder: Decoder,
    shared: Arc<Shared>,
}

impl Reader {
    fn run(mut self) {
        let fd = self.ring.as_fd().as_raw_fd();
        let wake = self.shared.wake.as_raw_fd();
        loop {
            let mut pfds = [
                libc::pollfd { fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds. The timeout bounds the wait when the programs queue
            // less than their wake-up threshold and nobody nudges.
            unsafe { libc::poll(pfds.as_mut_ptr(), 2, 20) };
            if pfds[1].revents & libc::POLLIN != 0 {
                let mut one = 0u64;
                // SAFETY: an 8-byte read of our eventfd (semaphore mode: takes one pass).
                let _ = unsafe { libc::read(wake, (&raw mut one).cast(), 8) };
            }
            // Read after the poll: a stop requested before it returned still gets this drain.
            let stopping = self.shared.stop.load(Ordering::Relaxed);
            while let Some(item) = self.ring.next() {
                if item.len() < std::mem::size_of::<Event>() {
                    continue;
                }
                // SAFETY: the programs write exactly one Event per record; read unaligned.
                let raw: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
                drop(item);
                self.decoder.dispatch(&self.shared, &raw);
            }
            self.shared.state.lock().expect("capture state").drained += 1;
            self.shared.drained.notify_all();
            if stopping {
                break;
            }
        }
    }
}

/// Turns raw events into named ones, only for events someone wants.
struct Decoder {
    names: btf::ReasonNames,
    netns: NetnsNames,
    last_rescan: Instant,
    /// Names drop locations when the reason does not say enough (`None`: kallsyms hides them).
    symbols: Option<location::Symbols>,
}

impl Decoder {
    fn dispatch(&mut self, shared: &Shared, raw: &Event) {
        {
            let state = shared.state.lock().expect("capture state");
            let watched = state.watches.iter().any(|w| w.wants(raw));
            if !watched && state.subscriber.is_none() {
                return;
            }
        }
        // Decoding may rescan namespaces or read /proc/kallsyms (once, on kernels that record no
        // drop reason): not while holding the state probes register their watches in.
        if raw.netns != 0
            && self.netns.name(raw.netns) == raw.netns.to_string()
            && self.last_rescan.elapsed() > Duration::from_millis(500)
        {
            // A namespace created after we started (e.g. a new pod): look again, at most twice a second.
            self.netns = NetnsNames::scan();
            self.last_rescan = Instant::now();
        }
        let Some(mut ev) = KernelEvent::decode(raw, &self.names, &self.netns) else { return };
        ev.locate(raw, self.symbols.as_mut());
        let mut state = shared.state.lock().expect("capture state");
        for w in &mut state.watches {
            w.offer(raw, &ev);
        }
        let gone = state.subscriber.as_ref().is_some_and(|tx| tx.send(ev).is_err());
        if gone {
            state.subscriber = None;
        }
    }
}

fn missing_map(name: &str) -> Error {
    ebpf_error(name, std::io::Error::other("map not in object"))
}
