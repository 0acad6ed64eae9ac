//! The HTTP API's contract: the request and response bodies that the server
//! (`unseen serve`) and its clients (`unseen --server`, tests, other
//! languages) share, and the OpenAPI document built from them and from the
//! server's route table ([`openapi::document`]).
//!
//! A body is defined once, here: the server deserializes the same type the
//! client serializes, so a renamed field is a compile error on both sides
//! rather than a field one side silently ignores. Request bodies refuse
//! unknown fields.
//!
//! This crate holds data types only: no IO, no engine, no policy. It must
//! never depend on the service core, so that a client links nothing of it.
#![forbid(unsafe_code)]

pub mod applications;
pub mod imports;
pub mod openapi;
pub mod requests;
pub mod responses;
pub mod views;

pub use applications::*;
pub use imports::*;
pub use requests::*;
pub use responses::*;
pub use views::*;
