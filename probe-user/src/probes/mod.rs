//! Probes: each sends real traffic under a deadline and reports what happened, with the
//! kernel events of its own flow. Turning that into a verdict is `correlation`'s job.

pub mod cert;
pub mod dns;
pub mod icmp;
pub mod kubelet;
pub mod mtu;
pub mod target;
pub mod tcp;
pub mod vxlan;

pub use target::Target;
