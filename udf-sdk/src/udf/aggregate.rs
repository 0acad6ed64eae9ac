//! Aggregate UDFs: the layout of their exports and declarations, and the
//! fixed-size states they keep per group (see `ABI.md`, "Aggregate
//! functions").
//!
//! The host owns every group's state as `state_bytes` opaque bytes, so a
//! state survives the instance that computed it, crosses partitions
//! (DataFusion's partial and final aggregation) and is never kept in guest
//! memory between calls. The guest only says how to start a state, fold a
//! batch of rows into the states of their groups, merge two states and
//! finish one into a value.
//!
//! ```ignore
//! udf_sdk::udf_module!();
//!
//! udf_sdk::aggregate_udf!(
//!     /// Geometric mean of the positive values; null when there are none.
//!     fn geo_mean(x: f64) -> Option<f64> {
//!         state: (f64, i64) = (0.0, 0);
//!         update(s) { if x > 0.0 { s.0 += x.ln(); s.1 += 1; } }
//!         merge(s, other) { s.0 += other.0; s.1 += other.1; }
//!         finish(s) { (s.1 > 0).then(|| (s.0 / s.1 as f64).exp()) }
//!     }
//! );
//! ```

use super::{Declaration, UdfType};

/// Prefix of an aggregate's four exports:
/// `udaf_<name>_init`, `_update`, `_merge` and `_finish`.
pub const AGGREGATE_EXPORT_PREFIX: &str = "udaf_";

/// Custom section in which `aggregate_udf!` declares each aggregate's name,
/// types and state size.
pub const AGGREGATE_DECLARATION_SECTION: &str = "unseen_udaf";

/// Largest state an aggregate may declare, in bytes. The host copies every
/// group's state in and out once per batch, so states are meant to be a few
/// counters, not buffers of values.
pub const MAX_STATE_BYTES: usize = 1024;

/// Group index meaning "this row is filtered out; skip it".
pub const SKIP_ROW: u32 = u32::MAX;

/// Status an aggregate export returns when it did its work.
pub const STATUS_OK: i32 = 0;
/// Status when the frame or buffers do not match the declared function.
pub const STATUS_MISMATCH: i32 = 1;
/// Status when a group index is not below the number of groups.
pub const STATUS_BAD_GROUP: i32 = 2;

/// The four exports of an aggregate, in the order the host checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateExport {
    /// `(state: i32) -> i32`: writes the empty state at `state`.
    Init,
    /// `(rows, frame, groups, states, n_groups) -> i32`: folds each row into
    /// the state of its group.
    Update,
    /// `(rows, others, groups, states, n_groups) -> i32`: merges the `rows`
    /// states at `others` into the states of their groups.
    Merge,
    /// `(n, states) -> i32`: the result header of `n` finished states.
    Finish,
}

impl AggregateExport {
    /// Every export, in order.
    pub const ALL: [AggregateExport; 4] = [
        AggregateExport::Init,
        AggregateExport::Update,
        AggregateExport::Merge,
        AggregateExport::Finish,
    ];

    /// The suffix after `udaf_<name>`.
    pub const fn suffix(self) -> &'static str {
        match self {
            AggregateExport::Init => "_init",
            AggregateExport::Update => "_update",
            AggregateExport::Merge => "_merge",
            AggregateExport::Finish => "_finish",
        }
    }

    /// Number of `i32` parameters; every export returns one `i32`.
    pub const fn params(self) -> usize {
        match self {
            AggregateExport::Init => 1,
            AggregateExport::Update | AggregateExport::Merge => 5,
            AggregateExport::Finish => 2,
        }
    }

    /// The export's name for the aggregate `name`.
    pub fn export(self, name: &str) -> String {
        format!("{AGGREGATE_EXPORT_PREFIX}{name}{}", self.suffix())
    }
}

/// One aggregate as a module declares it in
/// [`AGGREGATE_DECLARATION_SECTION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateDeclaration {
    /// Name and types, as for a scalar function.
    pub function: Declaration,
    /// Bytes of one group's state, 1 to [`MAX_STATE_BYTES`].
    pub state_bytes: usize,
}

/// Bytes of one aggregate declaration record: a scalar record followed by
/// the state size as a little-endian `u16`.
pub const fn aggregate_declaration_len(name: &str, n_args: usize) -> usize {
    super::declaration_len(name, n_args) + 2
}

/// The declaration record of an aggregate, at compile time (the
/// `aggregate_udf!` macro places it in [`AGGREGATE_DECLARATION_SECTION`]).
/// `N` must be [`aggregate_declaration_len`].
pub const fn encode_aggregate_declaration<const N: usize>(
    name: &str,
    args: &[UdfType],
    returns: UdfType,
    state_bytes: usize,
) -> [u8; N] {
    assert!(
        N == aggregate_declaration_len(name, args.len()),
        "N must be aggregate_declaration_len"
    );
    assert!(
        state_bytes > 0 && state_bytes <= MAX_STATE_BYTES,
        "an aggregate state is 1 to MAX_STATE_BYTES bytes"
    );
    let mut out = [0u8; N];
    let at = super::write_record(&mut out, name, args, returns);
    let size = (state_bytes as u16).to_le_bytes();
    out[at] = size[0];
    out[at + 1] = size[1];
    out
}

/// Reads every record of an [`AGGREGATE_DECLARATION_SECTION`]'s bytes, or
/// says what is wrong.
pub fn decode_aggregate_declarations(
    mut bytes: &[u8],
) -> Result<Vec<AggregateDeclaration>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let function = super::read_record(&mut bytes)?;
        let size = super::take(2, "a state size", &mut bytes)?;
        let state_bytes = usize::from(u16::from_le_bytes([size[0], size[1]]));
        if state_bytes == 0 || state_bytes > MAX_STATE_BYTES {
            return Err(format!(
                "aggregate `{}` declares a state of {state_bytes} bytes; 1 to {MAX_STATE_BYTES} are allowed",
                function.name
            ));
        }
        out.push(AggregateDeclaration {
            function,
            state_bytes,
        });
    }
    Ok(out)
}

/// A value an aggregate keeps per group, stored by the host as
/// [`AggState::BYTES`] little-endian bytes.
///
/// Implemented for `f64`, `i64`, `u64`, `bool`, tuples of up to four states
/// and arrays of states, so a state is written as a plain Rust value
/// (`(f64, i64)` for a sum and a count) with no encoding code.
pub trait AggState: Copy {
    /// Bytes of the encoded state.
    const BYTES: usize;
    /// Reads a state from exactly [`Self::BYTES`] bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Writes the state into exactly [`Self::BYTES`] bytes.
    fn write(&self, out: &mut [u8]);
}

macro_rules! number_state {
    ($($t:ty),*) => {$(
        impl AggState for $t {
            const BYTES: usize = size_of::<$t>();
            fn read(bytes: &[u8]) -> Self {
                let mut raw = [0u8; size_of::<$t>()];
                raw.copy_from_slice(&bytes[..Self::BYTES]);
                <$t>::from_le_bytes(raw)
            }
            fn write(&self, out: &mut [u8]) {
                out[..Self::BYTES].copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

number_state!(f64, i64, u64);

impl AggState for bool {
    const BYTES: usize = 1;
    fn read(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write(&self, out: &mut [u8]) {
        out[0] = u8::from(*self);
    }
}

macro_rules! tuple_state {
    ($($name:ident : $index:tt),+) => {
        impl<$($name: AggState),+> AggState for ($($name,)+) {
            const BYTES: usize = 0 $(+ $name::BYTES)+;
            #[allow(unused_assignments)]
            fn read(bytes: &[u8]) -> Self {
                let mut at = 0;
                ($({
                    let part = $name::read(&bytes[at..at + $name::BYTES]);
                    at += $name::BYTES;
                    part
                },)+)
            }
            #[allow(unused_assignments)]
            fn write(&self, out: &mut [u8]) {
                let mut at = 0;
                $(
                    self.$index.write(&mut out[at..at + $name::BYTES]);
                    at += $name::BYTES;
                )+
            }
        }
    };
}

tuple_state!(A: 0);
tuple_state!(A: 0, B: 1);
tuple_state!(A: 0, B: 1, C: 2);
tuple_state!(A: 0, B: 1, C: 2, D: 3);

impl<T: AggState, const N: usize> AggState for [T; N] {
    const BYTES: usize = N * T::BYTES;
    fn read(bytes: &[u8]) -> Self {
        std::array::from_fn(|i| T::read(&bytes[i * T::BYTES..(i + 1) * T::BYTES]))
    }
    fn write(&self, out: &mut [u8]) {
        for (i, part) in self.iter().enumerate() {
            part.write(&mut out[i * T::BYTES..(i + 1) * T::BYTES]);
        }
    }
}

/// Declares an aggregate UDF over whole batches.
///
/// ```ignore
/// udf_sdk::aggregate_udf!(
///     /// Mean of the values weighted by `w`; null when the weights sum to 0.
///     fn weighted_mean(x: f64, w: f64) -> Option<f64> {
///         state: (f64, f64) = (0.0, 0.0);
///         update(s) { s.0 += x * w; s.1 += w; }
///         merge(s, other) { s.0 += other.0; s.1 += other.1; }
///         finish(s) { (s.1 != 0.0).then(|| s.0 / s.1) }
///     }
/// );
/// ```
///
/// - `state: T = init;` the state of one group ([`AggState`]: numbers,
///   tuples and arrays of them) and the state of a group with no rows yet.
///   `init` must not depend on anything but constants: the host evaluates
///   it once per query and copies it to every new group.
/// - `update(s) { .. }` folds one row into its group's state `s: &mut T`.
///   The arguments are in scope by their names as plain values. Rows where
///   any argument is null are skipped, as SQL aggregates skip nulls.
/// - `merge(s, other) { .. }` adds the state `other: T` (a partial result of
///   another partition) into `s: &mut T`.
/// - `finish(s) { .. }` turns `s: &T` into the result: `i64`, `f64`,
///   `Option<i64>` or `Option<f64>` (`None` is a null).
///
/// Arguments may be `i64`, `f64` or `&str`. The aggregate is declared in
/// the module's [`AGGREGATE_DECLARATION_SECTION`], so it is callable from
/// SQL by name once the module is uploaded; it needs
/// [`udf_module!`](crate::udf_module) once in the crate. Under the policy a
/// wasm aggregate is not differentially private: it is admitted over open
/// columns (and released tables) only.
#[macro_export]
macro_rules! aggregate_udf {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ( $($arg:ident : $t:ty),+ $(,)? ) -> $ret:ty {
            state: $state:ty = $init:expr;
            update($s:ident) $update:block
            merge($m:ident, $other:ident) $merge:block
            finish($f:ident) $finish:block
        }
    ) => {
        const _: () = {
            #[unsafe(export_name = concat!("udaf_", stringify!($name), "_init"))]
            extern "C" fn __unseen_init(state: i32) -> i32 {
                $crate::udf::__aggregate_init::<$state>(state, || -> $state { $init })
            }

            $(#[$meta])*
            #[unsafe(export_name = concat!("udaf_", stringify!($name), "_update"))]
            extern "C" fn __unseen_update(
                rows: i32,
                frame: i32,
                groups: i32,
                states: i32,
                n_groups: i32,
            ) -> i32 {
                $crate::udf::__aggregate_update::<$state>(
                    rows,
                    frame,
                    groups,
                    states,
                    n_groups,
                    |__args, __groups| {
                        let mut __index = 0usize;
                        $(
                            let $arg = __args.arg::<$t>(__index)?;
                            __index += 1;
                        )+
                        __args.expect_count(__index)?;
                        __groups.each(|__row, $s: &mut $state| {
                            $(
                                let ::core::option::Option::Some($arg) = $arg.get(__row) else {
                                    return;
                                };
                            )+
                            $update
                        });
                        ::core::option::Option::Some(())
                    },
                )
            }

            #[unsafe(export_name = concat!("udaf_", stringify!($name), "_merge"))]
            extern "C" fn __unseen_merge(
                rows: i32,
                others: i32,
                groups: i32,
                states: i32,
                n_groups: i32,
            ) -> i32 {
                $crate::udf::__aggregate_merge::<$state>(
                    rows,
                    others,
                    groups,
                    states,
                    n_groups,
                    |$m: &mut $state, $other: $state| $merge,
                )
            }

            #[unsafe(export_name = concat!("udaf_", stringify!($name), "_finish"))]
            extern "C" fn __unseen_finish(n: i32, states: i32) -> i32 {
                $crate::udf::__aggregate_finish::<$state, $ret>(n, states, |$f: &$state| -> $ret {
                    $finish
                })
            }

        };
        $crate::declare_aggregate!(
            $name($($t),+) -> $ret,
            state <$state as $crate::udf::AggState>::BYTES
        );
    };
}

/// Declares an aggregate in the module's [`AGGREGATE_DECLARATION_SECTION`]
/// without defining it: for `udaf_<name>_*` exports written by hand.
///
/// ```ignore
/// udf_sdk::declare_aggregate!(short(f64) -> f64, state 8);
/// ```
#[macro_export]
macro_rules! declare_aggregate {
    ($name:ident ( $($t:ty),+ $(,)? ) -> $ret:ty, state $bytes:expr) => {
        const _: () = {
            const __NAME: &str = stringify!($name);
            const __ARGS: &[$crate::udf::UdfType] =
                &[$(<$t as $crate::udf::ArgType<'static>>::TYPE),+];
            const __LEN: usize = $crate::udf::aggregate_declaration_len(__NAME, __ARGS.len());
            #[used]
            #[unsafe(link_section = "unseen_udaf")]
            static __DECLARATION: [u8; __LEN] = $crate::udf::encode_aggregate_declaration::<__LEN>(
                __NAME,
                __ARGS,
                <$ret as $crate::udf::UdfReturn>::TYPE,
                $bytes,
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_bytes() {
        let state: (f64, i64, [u64; 2], bool) = (-2.5, -7, [1, u64::MAX], true);
        assert_eq!(<(f64, i64, [u64; 2], bool)>::BYTES, 8 + 8 + 16 + 1);
        let mut bytes = vec![0u8; 33];
        state.write(&mut bytes);
        assert_eq!(<(f64, i64, [u64; 2], bool)>::read(&bytes), state);
        assert_eq!(&bytes[..8], &(-2.5f64).to_le_bytes());
    }

    #[test]
    fn aggregate_declarations_round_trip_and_reject_bad_state_sizes() {
        const LEN: usize = aggregate_declaration_len("geo_mean", 1);
        const A: [u8; LEN] =
            encode_aggregate_declaration("geo_mean", &[UdfType::Float64], UdfType::Float64, 16);
        let decoded = decode_aggregate_declarations(&[&A[..], &A[..]].concat()).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].function.name, "geo_mean");
        assert_eq!(decoded[0].state_bytes, 16);
        for cut in 1..A.len() {
            assert!(decode_aggregate_declarations(&A[..cut]).is_err(), "{cut}");
        }
        let mut zero = A;
        zero[LEN - 2] = 0;
        assert!(
            decode_aggregate_declarations(&zero)
                .unwrap_err()
                .contains("state of 0 bytes")
        );
        let mut huge = A;
        huge[LEN - 2..].copy_from_slice(&2000u16.to_le_bytes());
        assert!(decode_aggregate_declarations(&huge).is_err());
    }

    #[test]
    fn export_names_follow_the_prefix() {
        let names: Vec<String> = AggregateExport::ALL
            .iter()
            .map(|e| e.export("geo"))
            .collect();
        assert_eq!(
            names,
            [
                "udaf_geo_init",
                "udaf_geo_update",
                "udaf_geo_merge",
                "udaf_geo_finish"
            ]
        );
    }
}
