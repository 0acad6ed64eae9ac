//! Adversarial: a hand-written batch export whose result is invalid (one
//! row short) iff its batch holds the target (id 7) with an income over the
//! threshold, so that the query would fail exactly then. Refused at upload:
//! only per-row functions are accepted, and they have no result header to
//! get wrong (a NaN, their only invalid value, is a null).
use udf_sdk::{OutputHeader, UdfType};

udf_sdk::udf_module!();

fn column<T: Copy>(addr: u32, n: usize) -> &'static [T] {
    // SAFETY: the batch ABI placed `n` values there for this call.
    unsafe { core::slice::from_raw_parts(addr as usize as *const T, n) }
}

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
    let values = Vec::leak(vec![1.0f64; n]);
    let header = OutputHeader {
        rows: if found { n as u32 - 1 } else { n as u32 },
        ty: UdfType::Float64.tag(),
        values: values.as_ptr() as usize as u32,
        validity: 0,
        null_count: 0,
    };
    Box::leak(Box::new(header.encode())).as_ptr() as usize as i32
}

udf_sdk::declare_udf!(probe(i64, f64) -> f64);
