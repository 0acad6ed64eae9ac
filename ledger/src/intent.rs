//! Group intents: the write-ahead records that let [`crate::Ledger::open`]
//! tell this ledger's own unfinished group from entries someone else added,
//! and restore a group whose entries had not reached the disk.
//!
//! Before a group's entries are written, the ledger writes and syncs an
//! intent: the size and Merkle root of the tree it extends (its base), the
//! leaf hash of every entry it is about to write and, for groups up to
//! [`HELD_LINES_LIMIT`] bytes, the entry lines themselves, signed with the
//! ledger key under a context line of its own (so an intent can never be
//! taken for a checkpoint or any other signed document). An intent whose
//! signature verifies and whose base root is the root of the entries on
//! disk at that size proves those entries (a Merkle root commits to all of
//! them) and, one by one, as many of the following entries as match its
//! leaves: the service wrote them, or was about to. Nothing else does.
//!
//! An intent that holds its lines makes its group durable by itself: the
//! entries file is then synced later, off the appenders' path, and
//! [`crate::Ledger::open`] writes back any of the group's lines a crash
//! kept from the disk. So a group costs one device flush before its callers
//! return instead of two.
//!
//! Format (one item per line up to the held lines; the signature covers
//! every byte before `sig`; bytes after the signature's line are left from
//! an earlier, longer record and are not part of this one):
//!
//! ```text
//! unseen-ledger group intent v2
//! base <size> <root hex>
//! <leaf hash hex of entry size>
//! <leaf hash hex of entry size+1>
//! ...
//! lines <byte count of the held lines, or "none">
//! <the entry lines, each ending in a newline>
//! sig <Ed25519 signature hex>
//! ```

use crate::entry::Hash;
use crate::keys::{PublicKey, SigningKey};
use crate::merkle::{Tree, leaf_hash};

/// First line of every intent, and the context its signature is made in.
const HEADER: &str = "unseen-ledger group intent v2\n";

/// Most entries one intent (one group) may cover.
pub const MAX_GROUP: usize = 1 << 20;

/// Largest group, in bytes of entry lines, whose intent holds the lines.
/// A larger group's entries are synced before its callers return.
pub const HELD_LINES_LIMIT: usize = 8 << 20;

/// Largest intent file read: the header, base and signature lines,
/// [`MAX_GROUP`] leaf lines and [`HELD_LINES_LIMIT`] bytes of lines.
pub(crate) const INTENT_LIMIT: u64 = 4096 + 65 * MAX_GROUP as u64 + HELD_LINES_LIMIT as u64;

/// What a group is about to add to a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intent {
    /// Size of the tree the group extends.
    pub base_size: u64,
    /// Its Merkle root.
    pub base_root: Hash,
    /// Leaf hashes of the group's entries, in order.
    pub leaves: Vec<Hash>,
    /// The group's entry lines, each ending in a newline, if held.
    pub lines: Option<Vec<u8>>,
}

impl Intent {
    /// The signed record, as written to an intent file.
    pub fn to_signed_bytes(&self, key: &SigningKey) -> Vec<u8> {
        let held = self.lines.as_ref().map_or(0, Vec::len);
        let mut out = Vec::with_capacity(HEADER.len() + 100 + 65 * self.leaves.len() + held + 160);
        out.extend_from_slice(HEADER.as_bytes());
        out.extend_from_slice(
            format!("base {} {}\n", self.base_size, hex::encode(self.base_root)).as_bytes(),
        );
        let mut leaf_hex = [0u8; 64];
        for leaf in &self.leaves {
            // Infallible: the buffer is exactly twice the hash's length.
            if hex::encode_to_slice(leaf, &mut leaf_hex).is_ok() {
                out.extend_from_slice(&leaf_hex);
            }
            out.push(b'\n');
        }
        match &self.lines {
            Some(lines) => {
                out.extend_from_slice(format!("lines {}\n", lines.len()).as_bytes());
                out.extend_from_slice(lines);
            }
            None => out.extend_from_slice(b"lines none\n"),
        }
        let sig = key.sign(&out);
        out.extend_from_slice(b"sig ");
        out.extend_from_slice(hex::encode(sig).as_bytes());
        out.push(b'\n');
        out
    }

    /// Reads a record written by [`Intent::to_signed_bytes`] with the key
    /// of `public`; `None` for anything else (a torn write, another key,
    /// an edit, held lines that are not the listed leaves).
    pub fn open(bytes: &[u8], public: &PublicKey) -> Option<Intent> {
        let mut rest = bytes.strip_prefix(HEADER.as_bytes())?;
        let base = take_line(&mut rest)?.strip_prefix("base ")?;
        let (size, root) = base.split_once(' ')?;
        let mut leaves = Vec::new();
        let held = loop {
            let line = take_line(&mut rest)?;
            if let Some(held) = line.strip_prefix("lines ") {
                break held;
            }
            leaves.push(parse_hash(line)?);
        };
        let lines = match held {
            "none" => None,
            len => {
                let len: usize = len.parse().ok()?;
                // Only the canonical decimal form this module writes.
                if len.to_string() != held || rest.len() < len {
                    return None;
                }
                let (lines, after) = rest.split_at(len);
                rest = after;
                Some(lines.to_vec())
            }
        };
        let signed_len = bytes.len() - rest.len();
        let sig = hex::decode(take_line(&mut rest)?.strip_prefix("sig ")?).ok()?;
        if !public.verify(&bytes[..signed_len], &sig) {
            return None;
        }
        if let Some(lines) = &lines {
            let mut held_leaves = lines
                .split_inclusive(|&b| b == b'\n')
                .map(|line| line.strip_suffix(b"\n").map(leaf_hash));
            let agree = leaves
                .iter()
                .all(|leaf| held_leaves.next() == Some(Some(*leaf)))
                && held_leaves.next().is_none();
            if !agree {
                return None;
            }
        }
        Some(Intent {
            base_size: size.parse().ok()?,
            base_root: parse_hash(root)?,
            leaves,
            lines,
        })
    }

    /// How many entries of `tree` this intent proves: its base size plus
    /// the leading leaves that match, if the base root is the tree's root
    /// at that size; `None` if it proves nothing.
    pub fn proves(&self, tree: &Tree) -> Option<u64> {
        let matching = self.matching(tree)?;
        Some(self.base_size + matching as u64)
    }

    /// How many of this intent's entries `tree` holds after the base, if
    /// the base root is the tree's root at its size.
    fn matching(&self, tree: &Tree) -> Option<usize> {
        if self.base_size > tree.size() || tree.root_at(self.base_size).ok()? != self.base_root {
            return None;
        }
        let start = usize::try_from(self.base_size).ok()?;
        Some(
            tree.leaves()[start..]
                .iter()
                .zip(&self.leaves)
                .take_while(|(a, b)| a == b)
                .count(),
        )
    }

    /// The held lines `tree` is missing, if its entries after the base are
    /// exactly the first of this group's (a crash came between this record
    /// and its entries reaching the disk): the bytes to append to restore
    /// the group. `None` if the tree is not such a prefix, holds the whole
    /// group already, or the lines are not held.
    pub fn missing_lines(&self, tree: &Tree) -> Option<&[u8]> {
        let lines = self.lines.as_deref()?;
        let matching = self.matching(tree)?;
        let after_base = tree.size() - self.base_size;
        if after_base != matching as u64 || matching == self.leaves.len() {
            return None;
        }
        let skip = lines
            .split_inclusive(|&b| b == b'\n')
            .take(matching)
            .map(<[u8]>::len)
            .sum::<usize>();
        Some(&lines[skip..])
    }
}

/// The next line of `rest` (without its newline), as text; advances past it.
fn take_line<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let end = memchr::memchr(b'\n', rest)?;
    let line = std::str::from_utf8(&rest[..end]).ok()?;
    *rest = &rest[end + 1..];
    Some(line)
}

fn parse_hash(text: &str) -> Option<Hash> {
    let mut h = [0u8; 32];
    hex::decode_to_slice(text, &mut h).ok()?;
    // Only the lowercase form this module writes.
    (hex::encode(h) == text).then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u8) -> Tree {
        Tree::from_leaves((0..n).map(|i| leaf_hash(&[b'a' + i])).collect())
    }

    /// The lines `a`.. of a group, and their leaves.
    fn group(first: u8, len: u8) -> (Vec<Hash>, Vec<u8>) {
        let letters: Vec<u8> = (first..first + len).map(|i| b'a' + i).collect();
        let leaves = letters.iter().map(|&l| leaf_hash(&[l])).collect();
        let lines = letters.iter().flat_map(|&l| [l, b'\n']).collect();
        (leaves, lines)
    }

    #[test]
    fn a_signed_intent_round_trips_and_proves_the_matching_prefix() {
        let key = SigningKey::generate().unwrap();
        let t = tree(5);
        let mut leaves = group(2, 2).0;
        leaves.push(leaf_hash(b"z"));
        for lines in [None, Some(b"c\nd\nz\n".to_vec())] {
            let intent = Intent {
                base_size: 2,
                base_root: t.root_at(2).unwrap(),
                leaves: leaves.clone(),
                lines,
            };
            let bytes = intent.to_signed_bytes(&key);
            let back = Intent::open(&bytes, &key.verifying_key()).unwrap();
            assert_eq!(back, intent);
            // Bytes left after the record by an earlier, longer one are
            // not part of it.
            let mut longer = bytes.clone();
            longer.extend_from_slice(b"ab\nsig 00\n\0\0");
            assert_eq!(Intent::open(&longer, &key.verifying_key()).unwrap(), intent);
            // Entries 2 and 3 match, entry 4 is not the one intended.
            assert_eq!(back.proves(&t), Some(4));
            assert_eq!(back.proves(&tree(2)), Some(2));
            assert_eq!(back.proves(&tree(1)), None);
        }
    }

    #[test]
    fn held_lines_restore_only_a_missing_end_of_the_group() {
        let key = SigningKey::generate().unwrap();
        let (leaves, lines) = group(2, 3);
        let t = tree(2);
        let intent = Intent {
            base_size: 2,
            base_root: t.root(),
            leaves,
            lines: Some(lines),
        };
        let intent = Intent::open(&intent.to_signed_bytes(&key), &key.verifying_key()).unwrap();
        assert_eq!(intent.missing_lines(&tree(2)), Some(&b"c\nd\ne\n"[..]));
        assert_eq!(intent.missing_lines(&tree(4)), Some(&b"e\n"[..]));
        // Whole already, or not this group's prefix: nothing to restore.
        assert_eq!(intent.missing_lines(&tree(5)), None);
        assert_eq!(intent.missing_lines(&tree(1)), None);
        let other = Tree::from_leaves(vec![leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"x")]);
        assert_eq!(intent.missing_lines(&other), None);
    }

    #[test]
    fn anything_but_an_intact_record_of_this_key_is_refused() {
        let key = SigningKey::generate().unwrap();
        let t = tree(3);
        let (leaves, lines) = group(3, 1);
        let bytes = Intent {
            base_size: 3,
            base_root: t.root(),
            leaves: leaves.clone(),
            lines: Some(lines),
        }
        .to_signed_bytes(&key);
        let public = key.verifying_key();
        let other = SigningKey::generate().unwrap().verifying_key();
        assert!(Intent::open(&bytes, &other).is_none());
        for cut in 0..bytes.len() {
            assert!(Intent::open(&bytes[..cut], &public).is_none(), "cut {cut}");
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            assert!(Intent::open(&b, &public).is_none(), "byte {at}");
        }
        // Held lines that are not the listed leaves are refused even when
        // signed.
        let disagreeing = Intent {
            base_size: 3,
            base_root: t.root(),
            leaves,
            lines: Some(b"q\n".to_vec()),
        }
        .to_signed_bytes(&key);
        assert!(Intent::open(&disagreeing, &public).is_none());
        // A base root that is not the tree's proves nothing.
        let wrong = Intent {
            base_size: 2,
            base_root: t.root(),
            leaves: Vec::new(),
            lines: None,
        };
        assert_eq!(wrong.proves(&t), None);
    }
}
