//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.
//!
//! Leaves are given as leaf hashes (see [`leaf_hash`]). The free functions
//! [`root`], [`inclusion_proof`] and [`consistency_proof`] recompute the
//! subtree hashes they need (O(n) hashes per call); [`Tree`] keeps subtree
//! hashes so the same answers cost O(log² n). Verification costs O(log n).

use crate::entry::{Hash, sha256};
use ring::digest;

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}; ask for an index below {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The tree size asked for exceeds the leaves available.
    #[error(
        "tree size {size} is larger than the {available} leaves known; ask for a size up to {available}"
    )]
    SizeTooLarge {
        /// The size asked for.
        size: u64,
        /// The number of leaves available.
        available: u64,
    },
    /// A consistency proof between sizes that go backwards.
    #[error("old tree size {old} is larger than new tree size {new}; a log never shrinks")]
    OldLargerThanNew {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for the sizes given.
    #[error(
        "the proof has the wrong number of hashes for these tree sizes; it is not a proof for this tree"
    )]
    WrongLength,
    /// The proof does not lead to the expected root(s).
    #[error(
        "the proof does not lead to the expected root hash; the leaf or the tree differs from what was claimed"
    )]
    RootMismatch,
}

/// The hash of the empty tree: SHA-256 of no bytes.
pub fn empty_root() -> Hash {
    sha256(b"")
}

/// Leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// Interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish())
}

fn to_hash(d: digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The Merkle tree hash of `leaves` (leaf hashes, in order).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// [`root`], with the left and right subtrees of large trees hashed on
/// two threads.
pub fn root_parallel(leaves: &[Hash]) -> Hash {
    if leaves.len() < 1 << 16 || std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        return root(leaves);
    }
    let k = split(leaves.len());
    let (left, right) = std::thread::scope(|s| {
        let left = s.spawn(|| root(&leaves[..k]));
        let right = root(&leaves[k..]);
        (left.join(), right)
    });
    match left {
        Ok(left) => node_hash(&left, &right),
        Err(_) => root(leaves),
    }
}

/// The largest power of two smaller than `n` (n >= 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

fn prefix(size: u64, leaves: &[Hash]) -> Result<&[Hash], ProofError> {
    let available = leaves.len() as u64;
    if size > available {
        return Err(ProofError::SizeTooLarge { size, available });
    }
    // `size <= leaves.len()`, so it fits in usize.
    Ok(&leaves[..size as usize])
}

/// The audit path for leaf `index` in the tree made of the first `size`
/// leaves (RFC 9162 section 2.1.3.1), ordered from the leaf upwards.
pub fn inclusion_proof(index: u64, size: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    let tree = prefix(size, leaves)?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(index as usize, tree, &mut proof);
    Ok(proof)
}

fn path(m: usize, d: &[Hash], proof: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &d[..k], proof);
        proof.push(root(&d[k..]));
    } else {
        path(m - k, &d[k..], proof);
        proof.push(root(&d[..k]));
    }
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose root
/// is `root` (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The proof that the tree of the first `old` leaves is a prefix of the tree
/// of the first `new` leaves (RFC 9162 section 2.1.4.1). Empty when `old` is
/// 0 or equal to `new`.
pub fn consistency_proof(old: u64, new: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    let tree = prefix(new, leaves)?;
    if old > new {
        return Err(ProofError::OldLargerThanNew { old, new });
    }
    let mut proof = Vec::new();
    if old > 0 && old < new {
        subproof(old as usize, tree, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, d: &[Hash], complete: bool, proof: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !complete {
            proof.push(root(d));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &d[..k], complete, proof);
        proof.push(root(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, proof);
        proof.push(root(&d[..k]));
    }
}

/// Checks that the tree of size `old` with root `old_root` is a prefix of the
/// tree of size `new` with root `new_root` (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::OldLargerThanNew { old, new });
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old == new && old_root != new_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let (first, rest) = match proof.split_first() {
        Some(split) => split,
        None => return Err(ProofError::WrongLength),
    };
    // If `old` is a power of two, the old root is itself the first node.
    let (start, path) = if old.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    let mut fnode = old - 1;
    let mut snode = new - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *start;
    let mut sr = *start;
    for c in path {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A Merkle tree kept as its perfect left subtrees, so that appending a leaf
/// and computing the root cost O(log n) hashes.
#[derive(Debug, Clone, Default)]
pub struct CompactTree {
    size: u64,
    /// Roots of the perfect subtrees, left to right, with their heights;
    /// heights strictly decrease.
    peaks: Vec<(u32, Hash)>,
}

impl CompactTree {
    /// An empty tree.
    pub fn new() -> CompactTree {
        CompactTree::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut height = 0u32;
        let mut hash = leaf;
        while let Some(&(h, left)) = self.peaks.last() {
            if h != height {
                break;
            }
            self.peaks.pop();
            hash = node_hash(&left, &hash);
            height += 1;
        }
        self.peaks.push((height, hash));
        self.size += 1;
    }

    /// The Merkle tree hash of all leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Heights of complete subtrees below this are recomputed from the leaves
/// when needed (at most 15 hashes); those at this height and above are kept.
const KEPT_FROM: u32 = 4;

/// A Merkle tree that keeps every leaf hash and the hashes of its complete
/// subtrees of 16 leaves or more, so that appending costs O(1) hashes
/// amortised, and roots of any earlier size, inclusion proofs and
/// consistency proofs cost O(log² n) hashes. Memory: about 36 bytes a leaf.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    leaves: Vec<Hash>,
    /// `levels[k][i]`: root of the complete subtree of height
    /// `KEPT_FROM + k` covering leaves `i << h .. (i + 1) << h`.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A tree of the given leaf hashes.
    pub fn from_leaves(leaves: Vec<Hash>) -> Tree {
        let mut tree = Tree {
            leaves: Vec::with_capacity(leaves.len()),
            levels: Vec::new(),
        };
        tree.extend(leaves);
        tree
    }

    /// Appends leaf hashes.
    pub fn extend(&mut self, leaves: impl IntoIterator<Item = Hash>) {
        for leaf in leaves {
            self.push(leaf);
        }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// All leaf hashes, in order.
    pub fn leaves(&self) -> &[Hash] {
        &self.leaves
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
        let chunk = 1usize << KEPT_FROM;
        let n = self.leaves.len();
        if !n.is_multiple_of(chunk) {
            return;
        }
        let mut hash = root(&self.leaves[n - chunk..]);
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            let len = row.len();
            if len % 2 == 1 {
                break;
            }
            hash = node_hash(&row[len - 2], &row[len - 1]);
            level += 1;
        }
    }

    /// Root of the complete subtree of height `h` at position `i`.
    fn complete(&self, h: u32, i: u64) -> Hash {
        if h >= KEPT_FROM {
            // Every complete subtree inside the tree was stored by `push`.
            self.levels[(h - KEPT_FROM) as usize][i as usize]
        } else {
            let start = (i << h) as usize;
            root(&self.leaves[start..start + (1 << h)])
        }
    }

    /// Merkle tree hash of leaves `start .. start + len`, where `start` is a
    /// multiple of the largest power of two not above `len` (true of every
    /// subtree the RFC 9162 algorithms visit).
    fn range_root(&self, start: u64, len: u64) -> Hash {
        if len == 0 {
            return empty_root();
        }
        let mut chunks = [(0u32, 0u64); 64];
        let mut count = 0;
        let mut at = start;
        for h in (0..64).rev() {
            if len & (1 << h) != 0 {
                chunks[count] = (h, at >> h);
                count += 1;
                at += 1 << h;
            }
        }
        let (h, i) = chunks[count - 1];
        let mut acc = self.complete(h, i);
        for &(h, i) in chunks[..count - 1].iter().rev() {
            acc = node_hash(&self.complete(h, i), &acc);
        }
        acc
    }

    /// The Merkle tree hash of all leaves.
    pub fn root(&self) -> Hash {
        self.range_root(0, self.size())
    }

    /// The Merkle tree hash of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeTooLarge {
                size,
                available: self.size(),
            });
        }
        Ok(self.range_root(0, size))
    }

    /// Same as [`inclusion_proof`] over [`Tree::leaves`], in O(log² n) hashes.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeTooLarge {
                size,
                available: self.size(),
            });
        }
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, n: u64, proof: &mut Vec<Hash>) {
        if n <= 1 {
            return;
        }
        let k = split_u64(n);
        if m < k {
            self.path(m, start, k, proof);
            proof.push(self.range_root(start + k, n - k));
        } else {
            self.path(m - k, start + k, n - k, proof);
            proof.push(self.range_root(start, k));
        }
    }

    /// Same as [`consistency_proof`] over [`Tree::leaves`], in O(log² n) hashes.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if new > self.size() {
            return Err(ProofError::SizeTooLarge {
                size: new,
                available: self.size(),
            });
        }
        if old > new {
            return Err(ProofError::OldLargerThanNew { old, new });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, n: u64, complete: bool, proof: &mut Vec<Hash>) {
        if m == n {
            if !complete {
                proof.push(self.range_root(start, n));
            }
            return;
        }
        let k = split_u64(n);
        if m <= k {
            self.subproof(m, start, k, complete, proof);
            proof.push(self.range_root(start + k, n - k));
        } else {
            self.subproof(m - k, start + k, n - k, false, proof);
            proof.push(self.range_root(start, k));
        }
    }
}

/// The largest power of two smaller than `n` (n >= 2).
fn split_u64(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn vector_leaves() -> Vec<Hash> {
        LEAVES
            .iter()
            .map(|l| leaf_hash(&hex::decode(l).unwrap()))
            .collect()
    }

    fn hashes(list: &[&str]) -> Vec<Hash> {
        list.iter().map(|s| h(s)).collect()
    }

    #[test]
    fn empty_tree_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn roots_match_rfc6962_vectors() {
        let leaves = vector_leaves();
        for size in 1..=8 {
            assert_eq!(
                hex::encode(root(&leaves[..size])),
                ROOTS[size - 1],
                "size {size}"
            );
        }
    }

    #[test]
    fn inclusion_proofs_match_rfc6962_vectors() {
        let leaves = vector_leaves();
        let cases: [(u64, u64, Vec<Hash>); 5] = [
            (0, 1, vec![]),
            (
                0,
                8,
                hashes(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                5,
                8,
                hashes(&[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (2, 3, hashes(&[ROOTS[1]])),
            (
                1,
                5,
                hashes(&[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
        ];
        for (index, size, want) in cases {
            let got = inclusion_proof(index, size, &leaves).unwrap();
            assert_eq!(got, want, "index {index} size {size}");
            let r = h(ROOTS[size as usize - 1]);
            verify_inclusion(index, size, &leaves[index as usize], &got, &r).unwrap();
        }
        let proof = inclusion_proof(5, 8, &leaves).unwrap();
        assert!(verify_inclusion(4, 8, &leaves[5], &proof, &h(ROOTS[7])).is_err());
    }

    #[test]
    fn consistency_proofs_match_rfc6962_vectors() {
        let leaves = vector_leaves();
        let cases: [(u64, u64, Vec<Hash>); 4] = [
            (
                1,
                8,
                hashes(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                6,
                8,
                hashes(&[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (
                2,
                5,
                hashes(&[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
            (8, 8, vec![]),
        ];
        for (old, new, want) in cases {
            let got = consistency_proof(old, new, &leaves).unwrap();
            assert_eq!(got, want, "{old} -> {new}");
            let (or, nr) = (h(ROOTS[old as usize - 1]), h(ROOTS[new as usize - 1]));
            verify_consistency(old, new, &or, &nr, &got).unwrap();
        }
        let proof = consistency_proof(6, 8, &leaves).unwrap();
        assert_eq!(
            verify_consistency(6, 8, &h(ROOTS[4]), &h(ROOTS[7]), &proof),
            Err(ProofError::RootMismatch)
        );
    }

    fn synthetic_leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    /// Tree sizes up to which every bit of every proof is flipped; above
    /// it one bit per byte is. `UNSEEN_SLOW_TESTS=1` flips every bit up to [`MAX`].
    fn all_bits_up_to() -> u64 {
        if std::env::var_os("UNSEEN_SLOW_TESTS").is_some() {
            MAX as u64
        } else {
            16
        }
    }

    /// The bits to flip in a 32-byte hash for a tree of `size` leaves.
    fn bits(size: u64) -> impl Iterator<Item = usize> + Clone {
        let step = if size <= all_bits_up_to() { 1 } else { 9 };
        (0..256).step_by(step)
    }

    /// Every proof with one bit flipped, one hash dropped or one hash added.
    fn mutations(proof: &[Hash], size: u64) -> impl Iterator<Item = Vec<Hash>> + '_ {
        let flips = (0..proof.len()).flat_map(move |i| {
            bits(size).map(move |bit| {
                let mut p = proof.to_vec();
                p[i] = flip(p[i], bit);
                p
            })
        });
        let drops = (0..proof.len()).map(move |i| {
            let mut p = proof.to_vec();
            p.remove(i);
            p
        });
        let extra = std::iter::once({
            let mut p = proof.to_vec();
            p.push([7; 32]);
            p
        });
        flips.chain(drops).chain(extra)
    }

    fn flip(mut h: Hash, bit: usize) -> Hash {
        h[bit / 8] ^= 1 << (bit % 8);
        h
    }

    const MAX: usize = 64;

    #[test]
    fn compact_tree_root_equals_recursive_root() {
        let leaves = synthetic_leaves(MAX + 70);
        let mut tree = CompactTree::new();
        assert_eq!(tree.root(), empty_root());
        for (i, l) in leaves.iter().enumerate() {
            tree.push(*l);
            assert_eq!(tree.size(), i as u64 + 1);
            assert_eq!(tree.root(), root(&leaves[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_every_mutation_fails() {
        let leaves = synthetic_leaves(MAX);
        for size in 1..=MAX as u64 {
            let r = root(&leaves[..size as usize]);
            for index in 0..size {
                let leaf = &leaves[index as usize];
                let proof = inclusion_proof(index, size, &leaves).unwrap();
                verify_inclusion(index, size, leaf, &proof, &r).unwrap();
                for bad in mutations(&proof, size) {
                    assert!(verify_inclusion(index, size, leaf, &bad, &r).is_err());
                }
                for bit in bits(size) {
                    assert!(verify_inclusion(index, size, &flip(*leaf, bit), &proof, &r).is_err());
                    assert!(verify_inclusion(index, size, leaf, &proof, &flip(r, bit)).is_err());
                }
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(verify_inclusion(other, size, leaf, &proof, &r).is_err());
                }
            }
            assert!(inclusion_proof(size, size, &leaves).is_err());
        }
        assert!(inclusion_proof(0, MAX as u64 + 1, &leaves).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_every_mutation_fails() {
        let leaves = synthetic_leaves(MAX);
        let roots: Vec<Hash> = (0..=MAX).map(|n| root(&leaves[..n])).collect();
        for new in 0..=MAX as u64 {
            let nr = &roots[new as usize];
            for old in 0..=new {
                let or = &roots[old as usize];
                let proof = consistency_proof(old, new, &leaves).unwrap();
                verify_consistency(old, new, or, nr, &proof).unwrap();
                if old == 0 {
                    continue;
                }
                for bad in mutations(&proof, new) {
                    assert!(
                        verify_consistency(old, new, or, nr, &bad).is_err(),
                        "{old}->{new}"
                    );
                }
                for bit in bits(new) {
                    assert!(verify_consistency(old, new, &flip(*or, bit), nr, &proof).is_err());
                    assert!(verify_consistency(old, new, or, &flip(*nr, bit), &proof).is_err());
                }
                if old < new {
                    let wrong = &roots[old as usize - 1];
                    assert!(verify_consistency(old, new, wrong, nr, &proof).is_err());
                }
            }
            assert!(consistency_proof(new + 1, new, &leaves).is_err());
        }
    }
}
