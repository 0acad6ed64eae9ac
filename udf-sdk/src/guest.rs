//! The guest side of the ABI: host imports and the safe [`Ctx`] wrapper.
//!
//! This is the only module of the SDK with `unsafe`: calls into the host's
//! imports. Job authors use [`Ctx`] and never see a pointer.
#![allow(unsafe_code)]

use crate::{DryRun, Error, QueryResult, Table, abi};

#[link(wasm_import_module = "unseen_v1")]
unsafe extern "C" {
    /// Runs a query. Returns the byte length of the pending response:
    /// `n >= 0` a released result, `n < 0` a refusal message of `-n` bytes.
    fn query(sql_ptr: *const u8, sql_len: usize) -> i32;
    /// Asks the policy for its verdict on a query without running it or
    /// spending budget; same response protocol as `query`.
    fn dry_run(sql_ptr: *const u8, sql_len: usize) -> i32;
    /// Reads a job parameter; same response protocol as `query`.
    fn param(name_ptr: *const u8, name_len: usize) -> i32;
    /// Copies the pending response into `dst`; returns the bytes copied.
    fn response_read(dst: *mut u8, dst_len: usize) -> i32;
    /// Emits a named output table to quarantine. `0` ok, `n < 0` error message pending.
    fn emit(name_ptr: *const u8, name_len: usize, data_ptr: *const u8, data_len: usize) -> i32;
    /// Writes a log line (level: 0 debug, 1 info, 2 warn, 3 error).
    fn log(level: i32, msg_ptr: *const u8, msg_len: usize);
}

/// The result every job returns.
pub type JobResult = Result<(), Error>;

/// Severity of a job log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail for the author.
    Debug = 0,
    /// Normal progress.
    Info = 1,
    /// Something looks wrong.
    Warn = 2,
    /// The job failed.
    Error = 3,
}

/// The job's handle on the host: query, emit, log, read parameters.
#[derive(Debug)]
pub struct Ctx {
    _private: (),
}

fn take_response(len: i32) -> Result<Vec<u8>, Error> {
    let (ok, n) = if len >= 0 {
        (true, len as usize)
    } else {
        (false, len.unsigned_abs() as usize)
    };
    let mut buf = vec![0u8; n];
    // SAFETY: `buf` is a live, writable allocation of exactly `n` bytes and
    // the host writes at most `dst_len` bytes into it.
    let copied = unsafe { response_read(buf.as_mut_ptr(), n) };
    if copied < 0 || copied as usize != n {
        return Err(Error::new("host returned a response of unexpected length"));
    }
    if ok {
        Ok(buf)
    } else {
        Err(Error::new(String::from_utf8_lossy(&buf).into_owned()))
    }
}

impl Ctx {
    /// Runs one SQL query through the policy and returns what it released:
    /// DP estimates with confidence intervals, never raw rows.
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, Error> {
        // SAFETY: `sql` is a valid UTF-8 slice for the duration of the call.
        let len = unsafe { query(sql.as_ptr(), sql.len()) };
        let bytes = take_response(len)?;
        Ok(abi::decode_query_result(&bytes)?)
    }

    /// Asks the policy what `sql` would cost, without running it or spending:
    /// whether it would be admitted, why, the epsilon and the confidence
    /// level. An `Err` means the host could not judge it (for example, this
    /// host does not offer dry runs); a refusal is `Ok` with `admitted: false`.
    pub fn dry_run(&mut self, sql: &str) -> Result<DryRun, Error> {
        // SAFETY: `sql` is a valid UTF-8 slice for the duration of the call.
        let len = unsafe { dry_run(sql.as_ptr(), sql.len()) };
        let bytes = take_response(len)?;
        Ok(abi::decode_dry_run(&bytes)?)
    }

    /// Reads a job parameter given at submission, if present.
    pub fn param(&mut self, name: &str) -> Option<String> {
        // SAFETY: `name` is a valid slice for the duration of the call.
        let len = unsafe { param(name.as_ptr(), name.len()) };
        take_response(len)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Emits a named table. It goes to quarantine and leaves only after review.
    pub fn emit(&mut self, name: &str, table: &Table) -> Result<(), Error> {
        table.validate()?;
        let data = abi::encode_table(table);
        // SAFETY: both slices are valid for the duration of the call.
        let rc = unsafe { emit(name.as_ptr(), name.len(), data.as_ptr(), data.len()) };
        if rc < 0 {
            take_response(rc).map(|_| ())
        } else {
            Ok(())
        }
    }

    /// Writes a log line. It goes to review with the job's outcome (like
    /// its exit code and error): reviewers read it, and the submitter once
    /// a reviewer approves the outcome.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        // SAFETY: `message` is a valid slice for the duration of the call.
        unsafe { log(level as i32, message.as_ptr(), message.len()) }
    }
}

/// Runs a job function; called by the code [`job!`](crate::job) generates.
#[doc(hidden)]
pub fn __run_job(run: fn(&mut Ctx) -> JobResult) -> i32 {
    let mut ctx = Ctx { _private: () };
    match run(&mut ctx) {
        Ok(()) => 0,
        Err(e) => {
            ctx.log(LogLevel::Error, &e.message);
            1
        }
    }
}
