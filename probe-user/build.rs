//! Builds the eBPF programs (probe-ebpf) for bpfel-unknown-none with the nightly toolchain and
//! bpf-linker; the object lands in OUT_DIR and is embedded into the binary by src/capture/mod.rs.
fn main() -> anyhow::Result<()> {
    if std::env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return Ok(());
    }
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../probe-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "probe-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
