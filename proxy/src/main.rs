//! The `sekisho` command: `run` the proxy, `check` a configuration, generate keys; each family of
//! commands is a module of [`cli`].

mod cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
