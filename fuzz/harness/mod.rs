//! The fuzz targets' logic, shared by `cargo fuzz` (fuzz/fuzz_targets/*.rs) and
//! the stable corpus replay (tests/fuzz_corpus.rs): one `run(&[u8])` per target
//! that panics when an invariant breaks. Only portcullis' public API is used,
//! so nothing in the product exists for fuzzing's sake.

pub mod check;
pub mod claim_paths;
pub mod config;
pub mod fixtures;
pub mod jwks;
pub mod token;
