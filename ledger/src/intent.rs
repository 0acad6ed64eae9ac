//! Group intents: the write-ahead records that let [`crate::Ledger::open`]
//! tell this ledger's own unfinished group from entries someone else added.
//!
//! Before a group's entries are written, the ledger writes and syncs an
//! intent: the size and Merkle root of the tree it extends (its base) and
//! the leaf hash of every entry it is about to write, signed with the
//! ledger key under a context line of its own (so an intent can never be
//! taken for a checkpoint or any other signed document). An intent whose
//! signature verifies and whose base root is the root of the entries on
//! disk at that size proves those entries (a Merkle root commits to all of
//! them) and, one by one, as many of the following entries as match its
//! leaves: the service wrote them, or was about to. Nothing else does.
//!
//! Format (text, one item per line; the signature covers everything above
//! its line; zero bytes after the record, left from a longer one, are
//! padding):
//!
//! ```text
//! unseen-ledger group intent v1
//! base <size> <root hex>
//! <leaf hash hex of entry size>
//! <leaf hash hex of entry size+1>
//! ...
//! sig <Ed25519 signature hex>
//! ```

use crate::entry::Hash;
use crate::keys::{PublicKey, SigningKey};
use crate::merkle::Tree;

/// First line of every intent, and the context its signature is made in.
const HEADER: &str = "unseen-ledger group intent v1\n";

/// Most entries one intent (one group) may cover.
pub const MAX_GROUP: usize = 1 << 20;

/// Largest intent file read: the header, base and signature lines and
/// [`MAX_GROUP`] leaf lines.
pub(crate) const INTENT_LIMIT: u64 = 4096 + 65 * MAX_GROUP as u64;

/// What a group is about to add to a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intent {
    /// Size of the tree the group extends.
    pub base_size: u64,
    /// Its Merkle root.
    pub base_root: Hash,
    /// Leaf hashes of the group's entries, in order.
    pub leaves: Vec<Hash>,
}

impl Intent {
    /// The signed record, as written to an intent file.
    pub fn to_signed_bytes(&self, key: &SigningKey) -> Vec<u8> {
        let mut text = String::with_capacity(HEADER.len() + 100 + 65 * self.leaves.len() + 140);
        text.push_str(HEADER);
        text.push_str(&format!(
            "base {} {}\n",
            self.base_size,
            hex::encode(self.base_root)
        ));
        for leaf in &self.leaves {
            text.push_str(&hex::encode(leaf));
            text.push('\n');
        }
        let sig = key.sign(text.as_bytes());
        text.push_str("sig ");
        text.push_str(&hex::encode(sig));
        text.push('\n');
        text.into_bytes()
    }

    /// Reads a record written by [`Intent::to_signed_bytes`] with the key
    /// of `public`; `None` for anything else (a torn write, another key,
    /// an edit).
    pub fn open(bytes: &[u8], public: &PublicKey) -> Option<Intent> {
        // The file is padded with zeros after the record (see the store).
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let bytes = &bytes[..end];
        let text = std::str::from_utf8(bytes).ok()?;
        let body = text.strip_suffix('\n')?;
        let (signed, sig_line) = body.rsplit_once('\n')?;
        let signed_len = signed.len() + 1;
        let sig = hex::decode(sig_line.strip_prefix("sig ")?).ok()?;
        if !public.verify(&bytes[..signed_len], &sig) {
            return None;
        }
        let mut lines = text[..signed_len].lines();
        if lines.next()? != HEADER.trim_end() {
            return None;
        }
        let base = lines.next()?.strip_prefix("base ")?;
        let (size, root) = base.split_once(' ')?;
        let intent = Intent {
            base_size: size.parse().ok()?,
            base_root: parse_hash(root)?,
            leaves: lines.map(parse_hash).collect::<Option<_>>()?,
        };
        Some(intent)
    }

    /// How many entries of `tree` this intent proves: its base size plus
    /// the leading leaves that match, if the base root is the tree's root
    /// at that size; `None` if it proves nothing.
    pub fn proves(&self, tree: &Tree) -> Option<u64> {
        if self.base_size > tree.size() || tree.root_at(self.base_size).ok()? != self.base_root {
            return None;
        }
        let start = usize::try_from(self.base_size).ok()?;
        let matching = tree.leaves()[start..]
            .iter()
            .zip(&self.leaves)
            .take_while(|(a, b)| a == b)
            .count();
        Some(self.base_size + matching as u64)
    }
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
    use crate::merkle::leaf_hash;

    fn tree(n: u8) -> Tree {
        Tree::from_leaves((0..n).map(|i| leaf_hash(&[i])).collect())
    }

    #[test]
    fn a_signed_intent_round_trips_and_proves_the_matching_prefix() {
        let key = SigningKey::generate().unwrap();
        let t = tree(5);
        let intent = Intent {
            base_size: 2,
            base_root: t.root_at(2).unwrap(),
            leaves: vec![leaf_hash(&[2]), leaf_hash(&[3]), leaf_hash(&[9])],
        };
        let bytes = intent.to_signed_bytes(&key);
        let back = Intent::open(&bytes, &key.verifying_key()).unwrap();
        assert_eq!(back, intent);
        // Zero padding left after a shorter record is not part of it.
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 300, 0);
        assert_eq!(Intent::open(&padded, &key.verifying_key()).unwrap(), intent);
        // Entries 2 and 3 match, entry 4 is not the one intended.
        assert_eq!(back.proves(&t), Some(4));
        assert_eq!(back.proves(&tree(2)), Some(2));
        assert_eq!(back.proves(&tree(1)), None);
    }

    #[test]
    fn anything_but_an_intact_record_of_this_key_is_refused() {
        let key = SigningKey::generate().unwrap();
        let t = tree(3);
        let bytes = Intent {
            base_size: 3,
            base_root: t.root(),
            leaves: vec![leaf_hash(b"x")],
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
        // A base root that is not the tree's proves nothing.
        let wrong = Intent {
            base_size: 2,
            base_root: t.root(),
            leaves: Vec::new(),
        };
        assert_eq!(wrong.proves(&t), None);
    }
}
