//! Adversarial: result headers pointing outside the guest's memory, or
//! whose validity bitmap disagrees with its null count.
use udf_sdk::{OutputHeader, UdfType};

udf_sdk::udf_module!();

fn leak_header(header: OutputHeader) -> i32 {
    let bytes: &'static mut [u8; 20] = Box::leak(Box::new(header.encode()));
    bytes.as_ptr() as usize as i32
}

fn values(rows: i32) -> u32 {
    Vec::leak(vec![2.0f64; rows.max(0) as usize]).as_ptr() as usize as u32
}

/// The header itself is past the end of memory.
#[unsafe(no_mangle)]
pub extern "C" fn udf_header_outside(_rows: i32, _frame: i32) -> i32 {
    0x7fff_fff0
}

/// The values run past the end of memory.
#[unsafe(no_mangle)]
pub extern "C" fn udf_values_outside(rows: i32, _frame: i32) -> i32 {
    leak_header(OutputHeader {
        rows: rows as u32,
        ty: UdfType::Float64.tag(),
        values: 0xffff_fff8,
        validity: 0,
        null_count: 0,
    })
}

/// The validity bitmap runs past the end of memory.
#[unsafe(no_mangle)]
pub extern "C" fn udf_validity_outside(rows: i32, _frame: i32) -> i32 {
    leak_header(OutputHeader {
        rows: rows as u32,
        ty: UdfType::Float64.tag(),
        values: values(rows),
        validity: 0xffff_ff00,
        null_count: 1,
    })
}

/// Claims no nulls while its bitmap marks every row null.
#[unsafe(no_mangle)]
pub extern "C" fn udf_lying_nulls(rows: i32, _frame: i32) -> i32 {
    let bitmap = Vec::leak(vec![0u8; (rows.max(0) as usize).div_ceil(8)]);
    leak_header(OutputHeader {
        rows: rows as u32,
        ty: UdfType::Float64.tag(),
        values: values(rows),
        validity: bitmap.as_ptr() as usize as u32,
        null_count: 0,
    })
}

// Declared like honest functions: the lies are in the results.
udf_sdk::declare_udf!(header_outside(f64) -> f64);
udf_sdk::declare_udf!(values_outside(f64) -> f64);
udf_sdk::declare_udf!(validity_outside(f64) -> f64);
udf_sdk::declare_udf!(lying_nulls(f64) -> f64);
