//! netcheck: runs the network troubleshooting ladder of a Kubernetes node in one command and
//! answers with verdicts backed by kernel evidence (eBPF).
//!
//! Layers, top to bottom; each imports only those below it (`tests/tests/layers.rs` fails on an
//! import that runs up):
//! - `cli`: the command line, a thin front end; `agent`: the DaemonSet's loop, metrics, HTTP.
//! - `jobs`: the work both run (a check's or the node's jobs, the runner, peer sampling).
//! - `output` prints the document (table, JSON, npd); `verdict` turns probe reports and kernel
//!   events into verdicts (status, cause, detail) per check, per hop and per node problem.
//! - `probes` send traffic; `discovery` reads the node (files, rtnetlink, the API, resolv.conf,
//!   a peer's agent); `capture` gathers the kernel's drops, resets and ICMP errors (eBPF).
//! - `netns`, `privileges`, `time`, `error`.

pub mod agent;
pub mod capture;
pub mod cli;
pub mod discovery;
pub mod error;
pub mod failpoint;
pub mod jobs;
pub mod netns;
pub mod output;
pub mod privileges;
pub mod probes;
pub mod time;
pub mod verdict;
