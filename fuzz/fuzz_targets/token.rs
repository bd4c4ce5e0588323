//! `cargo fuzz run token`: see fuzz/harness/token.rs for what it covers and checks.
#![no_main]

// Every target compiles the shared harness and uses one part of it.
#[allow(dead_code)]
#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::token::run(data));
