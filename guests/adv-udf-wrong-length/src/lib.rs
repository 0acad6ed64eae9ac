//! Adversarial: scalar exports whose result header lies about the result.
use udf_sdk::{OutputHeader, UdfType};

udf_sdk::udf_module!();

/// Leaks `rows` doubles and a header describing `header_rows` of type `ty`.
fn answer(rows: i32, header_rows: u32, ty: UdfType) -> i32 {
    let values: &'static mut [f64] = Vec::leak(vec![1.0; rows.max(0) as usize]);
    let header = OutputHeader {
        rows: header_rows,
        ty: ty.tag(),
        values: values.as_ptr() as usize as u32,
        validity: 0,
        null_count: 0,
    };
    let bytes: &'static mut [u8; 20] = Box::leak(Box::new(header.encode()));
    bytes.as_ptr() as usize as i32
}

/// Returns one row fewer than it was given.
#[unsafe(no_mangle)]
pub extern "C" fn udf_short(rows: i32, _frame: i32) -> i32 {
    answer(rows, (rows as u32).wrapping_sub(1), UdfType::Float64)
}

/// Returns integers where doubles were declared.
#[unsafe(no_mangle)]
pub extern "C" fn udf_wrong_type(rows: i32, _frame: i32) -> i32 {
    answer(rows, rows as u32, UdfType::Int64)
}

// Declared like honest functions: the lies are in the results.
udf_sdk::declare_udf!(short(f64) -> f64);
udf_sdk::declare_udf!(wrong_type(f64) -> f64);
