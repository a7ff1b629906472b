//! Builds the kernel programs (`proxy-ebpf-ebpf`, nightly, `bpfel-unknown-none`) into `OUT_DIR`,
//! where `src/lib.rs` embeds it.

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").context("cargo did not set CARGO_MANIFEST_DIR")?;
    let root_dir = format!("{manifest_dir}/ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "proxy-ebpf-ebpf",
            root_dir: &root_dir,
            ..Package::default()
        }],
        Toolchain::default(),
    )
}
