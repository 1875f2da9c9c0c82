//! netcheck: runs the network troubleshooting ladder of a Kubernetes node in one command and
//! answers with verdicts backed by kernel evidence (eBPF).
//!
//! Domains: `probes` send traffic, `capture` gathers the kernel's drops/resets, `correlation`
//! turns both into verdicts, `output` prints them, `cli` ties them to the command line.

pub mod agent;
pub mod capture;
pub mod cli;
pub mod correlation;
pub mod discovery;
pub mod error;
pub mod netns;
pub mod output;
pub mod privileges;
pub mod probes;
