//! Greatest common divisor of two 64-bit integers, by Euclid's algorithm.
udf_sdk::udf_module!();

/// Euclid's algorithm, dividing in 32 bits once both operands fit (as
/// optimising compilers do for native x86-64 code; a 64-bit division is
/// several times slower).
fn gcd_u64(mut x: u64, mut y: u64) -> u64 {
    while y != 0 {
        let r = if (x | y) >> 32 == 0 {
            u64::from(x as u32 % y as u32)
        } else {
            x % y
        };
        (x, y) = (y, r);
    }
    x
}

udf_sdk::scalar_udf!(
    /// `gcd(a, b)` of the absolute values; `gcd(0, 0)` is 0. The result is
    /// null when it does not fit an `i64` (only `gcd(i64::MIN, 0)` and
    /// `gcd(i64::MIN, i64::MIN)`).
    pub fn gcd(a: i64, b: i64) -> Option<i64> {
        i64::try_from(gcd_u64(a.unsigned_abs(), b.unsigned_abs())).ok()
    }
);
