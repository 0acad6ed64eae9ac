//! Adversarial: aggregate UDFs that lie about their results or never end.
use udf_sdk::{OutputHeader, UdfType};

udf_sdk::udf_module!();

/// `short`: an honest empty state and no-op folds, but a result header
/// with one row more than the states it was asked to finish.
#[unsafe(no_mangle)]
pub extern "C" fn udaf_short_init(_state: i32) -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn udaf_short_update(_: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn udaf_short_merge(_: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn udaf_short_finish(n: i32, _states: i32) -> i32 {
    let values: &'static mut [f64] = Vec::leak(vec![1.0; n.max(0) as usize + 1]);
    let header = OutputHeader {
        rows: n as u32 + 1,
        ty: UdfType::Float64.tag(),
        values: values.as_ptr() as usize as u32,
        validity: 0,
        null_count: 0,
    };
    let bytes: &'static mut [u8; 20] = Box::leak(Box::new(header.encode()));
    bytes.as_ptr() as usize as i32
}

udf_sdk::declare_aggregate!(short(f64) -> f64, state 8);

/// `unknown_status`: an update that answers with a status the ABI does not define.
#[unsafe(no_mangle)]
pub extern "C" fn udaf_unknown_status_init(_state: i32) -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn udaf_unknown_status_update(_: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
    77
}

#[unsafe(no_mangle)]
pub extern "C" fn udaf_unknown_status_merge(_: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn udaf_unknown_status_finish(_n: i32, _states: i32) -> i32 {
    0
}

udf_sdk::declare_aggregate!(unknown_status(f64) -> f64, state 8);

udf_sdk::aggregate_udf!(
    /// Never finishes a batch: the wall-clock deadline stops it.
    fn spin(x: i64) -> i64 {
        state: i64 = 0;
        update(s) {
            let mut y = x;
            loop {
                y = core::hint::black_box(y.wrapping_mul(31).wrapping_add(*s));
            }
        }
        merge(s, other) { *s += other; }
        finish(s) { *s }
    }
);
