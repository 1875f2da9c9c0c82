//! Present so that probe-user can declare a build-dependency on this crate (cargo then
//! rebuilds the eBPF object when it changes); the programs are in `main.rs`.
#![no_std]
