//! The guest side of the UDF ABI: the allocator, reading the host's
//! argument buffers and writing the result column.
//!
//! The only `unsafe` here turns the addresses the host wrote into the call
//! frame into slices. UDF authors use [`scalar_udf!`](crate::scalar_udf) and
//! never see a pointer.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::sync::Mutex;

use super::{ALLOC_ALIGN, FRAME_ARG_BYTES, FRAME_HEADER_BYTES, OutputHeader, UdfType};

/// `unseen_alloc`: `len` bytes aligned to [`ALLOC_ALIGN`], never freed (the
/// host reuses them across batches); 0 when `len` is negative or memory is
/// exhausted.
pub fn __alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    let Ok(layout) = Layout::from_size_align(len.max(1), ALLOC_ALIGN) else {
        return 0;
    };
    // SAFETY: `layout` has a non-zero size. The block is handed to the host
    // and never freed, so no Rust value ever aliases it.
    let ptr = unsafe { std::alloc::alloc(layout) };
    ptr as usize as i32
}

/// Reads a little-endian `u32` at a guest address the host wrote.
///
/// # Safety
/// `addr..addr + 4` must be inside the guest's memory.
unsafe fn read_u32(addr: usize) -> u32 {
    // SAFETY: in bounds by the caller's contract; `read_unaligned` needs no alignment.
    unsafe { std::ptr::read_unaligned(addr as *const u32) }
}

/// Turns a host-written address into a slice of `len` values of `T`.
/// `None` when the address is 0 or misaligned (a host bug or a
/// mismatched declaration), so the call fails instead of misreading.
///
/// # Safety
/// When non-zero, `addr` must point to `len` initialised values of `T`
/// inside the guest's memory that nothing writes while the slice lives
/// (the ABI's promise for argument buffers during a call).
unsafe fn slice<'a, T>(addr: u32, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        return Some(&[]);
    }
    let addr = addr as usize;
    if addr == 0 || !addr.is_multiple_of(std::mem::align_of::<T>()) {
        return None;
    }
    // SAFETY: non-null and aligned (checked above); length and lifetime by
    // the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(addr as *const T, len) })
}

/// The argument descriptors of one call.
#[derive(Debug)]
pub struct Args {
    rows: usize,
    frame: usize,
    count: usize,
}

impl Args {
    /// The `index`th argument as a column of `T`, or `None` when the frame
    /// has no such argument or it is of another type.
    pub fn arg<'a, T: ArgType<'a>>(&'a self, index: usize) -> Option<Arg<'a, T>> {
        if index >= self.count {
            return None;
        }
        let at = self.frame + FRAME_HEADER_BYTES + index * FRAME_ARG_BYTES;
        // SAFETY: the host wrote `count` descriptors after the frame header.
        let [ty, data, aux, validity] = [0, 4, 8, 12].map(|o| unsafe { read_u32(at + o) });
        if ty != T::TYPE.tag() {
            return None;
        }
        // SAFETY: the ABI promises `validity` is 0 or `ceil(rows / 8)` bytes.
        let validity = match validity {
            0 => None,
            v => Some(unsafe { slice::<u8>(v, self.rows.div_ceil(8)) }?),
        };
        // SAFETY: the descriptor's type matches `T`, whose `values` reads
        // exactly the buffers the ABI describes for that type.
        let values = unsafe { T::values(data, aux, self.rows) }?;
        Some(Arg { values, validity })
    }

    /// `Some` when the frame has exactly `n` arguments.
    pub fn expect_count(&self, n: usize) -> Option<()> {
        (self.count == n).then_some(())
    }
}

/// A type a UDF argument may have.
pub trait ArgType<'a>: Sized {
    /// The Arrow type of the column.
    const TYPE: UdfType;
    /// The column's buffers.
    type Values: Copy;
    /// Reads the buffers the host described.
    ///
    /// # Safety
    /// `data` and `aux` must describe `rows` rows of [`Self::TYPE`] as the ABI says.
    unsafe fn values(data: u32, aux: u32, rows: usize) -> Option<Self::Values>;
    /// The value of `row`, which is less than the column's length.
    fn value(values: &Self::Values, row: usize) -> Self;
}

impl<'a> ArgType<'a> for f64 {
    const TYPE: UdfType = UdfType::Float64;
    type Values = &'a [f64];
    unsafe fn values(data: u32, _aux: u32, rows: usize) -> Option<Self::Values> {
        // SAFETY: by the caller's contract, `rows` doubles at `data`.
        unsafe { slice(data, rows) }
    }
    #[inline(always)]
    fn value(values: &Self::Values, row: usize) -> Self {
        values[row]
    }
}

impl<'a> ArgType<'a> for i64 {
    const TYPE: UdfType = UdfType::Int64;
    type Values = &'a [i64];
    unsafe fn values(data: u32, _aux: u32, rows: usize) -> Option<Self::Values> {
        // SAFETY: by the caller's contract, `rows` integers at `data`.
        unsafe { slice(data, rows) }
    }
    #[inline(always)]
    fn value(values: &Self::Values, row: usize) -> Self {
        values[row]
    }
}

impl<'a> ArgType<'a> for &'a str {
    const TYPE: UdfType = UdfType::Utf8;
    type Values = (&'a [i32], &'a str);
    unsafe fn values(data: u32, aux: u32, rows: usize) -> Option<Self::Values> {
        // SAFETY: by the caller's contract, `rows + 1` offsets at `data`
        // and `offsets[rows]` bytes at `aux`.
        let offsets: &[i32] = unsafe { slice(data, rows + 1) }?;
        let len = usize::try_from(*offsets.last()?).ok()?;
        let bytes: &[u8] = unsafe { slice(aux, len) }?;
        // Checked once per batch; a row that does not fall on character
        // boundaries reads as "" (the host never sends one).
        Some((offsets, std::str::from_utf8(bytes).ok()?))
    }
    #[inline(always)]
    fn value(values: &Self::Values, row: usize) -> Self {
        let (offsets, text) = *values;
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        text.get(start..end).unwrap_or("")
    }
}

/// One argument column.
#[derive(Debug)]
pub struct Arg<'a, T: ArgType<'a>> {
    values: T::Values,
    validity: Option<&'a [u8]>,
}

impl<'a, T: ArgType<'a>> Arg<'a, T> {
    /// True when no row of the column is null.
    #[inline(always)]
    pub fn all_valid(&self) -> bool {
        self.validity.is_none()
    }

    /// The value of `row`, ignoring validity.
    #[inline(always)]
    pub fn value(&self, row: usize) -> T {
        T::value(&self.values, row)
    }

    /// The value of `row`, or `None` when it is null.
    #[inline(always)]
    pub fn get(&self, row: usize) -> Option<T> {
        match self.validity {
            Some(bits) if bits[row >> 3] & (1 << (row & 7)) == 0 => None,
            _ => Some(self.value(row)),
        }
    }
}

/// A type a UDF may return.
pub trait UdfReturn {
    /// The Arrow type of the result column.
    const TYPE: UdfType;
    /// The value's 8 little-endian bytes as a `u64`, or `None` for a null.
    fn into_bits(self) -> Option<u64>;
}

impl UdfReturn for f64 {
    const TYPE: UdfType = UdfType::Float64;
    #[inline(always)]
    fn into_bits(self) -> Option<u64> {
        Some(self.to_bits())
    }
}

impl UdfReturn for i64 {
    const TYPE: UdfType = UdfType::Int64;
    #[inline(always)]
    fn into_bits(self) -> Option<u64> {
        Some(self as u64)
    }
}

impl<R: UdfReturn> UdfReturn for Option<R> {
    const TYPE: UdfType = R::TYPE;
    #[inline(always)]
    fn into_bits(self) -> Option<u64> {
        self.and_then(R::into_bits)
    }
}

/// The result column, reused from call to call; the host reads it before
/// the next call.
#[derive(Debug)]
pub struct Output {
    rows: usize,
    values: Vec<u64>,
    validity: Vec<u8>,
    null_count: usize,
    header: [u8; super::OUTPUT_HEADER_BYTES],
}

static OUTPUT: Mutex<Output> = Mutex::new(Output {
    rows: 0,
    values: Vec::new(),
    validity: Vec::new(),
    null_count: 0,
    header: [0; super::OUTPUT_HEADER_BYTES],
});

impl Output {
    /// Computes every row with `f`; `None` (or a `None` result) is a null.
    #[inline(always)]
    pub fn fill<R: UdfReturn>(&mut self, mut f: impl FnMut(usize) -> Option<R>) {
        let rows = self.rows;
        self.values.clear();
        self.values.resize(rows, 0);
        self.validity.clear();
        self.null_count = 0;
        for (row, slot) in self.values.iter_mut().enumerate() {
            match f(row).and_then(R::into_bits) {
                Some(bits) => *slot = bits,
                None => {
                    if self.validity.is_empty() {
                        self.validity.resize(rows.div_ceil(8), 0xff);
                    }
                    self.validity[row >> 3] &= !(1 << (row & 7));
                    self.null_count += 1;
                }
            }
        }
    }
}

/// Runs one call of a scalar export: reads the frame, lets `body` fill the
/// result and returns the address of its header, or 0 when the frame does
/// not match the function's signature.
pub fn __call_scalar<R: UdfReturn>(
    rows: i32,
    frame: i32,
    body: impl FnOnce(&Args, &mut Output) -> Option<()>,
) -> i32 {
    let (Ok(rows), Ok(frame)) = (usize::try_from(rows), usize::try_from(frame)) else {
        return 0;
    };
    if frame == 0 {
        return 0;
    }
    // SAFETY: the host wrote the frame header at `frame`.
    let count = unsafe { read_u32(frame) } as usize;
    let args = Args { rows, frame, count };
    let mut out = OUTPUT.lock().unwrap_or_else(|p| p.into_inner());
    out.rows = rows;
    if body(&args, &mut out).is_none() {
        return 0;
    }
    let header = OutputHeader {
        rows: rows as u32,
        ty: R::TYPE.tag(),
        values: out.values.as_ptr() as usize as u32,
        validity: if out.validity.is_empty() {
            0
        } else {
            out.validity.as_ptr() as usize as u32
        },
        null_count: out.null_count as u32,
    };
    out.header = header.encode();
    // The header lives in a static, so the address stays valid after the
    // guard drops, until the next call rewrites it.
    out.header.as_ptr() as usize as i32
}
