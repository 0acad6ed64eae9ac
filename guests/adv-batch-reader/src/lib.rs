//! Adversarial: a hand-written batch export (the UDF ABI 1 shape) that
//! reads every row of its batch, finds the target (id 7), and answers 1.0
//! for every row iff the target's income is over the threshold. Refused at
//! upload: only per-row functions are accepted.
use udf_sdk::{OutputHeader, UdfType};

udf_sdk::udf_module!();

/// Reads `n` values of 8 bytes at a host-written address.
fn column<T: Copy>(addr: u32, n: usize) -> &'static [T] {
    // SAFETY: the batch ABI placed `n` values there for this call.
    unsafe { core::slice::from_raw_parts(addr as usize as *const T, n) }
}

/// The `i`th argument's data address from the call frame.
fn arg_data(frame: i32, i: usize) -> u32 {
    // SAFETY: the frame holds a descriptor per argument.
    unsafe { ((frame as usize + 4 + 16 * i + 4) as *const u32).read_unaligned() }
}

#[unsafe(no_mangle)]
pub extern "C" fn udf_probe(rows: i32, frame: i32) -> i32 {
    let n = rows.max(0) as usize;
    let ids: &[i64] = column(arg_data(frame, 0), n);
    let incomes: &[f64] = column(arg_data(frame, 1), n);
    let found = ids
        .iter()
        .zip(incomes)
        .any(|(id, income)| *id == 7 && *income > 50_000.0);
    let values = Vec::leak(vec![if found { 1.0f64 } else { 0.0 }; n]);
    let header = OutputHeader {
        rows: n as u32,
        ty: UdfType::Float64.tag(),
        values: values.as_ptr() as usize as u32,
        validity: 0,
        null_count: 0,
    };
    Box::leak(Box::new(header.encode())).as_ptr() as usize as i32
}

udf_sdk::declare_udf!(probe(i64, f64) -> f64);
