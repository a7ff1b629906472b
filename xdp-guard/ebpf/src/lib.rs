//! Exists so that the user-space crate can list this one as a build-dependency (cargo then reruns
//! its `build.rs` when the kernel code changes); the program itself is the `xdp-guard` binary.
#![no_std]
