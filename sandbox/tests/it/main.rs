//! Integration tests of the sandbox against real wasm32 guests (`guests/`).

mod adversarial;
mod cache;
mod dry_run;
mod isolation;
mod pool;
mod support;
mod udaf;
mod udf;
