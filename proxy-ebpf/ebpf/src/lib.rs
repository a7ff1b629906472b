//! Exists so that the user-space crate can list this one as a build-dependency (cargo then reruns
//! its `build.rs` when the kernel code changes); the programs themselves are the `proxy-ebpf`
//! binary.
#![no_std]
