//! The `sekisho` command: `run` the proxy, `check` a configuration, generate keys; each family of
//! commands is a module of [`cli`].

mod cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sekisho::server::set_memory_release(release_memory);
    cli::main()
}

/// Hands the calling thread's free allocator pages back to the system: an HTTP/1.1 connection
/// that goes idle frees its buffers (`server/conn.rs`), and without this the allocator would keep
/// them resident until the thread allocates again.
#[allow(
    unsafe_code,
    reason = "mi_collect is mimalloc's own entry point; it takes no pointers and is safe to call from any thread at any time"
)]
fn release_memory() {
    // SAFETY: no arguments but a flag; mimalloc documents it as callable at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
