//! UDF modules: scalar functions over whole Arrow batches (see `ABI.md`,
//! "UDF modules").
//!
//! A UDF module sees raw conditional values, so it imports nothing at all.
//! The host copies Arrow buffers straight into the guest's memory (no
//! serialisation), calls one export per batch, and copies the result array
//! back out after checking every pointer and length in its header.
//!
//! This file holds the layout both sides agree on, and is compiled for every
//! target; the guest runtime behind [`scalar_udf!`](crate::scalar_udf) is
//! compiled for wasm32 only.
//!
//! ```ignore
//! udf_sdk::udf_module!();
//!
//! udf_sdk::scalar_udf!(fn light(a: f64, b: f64) -> f64 {
//!     (1.0 + a).ln() * 0.7 + b.sqrt() * 0.3
//! });
//! ```

/// Version of the UDF ABI; `unseen_udf_abi_version` returns it.
pub const UDF_ABI_VERSION: u32 = 1;
/// Export returning [`UDF_ABI_VERSION`]: `() -> i32`.
pub const VERSION_EXPORT: &str = "unseen_udf_abi_version";
/// The guest's allocator: `(len: i32) -> i32`.
pub const ALLOC_EXPORT: &str = "unseen_alloc";
/// Prefix of every scalar entry point: `udf_<name>(rows: i32, frame: i32) -> i32`.
pub const SCALAR_EXPORT_PREFIX: &str = "udf_";

/// Bytes of the call frame before the first argument descriptor (`n_args`).
pub const FRAME_HEADER_BYTES: usize = 4;
/// Bytes of one argument descriptor: `type, data, aux, validity`.
pub const FRAME_ARG_BYTES: usize = 16;
/// Bytes of the result header: `rows, type, values, validity, null_count`.
pub const OUTPUT_HEADER_BYTES: usize = 20;
/// Alignment of every buffer `unseen_alloc` returns.
pub const ALLOC_ALIGN: usize = 8;

/// An Arrow type a UDF argument or result may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdfType {
    /// 64-bit signed integers, 8 bytes per row.
    Int64,
    /// IEEE 754 doubles, 8 bytes per row.
    Float64,
    /// UTF-8 strings: `i32` offsets and bytes. Arguments only.
    Utf8,
}

impl UdfType {
    /// The tag written into frames and headers.
    pub const fn tag(self) -> u32 {
        match self {
            UdfType::Int64 => 1,
            UdfType::Float64 => 2,
            UdfType::Utf8 => 3,
        }
    }

    /// The type a tag stands for, if any.
    pub const fn from_tag(tag: u32) -> Option<Self> {
        match tag {
            1 => Some(UdfType::Int64),
            2 => Some(UdfType::Float64),
            3 => Some(UdfType::Utf8),
            _ => None,
        }
    }

    /// The Arrow name of the type.
    pub const fn name(self) -> &'static str {
        match self {
            UdfType::Int64 => "Int64",
            UdfType::Float64 => "Float64",
            UdfType::Utf8 => "Utf8",
        }
    }
}

/// Where one argument's Arrow buffers are in guest memory.
///
/// For `Int64` and `Float64`, `data` points to `rows` little-endian 8-byte
/// values and `aux` is 0. For `Utf8`, `data` points to `rows + 1` `i32`
/// offsets starting at 0 and `aux` to the string bytes (`offsets[rows]` of
/// them). `validity` is 0 when no row is null, else it points to
/// `ceil(rows / 8)` bytes of an LSB-first bitmap (bit set = valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgDesc {
    /// [`UdfType::tag`] of the argument.
    pub ty: u32,
    /// Values (fixed width) or offsets (`Utf8`).
    pub data: u32,
    /// String bytes (`Utf8`), else 0.
    pub aux: u32,
    /// Validity bitmap, or 0 when every row is valid.
    pub validity: u32,
}

/// Writes the call frame for `args`: `n_args` then one descriptor each.
pub fn encode_frame(args: &[ArgDesc], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(args.len() as u32).to_le_bytes());
    for a in args {
        for word in [a.ty, a.data, a.aux, a.validity] {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
}

/// Bytes of the frame for `n_args` arguments.
pub const fn frame_bytes(n_args: usize) -> usize {
    FRAME_HEADER_BYTES + n_args * FRAME_ARG_BYTES
}

/// Bytes of a validity bitmap for `rows` rows.
pub const fn validity_bytes(rows: usize) -> usize {
    rows.div_ceil(8)
}

/// The header a scalar export returns a pointer to, describing its result.
///
/// `values` points to `rows` 8-byte values of type `ty`; `validity` is 0
/// (no nulls, and then `null_count` is 0) or points to `ceil(rows / 8)`
/// bytes of bitmap whose first `rows` bits have exactly `null_count` zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputHeader {
    /// Rows in the result; must equal the rows passed in.
    pub rows: u32,
    /// [`UdfType::tag`] of the result; must be the declared return type.
    pub ty: u32,
    /// Address of the values.
    pub values: u32,
    /// Address of the validity bitmap, or 0.
    pub validity: u32,
    /// Null rows in the result.
    pub null_count: u32,
}

impl OutputHeader {
    /// Reads a header from its little-endian bytes.
    pub fn decode(bytes: &[u8; OUTPUT_HEADER_BYTES]) -> Self {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        OutputHeader {
            rows: word(0),
            ty: word(4),
            values: word(8),
            validity: word(12),
            null_count: word(16),
        }
    }

    /// The header's little-endian bytes.
    pub fn encode(&self) -> [u8; OUTPUT_HEADER_BYTES] {
        let mut out = [0u8; OUTPUT_HEADER_BYTES];
        for (i, word) in [
            self.rows,
            self.ty,
            self.values,
            self.validity,
            self.null_count,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use guest::{__alloc, __call_scalar, Arg, ArgType, Args, Output, UdfReturn};

/// Emits the exports every UDF module needs, once per module:
/// `unseen_udf_abi_version` and the allocator `unseen_alloc`.
#[macro_export]
macro_rules! udf_module {
    () => {
        /// The UDF ABI version this module was built against.
        #[unsafe(no_mangle)]
        pub extern "C" fn unseen_udf_abi_version() -> i32 {
            $crate::udf::UDF_ABI_VERSION as i32
        }

        /// Allocates `len` bytes for the host's input buffers; 0 on failure.
        #[unsafe(no_mangle)]
        pub extern "C" fn unseen_alloc(len: i32) -> i32 {
            $crate::udf::__alloc(len)
        }
    };
}

/// Declares a scalar UDF over whole batches.
///
/// ```ignore
/// udf_sdk::scalar_udf!(fn gcd(a: i64, b: i64) -> i64 { ... });
/// ```
///
/// Defines the function as written and exports `udf_<name>`, which reads
/// each argument column from the host's buffers, calls the function once
/// per row and writes the result column. Arguments may be `i64`, `f64` or
/// `&str`; the result `i64`, `f64`, `Option<i64>` or `Option<f64>`
/// (`None` is a null). A row where any argument is null is null in the
/// result and the function is not called for it. Needs
/// [`udf_module!`](crate::udf_module) once in the crate.
#[macro_export]
macro_rules! scalar_udf {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ( $($arg:ident : $t:ty),+ $(,)? ) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $t),+) -> $ret $body

        const _: () = {
            #[unsafe(export_name = concat!("udf_", stringify!($name)))]
            extern "C" fn __unseen_scalar_udf(rows: i32, frame: i32) -> i32 {
                $crate::udf::__call_scalar::<$ret>(rows, frame, |__args, __out| {
                    let mut __index = 0usize;
                    $(
                        let $arg = __args.arg::<$t>(__index)?;
                        __index += 1;
                    )+
                    __args.expect_count(__index)?;
                    if true $(&& $arg.all_valid())+ {
                        __out.fill(|row| ::core::option::Option::Some($name($($arg.value(row)),+)));
                    } else {
                        __out.fill(|row| ::core::option::Option::Some($name($($arg.get(row)?),+)));
                    }
                    ::core::option::Option::Some(())
                })
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = OutputHeader {
            rows: 8192,
            ty: UdfType::Float64.tag(),
            values: 0x10_0000,
            validity: 0,
            null_count: 0,
        };
        assert_eq!(OutputHeader::decode(&h.encode()), h);
    }

    #[test]
    fn frame_has_one_descriptor_per_argument() {
        let args = [
            ArgDesc {
                ty: UdfType::Int64.tag(),
                data: 64,
                aux: 0,
                validity: 0,
            },
            ArgDesc {
                ty: UdfType::Utf8.tag(),
                data: 128,
                aux: 256,
                validity: 512,
            },
        ];
        let mut frame = Vec::new();
        encode_frame(&args, &mut frame);
        assert_eq!(frame.len(), frame_bytes(2));
        assert_eq!(&frame[..4], &2u32.to_le_bytes());
        assert_eq!(&frame[4 + 16..4 + 20], &3u32.to_le_bytes());
        assert_eq!(&frame[4 + 28..4 + 32], &512u32.to_le_bytes());
    }

    #[test]
    fn tags_are_stable() {
        for ty in [UdfType::Int64, UdfType::Float64, UdfType::Utf8] {
            assert_eq!(UdfType::from_tag(ty.tag()), Some(ty));
        }
        assert_eq!(UdfType::from_tag(0), None);
        assert_eq!(validity_bytes(0), 0);
        assert_eq!(validity_bytes(9), 2);
    }
}
