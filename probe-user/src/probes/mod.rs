//! Probes: each sends real traffic under a deadline and reports what happened, with the
//! kernel events of its own flow. Turning that into a verdict is `verdict`'s job.

pub mod cert;
pub mod dns;
pub mod icmp;
pub mod kubelet;
pub mod mtu;
pub mod nat;
pub mod path;
pub mod service;
pub mod target;
pub mod tcp;
pub mod vxlan;

pub use target::Target;

static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// An identifier for a probe's packets (DNS message id, ICMP echo identifier): clock bits
/// mixed with a counter, so concurrent probes of one process differ. Unpredictable enough for
/// a probe, not for anything secret; never 0.
pub fn fresh_id() -> u16 {
    let ns = crate::time::monotonic_ns();
    #[allow(clippy::cast_possible_truncation)]
    let clock = (ns ^ (ns >> 16) ^ (ns >> 32)) as u16;
    (clock ^ NEXT_ID.fetch_add(40_503, std::sync::atomic::Ordering::Relaxed)) | 1
}
