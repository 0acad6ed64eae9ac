//! The Merkle code against a second, deliberately naive implementation
//! written straight from RFC 6962 section 2.1 (MTH, PATH, PROOF/SUBPROOF),
//! and against the published RFC 6962 test vectors (as used by
//! certificate-transparency-go and transparency-dev/merkle).

use ring::digest::{SHA256, digest};
use unseen_ledger::Tree;
use unseen_ledger::merkle::{
    self, consistency_proof, inclusion_proof, leaf_hash, verify_consistency, verify_inclusion,
};

type H = [u8; 32];

/// The reference: RFC 6962 section 2.1, over the data items themselves.
mod rfc6962 {
    use super::*;

    fn sha(bytes: &[u8]) -> H {
        digest(&SHA256, bytes).as_ref().try_into().unwrap()
    }

    fn k_for(n: usize) -> usize {
        // "the largest power of two smaller than n"
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    pub fn leaf(d: &[u8]) -> H {
        sha(&[&[0u8][..], d].concat())
    }

    fn node(a: &H, b: &H) -> H {
        sha(&[&[1u8][..], a, b].concat())
    }

    /// MTH(D[n]), over leaf hashes already computed with `leaf`.
    pub fn mth(d: &[H]) -> H {
        match d.len() {
            0 => sha(b""),
            1 => d[0],
            n => {
                let k = k_for(n);
                node(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    pub fn path(m: usize, d: &[H]) -> Vec<H> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = k_for(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    /// PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
    pub fn proof(m: usize, d: &[H]) -> Vec<H> {
        subproof(m, d, true)
    }

    fn subproof(m: usize, d: &[H], b: bool) -> Vec<H> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k_for(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
}

const MAX: usize = 300;

fn data(i: usize) -> Vec<u8> {
    format!("entry {i} {}", "x".repeat(i % 7)).into_bytes()
}

fn reference_leaves(n: usize) -> Vec<H> {
    (0..n).map(|i| rfc6962::leaf(&data(i))).collect()
}

#[test]
fn roots_agree_with_the_rfc_definition_for_sizes_0_to_300() {
    let reference = reference_leaves(MAX);
    let ours: Vec<H> = (0..MAX).map(|i| leaf_hash(&data(i))).collect();
    assert_eq!(ours, reference);
    let mut tree = Tree::new();
    assert_eq!(tree.root(), rfc6962::mth(&[]));
    for n in 1..=MAX {
        tree.push(ours[n - 1]);
        let want = rfc6962::mth(&reference[..n]);
        assert_eq!(tree.root(), want, "Tree, size {n}");
        assert_eq!(merkle::root(&ours[..n]), want, "merkle::root, size {n}");
        for m in (0..=n).step_by(17) {
            assert_eq!(
                tree.root_at(m as u64).unwrap(),
                rfc6962::mth(&reference[..m])
            );
        }
    }
}

#[test]
fn inclusion_proofs_agree_with_the_rfc_definition_for_every_index_up_to_300() {
    let leaves = reference_leaves(MAX);
    let tree = Tree::from_leaves(leaves.clone());
    for n in 1..=MAX {
        let root = rfc6962::mth(&leaves[..n]);
        for m in 0..n {
            let want = rfc6962::path(m, &leaves[..n]);
            let got = tree.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(got, want, "PATH({m}, D[{n}]) from Tree");
            if n <= 64 || m % 13 == 0 {
                let slow = inclusion_proof(m as u64, n as u64, &leaves).unwrap();
                assert_eq!(slow, want, "PATH({m}, D[{n}]) from merkle::inclusion_proof");
            }
            verify_inclusion(m as u64, n as u64, &leaves[m], &got, &root).unwrap();
        }
    }
}

#[test]
fn consistency_proofs_agree_with_the_rfc_definition_for_every_pair_up_to_300() {
    let leaves = reference_leaves(MAX);
    let tree = Tree::from_leaves(leaves.clone());
    let roots: Vec<H> = (0..=MAX).map(|n| rfc6962::mth(&leaves[..n])).collect();
    for n in 1..=MAX {
        for m in 1..=n {
            let got = tree.consistency_proof(m as u64, n as u64).unwrap();
            let want = if m == n {
                vec![]
            } else {
                rfc6962::proof(m, &leaves[..n])
            };
            assert_eq!(got, want, "PROOF({m}, D[{n}]) from Tree");
            if n <= 64 || (m * 7 + n) % 29 == 0 {
                let slow = consistency_proof(m as u64, n as u64, &leaves).unwrap();
                assert_eq!(
                    slow, want,
                    "PROOF({m}, D[{n}]) from merkle::consistency_proof"
                );
            }
            verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &got).unwrap();
        }
    }
}

fn h(s: &str) -> H {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// The eight leaves of the RFC 6962 test tree.
const VECTOR_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Roots of its first 1..=8 leaves.
const VECTOR_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn tree_matches_the_published_rfc6962_vectors() {
    let leaves: Vec<H> = VECTOR_LEAVES
        .iter()
        .map(|l| leaf_hash(&hex::decode(l).unwrap()))
        .collect();
    let tree = Tree::from_leaves(leaves.clone());
    for n in 1..=8 {
        assert_eq!(
            hex::encode(tree.root_at(n).unwrap()),
            VECTOR_ROOTS[n as usize - 1]
        );
        assert_eq!(
            hex::encode(rfc6962::mth(&leaves[..n as usize])),
            VECTOR_ROOTS[n as usize - 1]
        );
    }
    let inclusion: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, want) in inclusion {
        let want: Vec<H> = want.iter().map(|s| h(s)).collect();
        assert_eq!(tree.inclusion_proof(index, size).unwrap(), want);
    }
    let consistency: [(u64, u64, &[&str]); 3] = [
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, new, want) in consistency {
        let want: Vec<H> = want.iter().map(|s| h(s)).collect();
        assert_eq!(tree.consistency_proof(old, new).unwrap(), want);
    }
}

#[test]
fn tree_refuses_sizes_and_indices_it_does_not_have() {
    let tree = Tree::from_leaves(reference_leaves(20));
    assert!(tree.root_at(21).is_err());
    assert!(tree.inclusion_proof(20, 20).is_err());
    assert!(tree.inclusion_proof(0, 21).is_err());
    assert!(tree.consistency_proof(5, 21).is_err());
    assert!(tree.consistency_proof(6, 5).is_err());
    assert_eq!(tree.consistency_proof(0, 20).unwrap(), Vec::<H>::new());
}
