//! The guest side of the UDF ABI: the allocator, reading the host's
//! argument buffers and writing the result column.
//!
//! The only `unsafe` here turns the addresses the host wrote into the call
//! frame into slices. UDF authors use [`scalar_udf!`](crate::scalar_udf) and
//! never see a pointer.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{
    ALLOC_ALIGN, AggState, FRAME_ARG_BYTES, FRAME_HEADER_BYTES, OutputHeader, SKIP_ROW,
    STATUS_BAD_GROUP, STATUS_MISMATCH, STATUS_OK, UdfType,
};

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

impl Output {
    /// Writes the header describing the filled column and returns its
    /// address. The header lives in a static, so the address stays valid
    /// after the guard drops, until the next call rewrites it.
    fn publish<R: UdfReturn>(&mut self) -> i32 {
        let header = OutputHeader {
            rows: self.rows as u32,
            ty: R::TYPE.tag(),
            values: self.values.as_ptr() as usize as u32,
            validity: if self.validity.is_empty() {
                0
            } else {
                self.validity.as_ptr() as usize as u32
            },
            null_count: self.null_count as u32,
        };
        self.header = header.encode();
        self.header.as_ptr() as usize as i32
    }
}

/// Turns a host-written address into a mutable slice of `len` bytes;
/// `None` when the address is 0 and `len` is not.
///
/// # Safety
/// When non-zero, `addr..addr + len` must lie inside the guest's memory in
/// a buffer the host allocated with `unseen_alloc`, which no Rust value
/// references (the ABI's promise for state buffers during a call).
unsafe fn bytes_mut<'a>(addr: u32, len: usize) -> Option<&'a mut [u8]> {
    if len == 0 {
        return Some(&mut []);
    }
    if addr == 0 {
        return None;
    }
    // SAFETY: non-null; length, exclusivity and lifetime by the caller's contract.
    Some(unsafe { std::slice::from_raw_parts_mut(addr as usize as *mut u8, len) })
}

/// The states of every group of one call, decoded, and how the call's rows
/// map to them.
#[derive(Debug)]
pub struct GroupStates<'a, S> {
    states: Vec<S>,
    groups: Option<&'a [u32]>,
    rows: usize,
    bad_group: bool,
}

impl<S: AggState> GroupStates<'_, S> {
    /// Calls `f(row, state)` for every row that is not skipped, with the
    /// state of the row's group.
    #[inline(always)]
    pub fn each(&mut self, mut f: impl FnMut(usize, &mut S)) {
        match self.groups {
            None => {
                let Some(state) = self.states.first_mut() else {
                    self.bad_group = true;
                    return;
                };
                for row in 0..self.rows {
                    f(row, state);
                }
            }
            Some(groups) => {
                for (row, &group) in groups.iter().enumerate() {
                    if group == SKIP_ROW {
                        continue;
                    }
                    match self.states.get_mut(group as usize) {
                        Some(state) => f(row, state),
                        None => {
                            self.bad_group = true;
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Decodes the `n_groups` states at `states` and the `rows` group indices at
/// `groups` (0: every row is in group 0), lets `body` change the states and
/// writes them back; a status.
fn with_states<S: AggState>(
    rows: i32,
    groups: i32,
    states: i32,
    n_groups: i32,
    body: impl FnOnce(&mut GroupStates<'_, S>) -> Option<()>,
) -> i32 {
    let (Ok(rows), Ok(n_groups)) = (usize::try_from(rows), usize::try_from(n_groups)) else {
        return STATUS_MISMATCH;
    };
    // SAFETY: the ABI promises `rows` u32 indices at a non-zero `groups`.
    let Some(groups) = (match groups {
        0 => Some(None),
        g => unsafe { slice::<u32>(g as u32, rows) }.map(Some),
    }) else {
        return STATUS_MISMATCH;
    };
    let Some(len) = n_groups.checked_mul(S::BYTES) else {
        return STATUS_MISMATCH;
    };
    // SAFETY: the ABI promises `n_groups` states in a host-allocated buffer
    // at `states`, which nothing else references during the call.
    let Some(bytes) = (unsafe { bytes_mut(states as u32, len) }) else {
        return STATUS_MISMATCH;
    };
    let mut group_states = GroupStates {
        states: bytes.chunks_exact(S::BYTES).map(S::read).collect(),
        groups,
        rows,
        bad_group: false,
    };
    if body(&mut group_states).is_none() {
        return STATUS_MISMATCH;
    }
    if group_states.bad_group {
        return STATUS_BAD_GROUP;
    }
    for (state, out) in group_states
        .states
        .iter()
        .zip(bytes.chunks_exact_mut(S::BYTES))
    {
        state.write(out);
    }
    STATUS_OK
}

/// `udaf_<name>_init`: writes the empty state at `state`.
pub fn __aggregate_init<S: AggState>(state: i32, init: impl FnOnce() -> S) -> i32 {
    // SAFETY: the ABI promises `S::BYTES` host-allocated bytes at `state`.
    let Some(out) = (unsafe { bytes_mut(state as u32, S::BYTES) }) else {
        return STATUS_MISMATCH;
    };
    init().write(out);
    STATUS_OK
}

/// `udaf_<name>_update`: reads the frame and lets `body` fold its rows into
/// the states of their groups.
pub fn __aggregate_update<S: AggState>(
    rows: i32,
    frame: i32,
    groups: i32,
    states: i32,
    n_groups: i32,
    body: impl FnOnce(&Args, &mut GroupStates<'_, S>) -> Option<()>,
) -> i32 {
    let (Ok(row_count), Ok(frame)) = (usize::try_from(rows), usize::try_from(frame)) else {
        return STATUS_MISMATCH;
    };
    if frame == 0 {
        return STATUS_MISMATCH;
    }
    // SAFETY: the host wrote the frame header at `frame`.
    let count = unsafe { read_u32(frame) } as usize;
    let args = Args {
        rows: row_count,
        frame,
        count,
    };
    with_states(rows, groups, states, n_groups, |g| body(&args, g))
}

/// `udaf_<name>_merge`: merges the `rows` states at `others` into the
/// states of their groups with `merge`.
pub fn __aggregate_merge<S: AggState>(
    rows: i32,
    others: i32,
    groups: i32,
    states: i32,
    n_groups: i32,
    mut merge: impl FnMut(&mut S, S),
) -> i32 {
    let Some(len) = usize::try_from(rows)
        .ok()
        .and_then(|r| r.checked_mul(S::BYTES))
    else {
        return STATUS_MISMATCH;
    };
    // SAFETY: the ABI promises `rows` states at `others`, read-only here.
    let Some(others) = (unsafe { slice::<u8>(others as u32, len) }) else {
        return STATUS_MISMATCH;
    };
    with_states(rows, groups, states, n_groups, |g| {
        g.each(|row, state| {
            merge(
                state,
                S::read(&others[row * S::BYTES..(row + 1) * S::BYTES]),
            );
        });
        Some(())
    })
}

/// `udaf_<name>_finish`: the result header of the `n` states at `states`
/// finished by `finish`; 0 when the buffers do not match.
pub fn __aggregate_finish<S: AggState, R: UdfReturn>(
    n: i32,
    states: i32,
    mut finish: impl FnMut(&S) -> R,
) -> i32 {
    let Some((n, len)) = usize::try_from(n)
        .ok()
        .and_then(|n| Some((n, n.checked_mul(S::BYTES)?)))
    else {
        return 0;
    };
    // SAFETY: the ABI promises `n` states at `states`, read-only here.
    let Some(bytes) = (unsafe { slice::<u8>(states as u32, len) }) else {
        return 0;
    };
    let mut out = OUTPUT.lock().unwrap_or_else(|p| p.into_inner());
    out.rows = n;
    let mut states = bytes.chunks_exact(S::BYTES).map(S::read);
    out.fill(|_| states.next().map(|s| finish(&s)));
    out.publish::<R>()
}

/// The null flag of the row ABI: a row function sets it to return a null.
/// It lives in ordinary memory, so the host's per-row restore clears it
/// before the next row (see `ABI.md`, "One call per row").
static ROW_NULL: AtomicU32 = AtomicU32::new(0);

/// `unseen_row_null_addr`: the address of the null flag.
pub fn __null_flag_addr() -> i32 {
    std::ptr::from_ref(&ROW_NULL) as usize as i32
}

/// Marks this row's result as null and returns the placeholder value the
/// host ignores.
#[inline(never)]
pub fn __row_null<R: RowReturn>() -> R::Abi {
    ROW_NULL.store(1, Ordering::Relaxed);
    R::NULL
}

/// A type a per-row function may take, and how it crosses the row ABI.
pub trait RowArg: Sized {
    /// The wasm parameter: `i64`, `f64`, or (strings) an `i64` holding the
    /// scratch address in its low and the length in its high 32 bits.
    type Abi;
    /// The argument, or `None` when the host passed something unusable
    /// (which the row then returns as a null).
    fn from_abi(abi: Self::Abi) -> Option<Self>;
}

impl RowArg for f64 {
    type Abi = f64;
    #[inline(always)]
    fn from_abi(abi: f64) -> Option<Self> {
        Some(abi)
    }
}

impl RowArg for i64 {
    type Abi = i64;
    #[inline(always)]
    fn from_abi(abi: i64) -> Option<Self> {
        Some(abi)
    }
}

impl RowArg for &str {
    type Abi = u64;
    #[inline(always)]
    fn from_abi(abi: u64) -> Option<Self> {
        let (addr, len) = ((abi & 0xffff_ffff) as usize, (abi >> 32) as usize);
        if len == 0 {
            return Some("");
        }
        if addr == 0 {
            return None;
        }
        // SAFETY: the host's loop copied `len` bytes of this row's string to
        // `addr` in scratch memory that nothing else uses during the call;
        // the slice does not outlive the call (the row function takes it
        // with a generic lifetime).
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
        std::str::from_utf8(bytes).ok()
    }
}

/// A type a per-row function may return, and how it crosses the row ABI.
pub trait RowReturn {
    /// The wasm result: `i64` or `f64`.
    type Abi;
    /// What a null row returns alongside the flag.
    const NULL: Self::Abi;
    /// The value; `None` sets the null flag.
    fn into_abi(self) -> Self::Abi;
}

impl RowReturn for f64 {
    type Abi = f64;
    const NULL: f64 = f64::NAN;
    #[inline(always)]
    fn into_abi(self) -> f64 {
        self
    }
}

impl RowReturn for i64 {
    type Abi = i64;
    const NULL: i64 = 0;
    #[inline(always)]
    fn into_abi(self) -> i64 {
        self
    }
}

impl<R: RowReturn> RowReturn for Option<R> {
    type Abi = R::Abi;
    const NULL: R::Abi = R::NULL;
    #[inline(always)]
    fn into_abi(self) -> R::Abi {
        match self {
            Some(v) => v.into_abi(),
            None => __row_null::<R>(),
        }
    }
}
