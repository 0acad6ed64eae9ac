//! The adapters over the service core: the `unseen` command line, the HTTP
//! server and its client, the demo, the benchmarks and the witness.
//!
//! The rules live in `unseen-core` ([`Domain`]); this crate only carries
//! requests to it and answers back, over a terminal or HTTP. It re-exports
//! the core, so `unseen::Domain` is the core's.
#![forbid(unsafe_code)]

pub use unseen_core::*;

pub mod backend;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster_engine;
pub mod config;
pub mod conns;
pub mod console;
pub mod demo;
pub mod export;
pub mod import;
pub mod logging;
pub mod server;
pub mod tls;
pub mod witness;

/// The example guests, built for wasm32 by `build.rs`.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
