//! Sorting any number of fixed-size keyed hashes in bounded memory.
//!
//! Registration hashes one or more values of every row (the prohibited
//! text columns for the index, the privacy unit to learn whether each
//! person has one row). Held in memory, that grows with the file: 30
//! million rows took gigabytes. Here at most `capacity` hashes are held;
//! each full buffer is sorted and spilled to an unnamed temporary file
//! (`O_TMPFILE`: it never has a name, is readable by its owner only and
//! vanishes with the process), and the runs are merged at the end into
//! one sorted stream without repeats. The files hold keyed hashes only,
//! never a value.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Hashes held in memory by default before a run is spilled: 4 Mi of
/// them, 32 MiB for 8-byte hashes, 64 MiB for 16-byte ones.
pub(crate) const DEFAULT_CAPACITY: usize = 1 << 22;

/// Buffer of each run's reader during the merge.
const RUN_BUFFER: usize = 64 * 1024;

/// Collects `N`-byte hashes and yields them sorted, each once.
#[derive(Debug)]
pub(crate) struct HashSorter<const N: usize> {
    buffer: Vec<[u8; N]>,
    capacity: usize,
    runs: Vec<File>,
    spill_dir: PathBuf,
    /// Whether some hash was pushed more than once (seen so far).
    repeated: bool,
    pushed: u64,
}

/// What a merge found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sorted {
    /// Hashes pushed.
    pub pushed: u64,
    /// Distinct hashes (each written once).
    pub distinct: u64,
    /// Whether any hash was pushed more than once.
    pub repeated: bool,
}

impl<const N: usize> HashSorter<N> {
    /// A sorter that holds at most `capacity` hashes (at least one) and
    /// spills into `spill_dir`.
    pub(crate) fn new(spill_dir: &Path, capacity: usize) -> Self {
        HashSorter {
            buffer: Vec::new(),
            capacity: capacity.max(1),
            runs: Vec::new(),
            spill_dir: spill_dir.to_path_buf(),
            repeated: false,
            pushed: 0,
        }
    }

    pub(crate) fn push(&mut self, hash: [u8; N]) -> io::Result<()> {
        if self.buffer.len() >= self.capacity {
            self.spill()?;
        }
        self.buffer.push(hash);
        self.pushed += 1;
        Ok(())
    }

    /// Sorts the buffer and drops repeats, noting whether there were any.
    fn sort_buffer(&mut self) {
        self.buffer.sort_unstable();
        let before = self.buffer.len();
        self.buffer.dedup();
        self.repeated |= self.buffer.len() != before;
    }

    fn spill(&mut self) -> io::Result<()> {
        self.sort_buffer();
        let mut file = tempfile::tempfile_in(&self.spill_dir)?;
        {
            let mut out = BufWriter::with_capacity(RUN_BUFFER, &mut file);
            for hash in &self.buffer {
                out.write_all(hash)?;
            }
            out.flush()?;
        }
        file.rewind()?;
        self.runs.push(file);
        self.buffer.clear();
        Ok(())
    }

    /// Merges everything pushed and hands each distinct hash, in order,
    /// to `sink`.
    pub(crate) fn finish(
        mut self,
        mut sink: impl FnMut(&[u8; N]) -> io::Result<()>,
    ) -> io::Result<Sorted> {
        self.sort_buffer();
        let mut readers: Vec<BufReader<File>> = std::mem::take(&mut self.runs)
            .into_iter()
            .map(|f| BufReader::with_capacity(RUN_BUFFER, f))
            .collect();
        let memory = std::mem::take(&mut self.buffer);
        let mut memory = memory.into_iter();
        // The in-memory run is source `readers.len()`.
        let in_memory = readers.len();
        let mut heap = BinaryHeap::with_capacity(readers.len() + 1);
        for (source, reader) in readers.iter_mut().enumerate() {
            if let Some(hash) = next_hash(reader)? {
                heap.push(Reverse((hash, source)));
            }
        }
        if let Some(hash) = memory.next() {
            heap.push(Reverse((hash, in_memory)));
        }
        let mut last: Option<[u8; N]> = None;
        let mut distinct = 0u64;
        while let Some(Reverse((hash, source))) = heap.pop() {
            if last == Some(hash) {
                // The same hash in two runs.
                self.repeated = true;
            } else {
                sink(&hash)?;
                distinct += 1;
                last = Some(hash);
            }
            let next = if source == in_memory {
                memory.next()
            } else {
                next_hash(&mut readers[source])?
            };
            if let Some(next) = next {
                heap.push(Reverse((next, source)));
            }
        }
        Ok(Sorted {
            pushed: self.pushed,
            distinct,
            repeated: self.repeated,
        })
    }
}

/// The next hash of a run, or `None` at its end.
fn next_hash<const N: usize>(reader: &mut impl Read) -> io::Result<Option<[u8; N]>> {
    let mut hash = [0u8; N];
    match reader.read_exact(&mut hash) {
        Ok(()) => Ok(Some(hash)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn hashes(n: u64, modulo: u64) -> Vec<[u8; 8]> {
        // Spread and repeated: i * odd constant, modulo `modulo`.
        (0..n)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % modulo).to_be_bytes())
            .collect()
    }

    fn sorted_with(capacity: usize, input: &[[u8; 8]]) -> (Vec<[u8; 8]>, Sorted) {
        let dir = tempfile::tempdir().unwrap();
        let mut sorter = HashSorter::<8>::new(dir.path(), capacity);
        for h in input {
            sorter.push(*h).unwrap();
        }
        let mut out = Vec::new();
        let sorted = sorter
            .finish(|h| {
                out.push(*h);
                Ok(())
            })
            .unwrap();
        // Runs never get a name in the spill directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (out, sorted)
    }

    #[test]
    fn spilled_runs_merge_into_the_same_sorted_distinct_hashes() {
        let input = hashes(10_000, 7_000);
        let expected: Vec<[u8; 8]> = input
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for capacity in [1, 3, 64, 999, 10_000, 1 << 20] {
            let (out, sorted) = sorted_with(capacity, &input);
            assert_eq!(out, expected, "capacity {capacity}");
            assert_eq!(sorted.pushed, 10_000);
            assert_eq!(sorted.distinct, expected.len() as u64);
            assert!(sorted.repeated, "capacity {capacity}");
        }
    }

    #[test]
    fn a_repeat_is_found_within_a_run_and_across_runs() {
        let distinct = hashes(500, u64::MAX);
        for capacity in [1, 7, 500, 1000] {
            let (_, sorted) = sorted_with(capacity, &distinct);
            assert!(!sorted.repeated, "capacity {capacity}");
            // The first hash again, at the very end: in another run
            // whenever the capacity is below 500.
            let mut with_repeat = distinct.clone();
            with_repeat.push(distinct[0]);
            let (out, sorted) = sorted_with(capacity, &with_repeat);
            assert!(sorted.repeated, "capacity {capacity}");
            assert_eq!(out.len(), 500);
        }
        let (out, sorted) = sorted_with(4, &[]);
        assert!(out.is_empty());
        assert_eq!(
            (sorted.pushed, sorted.distinct, sorted.repeated),
            (0, 0, false)
        );
    }
}
