//! Greatest common divisor of two 64-bit integers, by Euclid's algorithm.
udf_sdk::udf_module!();

/// Euclid's algorithm: 64-bit divisions until both operands fit 32 bits,
/// then a loop of 32-bit divisions (as optimising compilers do for native
/// x86-64 code; a 64-bit division is several times slower).
fn gcd_u64(mut x: u64, mut y: u64) -> u64 {
    while (x | y) >> 32 != 0 {
        if y == 0 {
            return x;
        }
        (x, y) = (y, x % y);
    }
    let (mut x, mut y) = (x as u32, y as u32);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    u64::from(x)
}

udf_sdk::scalar_udf!(
    /// `gcd(a, b)` of the absolute values; `gcd(0, 0)` is 0. The result is
    /// null when it does not fit an `i64` (only `gcd(i64::MIN, 0)` and
    /// `gcd(i64::MIN, i64::MIN)`).
    pub fn gcd(a: i64, b: i64) -> Option<i64> {
        i64::try_from(gcd_u64(a.unsigned_abs(), b.unsigned_abs())).ok()
    }
);
