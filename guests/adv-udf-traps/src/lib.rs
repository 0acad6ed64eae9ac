//! Adversarial: UDFs that trap in the ways a limit must stop.
udf_sdk::udf_module!();

udf_sdk::scalar_udf!(
    /// Never returns: the wall-clock deadline stops it.
    pub fn spin(a: i64) -> i64 {
        let mut x = a;
        loop {
            x = core::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }
);

udf_sdk::scalar_udf!(
    /// Allocates until the memory limit stops it.
    pub fn hoard(a: i64) -> i64 {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; 1 << 20];
            block[hoard.len() % (1 << 20)] = a as u8;
            hoard.push(core::hint::black_box(block));
        }
    }
);

udf_sdk::scalar_udf!(
    /// Panics on a negative value: `unreachable` in wasm (panic = abort).
    pub fn fussy(a: i64) -> i64 {
        assert!(a >= 0, "negative input");
        a
    }
);
