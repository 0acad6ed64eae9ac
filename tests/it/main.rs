//! End-to-end tests: every path drives the `unseen` CLI in-process and reads
//! what a user would read.

mod api;
mod applications;
mod architecture;
mod attest;
mod audit;
mod bench;
mod boundary;
mod budget;
mod canary;
mod cli;
mod cli_errors;
mod clock;
mod console;
mod demo;
mod dev;
mod extract;
mod flights;
mod import;
mod joins;
mod ledger_integrity;
mod limits;
mod load;
mod one_truth;
mod operations;
mod outcome;
mod query;
mod readme;
mod releases;
mod reuse;
mod server;
mod support;
mod timing;
mod trace;
mod udfs;
mod witness;
