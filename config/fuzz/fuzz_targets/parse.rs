//! Any text must parse into a `Config` or into errors; never a panic.
#![no_main]
#![forbid(unsafe_code)]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &str| {
    let env = |name: &str| Some(format!("value-of-{name}"));
    let _ = sekisho_config::parse(source, Path::new("fuzz/sekisho.yaml"), &env);
});
