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
pub const UDF_ABI_VERSION: u32 = 2;
/// Export returning [`UDF_ABI_VERSION`]: `() -> i32`.
pub const VERSION_EXPORT: &str = "unseen_udf_abi_version";
/// The guest's allocator: `(len: i32) -> i32`.
pub const ALLOC_EXPORT: &str = "unseen_alloc";
/// Prefix every scalar export shares. Version 1's batch exports
/// `udf_<name>(rows, frame)` are refused; see [`ROW_EXPORT_PREFIX`].
pub const SCALAR_EXPORT_PREFIX: &str = "udf_";
/// Prefix of every scalar entry point: `udf_row_<name>(args...) -> value`,
/// one row per call (see `ABI.md`, "One call per row").
pub const ROW_EXPORT_PREFIX: &str = "udf_row_";
/// Export returning the address of the row null flag: `() -> i32`.
pub const NULL_FLAG_EXPORT: &str = "unseen_row_null_addr";

/// Custom section in which `scalar_udf!` declares each function's name and
/// types, so the host registers them without being told (see `ABI.md`).
pub const DECLARATION_SECTION: &str = "unseen_udf";

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

/// One scalar function as a module declares it in [`DECLARATION_SECTION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    /// The SQL name; the export is `udf_<name>`.
    pub name: String,
    /// Argument types, in order.
    pub args: Vec<UdfType>,
    /// Result type (`Int64` or `Float64`).
    pub returns: UdfType,
}

/// Bytes of one declaration record: `name_len: u8`, the name, `n_args: u8`,
/// one type tag byte per argument, the return type tag byte.
pub const fn declaration_len(name: &str, n_args: usize) -> usize {
    3 + name.len() + n_args
}

/// The declaration record of `name(args) -> returns`, at compile time (the
/// `scalar_udf!` macro places it in [`DECLARATION_SECTION`]). `N` must be
/// [`declaration_len`]; names and argument lists are under 256 bytes.
pub const fn encode_declaration<const N: usize>(
    name: &str,
    args: &[UdfType],
    returns: UdfType,
) -> [u8; N] {
    assert!(
        N == declaration_len(name, args.len()),
        "N must be declaration_len"
    );
    let mut out = [0u8; N];
    write_record(&mut out, name, args, returns);
    out
}

/// Writes the record of `name(args) -> returns` at the start of `out`; the
/// bytes written.
const fn write_record(out: &mut [u8], name: &str, args: &[UdfType], returns: UdfType) -> usize {
    let name = name.as_bytes();
    assert!(
        name.len() < 256 && args.len() < 256,
        "name or argument list too long"
    );
    out[0] = name.len() as u8;
    let mut i = 0;
    while i < name.len() {
        out[1 + i] = name[i];
        i += 1;
    }
    let mut at = 1 + name.len();
    out[at] = args.len() as u8;
    at += 1;
    let mut j = 0;
    while j < args.len() {
        out[at] = args[j].tag() as u8;
        at += 1;
        j += 1;
    }
    out[at] = returns.tag() as u8;
    at + 1
}

/// The first `n` bytes of `bytes`, advancing past them, or which field ends early.
fn take<'a>(n: usize, what: &str, bytes: &mut &'a [u8]) -> Result<&'a [u8], String> {
    if bytes.len() < n {
        return Err(format!("the declaration section ends inside {what}"));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

/// Reads one declaration record, advancing past it.
fn read_record(bytes: &mut &[u8]) -> Result<Declaration, String> {
    let name_len = take(1, "a name length", bytes)?[0] as usize;
    let name = String::from_utf8(take(name_len, "a name", bytes)?.to_vec())
        .map_err(|_| "a declared name is not UTF-8".to_string())?;
    let n_args = take(1, "an argument count", bytes)?[0] as usize;
    let tag = |t: u8| {
        UdfType::from_tag(u32::from(t))
            .ok_or_else(|| format!("function `{name}` declares an unknown type tag {t}"))
    };
    let args = take(n_args, "argument types", bytes)?
        .iter()
        .map(|&t| tag(t))
        .collect::<Result<Vec<_>, _>>()?;
    let returns = tag(take(1, "a return type", bytes)?[0])?;
    Ok(Declaration {
        name,
        args,
        returns,
    })
}

/// Reads every declaration record of a [`DECLARATION_SECTION`]'s bytes (the
/// linker concatenates the records of all functions), or says what is wrong.
pub fn decode_declarations(mut bytes: &[u8]) -> Result<Vec<Declaration>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(read_record(&mut bytes)?);
    }
    Ok(out)
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

mod aggregate;
pub use aggregate::{
    AGGREGATE_DECLARATION_SECTION, AGGREGATE_EXPORT_PREFIX, AggState, AggregateDeclaration,
    AggregateExport, MAX_STATE_BYTES, SKIP_ROW, STATUS_BAD_GROUP, STATUS_MISMATCH, STATUS_OK,
    aggregate_declaration_len, decode_aggregate_declarations, encode_aggregate_declaration,
};

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use guest::{
    __aggregate_finish, __aggregate_init, __aggregate_merge, __aggregate_update, __alloc,
    __null_flag_addr, __row_null, Arg, ArgType, Args, GroupStates, Output, RowArg, RowReturn,
    UdfReturn,
};

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

        /// The address of the flag a row function sets to return a null.
        #[unsafe(no_mangle)]
        pub extern "C" fn unseen_row_null_addr() -> i32 {
            $crate::udf::__null_flag_addr()
        }
    };
}

/// Declares a scalar UDF: a function of one row.
///
/// ```ignore
/// udf_sdk::scalar_udf!(fn gcd(a: i64, b: i64) -> i64 { ... });
/// ```
///
/// Defines the function as written and exports it as `udf_row_<name>`,
/// which takes one row's arguments and returns its value (see `ABI.md`,
/// "One call per row"). Arguments may be `i64`, `f64` or `&str`; the
/// result `i64`, `f64`, `Option<i64>` or `Option<f64>` (`None` is a null).
/// A row where any argument is null is null in the result and the function
/// is not called for it. Needs [`udf_module!`](crate::udf_module) once in
/// the crate.
///
/// The host calls the function once per row in a fresh state: no static,
/// heap allocation or global written for one row is visible to the next.
/// A panic, an endless loop or a NaN result makes that row null and
/// nothing else.
///
/// The function's name and types are also declared in the module's
/// [`DECLARATION_SECTION`], which is how the host learns them at upload: a
/// module's functions are callable from job SQL by name, with no further
/// declaration.
#[macro_export]
macro_rules! scalar_udf {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident ( $($arg:ident : $t:ty),+ $(,)? ) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $t),+) -> $ret $body

        const _: () = {
            #[unsafe(export_name = concat!("udf_row_", stringify!($name)))]
            extern "C" fn __unseen_row_udf(
                $($arg: <$t as $crate::udf::RowArg>::Abi),+
            ) -> <$ret as $crate::udf::RowReturn>::Abi {
                $(
                    let ::core::option::Option::Some($arg) =
                        <$t as $crate::udf::RowArg>::from_abi($arg)
                    else {
                        return $crate::udf::__row_null::<$ret>();
                    };
                )+
                <$ret as $crate::udf::RowReturn>::into_abi($name($($arg),+))
            }
        };
        $crate::declare_udf!($name($($t),+) -> $ret);
    };
}

/// Declares a function in the module's [`DECLARATION_SECTION`] without
/// defining it: for a `udf_row_<name>` export written by hand.
/// [`scalar_udf!`](crate::scalar_udf) does this itself.
///
/// ```ignore
/// udf_sdk::declare_udf!(short(f64) -> f64);
/// ```
#[macro_export]
macro_rules! declare_udf {
    ($name:ident ( $($t:ty),+ $(,)? ) -> $ret:ty) => {
        const _: () = {
            const __NAME: &str = stringify!($name);
            const __ARGS: &[$crate::udf::UdfType] =
                &[$(<$t as $crate::udf::ArgType<'static>>::TYPE),+];
            const __LEN: usize = $crate::udf::declaration_len(__NAME, __ARGS.len());
            #[used]
            #[unsafe(link_section = "unseen_udf")]
            static __DECLARATION: [u8; __LEN] = $crate::udf::encode_declaration::<__LEN>(
                __NAME,
                __ARGS,
                <$ret as $crate::udf::UdfReturn>::TYPE,
            );
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
    fn declarations_round_trip_and_reject_truncation() {
        const A: [u8; declaration_len("gcd", 2)] =
            encode_declaration("gcd", &[UdfType::Int64, UdfType::Int64], UdfType::Int64);
        const B: [u8; declaration_len("risk", 1)] =
            encode_declaration("risk", &[UdfType::Utf8], UdfType::Float64);
        let bytes = [&A[..], &B[..]].concat();
        let decoded = decode_declarations(&bytes).unwrap();
        assert_eq!(
            decoded,
            vec![
                Declaration {
                    name: "gcd".into(),
                    args: vec![UdfType::Int64, UdfType::Int64],
                    returns: UdfType::Int64,
                },
                Declaration {
                    name: "risk".into(),
                    args: vec![UdfType::Utf8],
                    returns: UdfType::Float64,
                },
            ]
        );
        for cut in 1..bytes.len() {
            if cut == A.len() {
                continue;
            }
            assert!(decode_declarations(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = A;
        bad[A.len() - 1] = 9;
        assert!(
            decode_declarations(&bad)
                .unwrap_err()
                .contains("unknown type tag 9")
        );
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
