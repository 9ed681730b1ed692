//! The Merkle tree over a log's entries, with the structure and algorithms of RFC 9162 §2.1,
//! hashed with the log's [`TreeHash`] (blake3 for format version 1, SHA-256 as RFC 6962 for
//! version 2).
//!
//! Storage is by *perfect subtrees*: the node at `(level, index)` is the root of the subtree
//! over leaves `[index·2^level, (index+1)·2^level)`. A tree of any size is a right fold of the
//! perfect subtrees of its binary decomposition (the [`Frontier`]), so appending touches
//! O(log n) nodes and any proof reads O(log n) of them. Nothing here does IO: a [`NodeSource`]
//! supplies perfect subtree hashes (the store reads them from redb, tests from a `Vec`).

use thiserror::Error;

use crate::hash::{Hash, TreeHash};

/// Longest proof any tree of `u64` size can need. Anything longer is rejected before hashing.
pub const PROOF_HASHES_MAX: usize = 64;

/// The right edge of a tree: the roots of the perfect subtrees of its binary decomposition,
/// largest (leftmost) first. Enough to append and to compute the root, in O(log n) memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontier {
    tree: TreeHash,
    size: u64,
    /// `(level, hash)`, strictly decreasing levels.
    nodes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// The empty tree hashed with `tree`.
    pub fn new(tree: TreeHash) -> Frontier {
        Frontier {
            tree,
            size: 0,
            nodes: Vec::new(),
        }
    }

    /// The tree's hash function.
    pub fn tree(&self) -> TreeHash {
        self.tree
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its perfect subtrees.
    pub fn from_source<S: NodeSource + ?Sized>(
        source: &S,
        size: u64,
    ) -> Result<Frontier, S::Error> {
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push((level, source.perfect(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Frontier {
            tree: source.tree(),
            size,
            nodes,
        })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf. `completed` is called for every perfect subtree of level ≥ 1 this
    /// append completes, as `(level, index, hash)`: what a store persists.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u8, u64, &Hash)) {
        let mut level = 0u8;
        let mut hash = leaf;
        let mut index = self.size;
        while let Some(&(top_level, top)) = self.nodes.last() {
            if top_level != level {
                break;
            }
            self.nodes.pop();
            hash = self.tree.node(&top, &hash);
            level += 1;
            index >>= 1;
            completed(level, index, &hash);
        }
        self.nodes.push((level, hash));
        self.size += 1;
    }

    /// Root hash (RFC 9162 MTH) of the tree so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return self.tree.empty();
        };
        for (_, left) in iter {
            acc = self.tree.node(left, &acc);
        }
        acc
    }
}

/// Supplies the hash of the perfect subtree `(level, index)`; level 0 is a leaf hash.
pub trait NodeSource {
    /// Read failure.
    type Error;
    /// The tree's hash function.
    fn tree(&self) -> TreeHash;
    /// Root of leaves `[index·2^level, (index+1)·2^level)`. Callers only ask for subtrees that
    /// lie wholly inside the tree.
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Leaf hashes in memory: the reference model for tests and for small in-memory trees.
#[derive(Clone, Copy, Debug)]
pub struct Leaves<'a> {
    /// The tree's hash function.
    pub tree: TreeHash,
    /// The leaf hashes.
    pub leaves: &'a [Hash],
}

impl NodeSource for Leaves<'_> {
    type Error = std::convert::Infallible;
    fn tree(&self) -> TreeHash {
        self.tree
    }
    fn perfect(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        let width = 1usize << level;
        let start = index as usize * width;
        Ok(reference_root(
            self.tree,
            &self.leaves[start..start + width],
        ))
    }
}

/// RFC 9162 MTH computed naively over all leaves. O(n): a reference for tests.
pub fn reference_root(tree: TreeHash, leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => tree.empty(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            tree.node(
                &reference_root(tree, &leaves[..k]),
                &reference_root(tree, &leaves[k..]),
            )
        }
    }
}

/// Largest power of two strictly less than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]) where `start` is aligned to the largest power of two below `end - start`,
/// as it always is inside RFC 9162's recursions. O(log n) source reads.
fn subtree<S: NodeSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let width = end - start;
    debug_assert!(width >= 1);
    if width.is_power_of_two() && start.is_multiple_of(width) {
        let level = width.trailing_zeros() as u8;
        return src.perfect(level, start >> level);
    }
    let k = split(width);
    let left = subtree(src, start, start + k)?;
    let right = subtree(src, start + k, end)?;
    Ok(src.tree().node(&left, &right))
}

/// Root of the first `size` leaves.
pub fn root<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(src.tree().empty());
    }
    subtree(src, 0, size)
}

/// Why a proof cannot be generated.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProofRequestError {
    /// Inclusion of a leaf that is not in the tree.
    #[error("index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// Requested leaf.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// Consistency from a larger tree to a smaller one.
    #[error("cannot prove consistency from size {from} to the smaller size {to}")]
    Shrinking {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
    },
}

/// RFC 9162 §2.1.3.1 PATH(index, D[0:size]): the inclusion proof of one leaf.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Result<Vec<Hash>, ProofRequestError>, S::Error> {
    if index >= size {
        return Ok(Err(ProofRequestError::IndexOutOfRange { index, size }));
    }
    let mut path = Vec::new();
    // Walk down from the root, collecting siblings; RFC order is bottom-up, so reverse.
    let (mut start, mut end, mut m) = (0u64, size, index);
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            path.push(subtree(src, start + k, end)?);
            end = start + k;
        } else {
            path.push(subtree(src, start, start + k)?);
            start += k;
            m -= k;
        }
    }
    path.reverse();
    Ok(Ok(path))
}

/// RFC 9162 §2.1.4.1 PROOF(from, D[0:to]): the consistency proof between two sizes.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    from: u64,
    to: u64,
) -> Result<Result<Vec<Hash>, ProofRequestError>, S::Error> {
    if from > to {
        return Ok(Err(ProofRequestError::Shrinking { from, to }));
    }
    if from == 0 || from == to {
        return Ok(Ok(Vec::new()));
    }
    // SUBPROOF(m, D[start:end], b), unrolled; siblings collected top-down, then reversed.
    let mut path = Vec::new();
    let (mut start, mut end, mut m, mut complete) = (0u64, to, from, true);
    loop {
        if m == end - start {
            if !complete {
                path.push(subtree(src, start, end)?);
            }
            break;
        }
        let k = split(end - start);
        if m <= k {
            path.push(subtree(src, start + k, end)?);
            end = start + k;
        } else {
            path.push(subtree(src, start, start + k)?);
            start += k;
            m -= k;
            complete = false;
        }
    }
    path.reverse();
    Ok(Ok(path))
}

/// Why an inclusion proof does not verify.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InclusionError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// The path has the wrong number of hashes for this index and size.
    #[error("proof has {got} hashes; a leaf at index {index} of a size-{size} tree needs {want}")]
    WrongLength {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
        /// Hashes given.
        got: usize,
        /// Hashes needed.
        want: usize,
    },
    /// The recomputed root differs from the checkpoint's.
    #[error("recomputed root {computed} does not match the expected root {expected}")]
    RootMismatch {
        /// Root the proof leads to.
        computed: Hash,
        /// Root it should lead to.
        expected: Hash,
    },
}

/// Number of hashes in PATH(index, D[0:size]): one per level of RFC 9162's recursion.
fn inclusion_len(index: u64, size: u64) -> usize {
    let (mut start, mut end, mut m, mut len) = (0u64, size, index, 0usize);
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            end = start + k;
        } else {
            start += k;
            m -= k;
        }
        len += 1;
    }
    len
}

/// RFC 9162 §2.1.3.2: verifies that `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(
    tree: TreeHash,
    index: u64,
    size: u64,
    leaf: &Hash,
    path: &[Hash],
    root: &Hash,
) -> Result<(), InclusionError> {
    if index >= size {
        return Err(InclusionError::IndexOutOfRange { index, size });
    }
    // Shape check before any hashing.
    let want = inclusion_len(index, size);
    if path.len() != want {
        return Err(InclusionError::WrongLength {
            index,
            size,
            got: path.len(),
            want,
        });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            // Unreachable after the length check, kept as the RFC states it.
            return Err(InclusionError::WrongLength {
                index,
                size,
                got: path.len(),
                want,
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = tree.node(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = tree.node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 || r != *root {
        return Err(InclusionError::RootMismatch {
            computed: r,
            expected: *root,
        });
    }
    Ok(())
}

/// Why a consistency proof does not verify.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConsistencyError {
    /// The newer tree is smaller than the older one.
    #[error("size {from} is larger than size {to}")]
    Shrinking {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
    },
    /// The proof has an impossible number of hashes.
    #[error("proof has {got} hashes; from size {from} to {to} needs {want}")]
    WrongLength {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
        /// Hashes given.
        got: usize,
        /// Hashes needed.
        want: usize,
    },
    /// Equal sizes with different roots: the log forked.
    #[error("equal sizes {size} but different roots: the log forked")]
    Fork {
        /// The size.
        size: u64,
    },
    /// The proof does not reproduce the older root.
    #[error("proof does not lead to the older root")]
    OldRootMismatch,
    /// The proof does not reproduce the newer root.
    #[error("proof does not lead to the newer root")]
    NewRootMismatch,
}

/// Number of hashes in PROOF(from, D[0:to]), 0 < from < to.
fn consistency_len(from: u64, to: u64) -> usize {
    let (mut start, mut end, mut m, mut complete, mut len) = (0u64, to, from, true, 0usize);
    loop {
        if m == end - start {
            return len + usize::from(!complete);
        }
        let k = split(end - start);
        len += 1;
        if m <= k {
            end = start + k;
        } else {
            start += k;
            m -= k;
            complete = false;
        }
    }
}

/// RFC 9162 §2.1.4.2: verifies that the tree (`to`, `new_root`) extends (`from`, `old_root`).
pub fn verify_consistency(
    tree: TreeHash,
    from: u64,
    to: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), ConsistencyError> {
    if from > to {
        return Err(ConsistencyError::Shrinking { from, to });
    }
    let want = if from == 0 || from == to {
        0
    } else {
        consistency_len(from, to)
    };
    if path.len() != want {
        return Err(ConsistencyError::WrongLength {
            from,
            to,
            got: path.len(),
            want,
        });
    }
    if from == to {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ConsistencyError::Fork { size: from })
        };
    }
    if from == 0 {
        // Every tree extends the empty tree.
        return Ok(());
    }
    let mut nodes: Vec<Hash> = Vec::with_capacity(path.len() + 1);
    if from.is_power_of_two() {
        nodes.push(*old_root);
    }
    nodes.extend_from_slice(path);
    let (mut fn_, mut sn) = (from - 1, to - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = nodes[0];
    let mut sr = nodes[0];
    for c in &nodes[1..] {
        if sn == 0 {
            return Err(ConsistencyError::NewRootMismatch);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = tree.node(c, &fr);
            sr = tree.node(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = tree.node(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if fr != *old_root {
        return Err(ConsistencyError::OldRootMismatch);
    }
    if sr != *new_root || sn != 0 {
        return Err(ConsistencyError::NewRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use proptest::prelude::*;

    const TREES: [TreeHash; 2] = [TreeHash::Blake3, TreeHash::Sha256];

    fn leaves(tree: TreeHash, n: u64) -> Vec<Hash> {
        (0..n).map(|i| tree.leaf(&i.to_be_bytes())).collect()
    }

    fn src(tree: TreeHash, leaves: &[Hash]) -> Leaves<'_> {
        Leaves { tree, leaves }
    }

    #[test]
    fn frontier_root_matches_reference_for_every_size_up_to_300() {
        for tree in TREES {
            let all = leaves(tree, 300);
            let mut f = Frontier::new(tree);
            assert_eq!(f.root(), reference_root(tree, &[]));
            for (i, leaf) in all.iter().enumerate() {
                f.push(*leaf, |_, _, _| {});
                assert_eq!(f.root(), reference_root(tree, &all[..=i]), "size {}", i + 1);
                assert_eq!(
                    Frontier::from_source(&src(tree, &all), i as u64 + 1).unwrap(),
                    f
                );
            }
        }
    }

    #[test]
    fn completed_nodes_are_the_perfect_subtrees() {
        for tree in TREES {
            let all = leaves(tree, 64);
            let mut f = Frontier::new(tree);
            let mut seen = Vec::new();
            for leaf in &all {
                f.push(*leaf, |l, i, h| seen.push((l, i, *h)));
            }
            // 32 + 16 + 8 + 4 + 2 + 1 interior perfect subtrees.
            assert_eq!(seen.len(), 63);
            for (l, i, h) in seen {
                assert_eq!(src(tree, &all).perfect(l, i).unwrap(), h);
            }
        }
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_up_to_70() {
        for tree in TREES {
            let all = leaves(tree, 70);
            let s = src(tree, &all);
            for n in 1..=70u64 {
                let root_n = reference_root(tree, &all[..n as usize]);
                for i in 0..n {
                    let p = inclusion_proof(&s, i, n).unwrap().unwrap();
                    assert_eq!(p.len(), inclusion_len(i, n));
                    verify_inclusion(tree, i, n, &all[i as usize], &p, &root_n).unwrap();
                    // The wrong leaf must fail, and so must the other tree hash.
                    let other = all[((i + 1) % n) as usize];
                    if n > 1 {
                        assert!(verify_inclusion(tree, i, n, &other, &p, &root_n).is_err());
                        let wrong = TREES.into_iter().find(|t| *t != tree).unwrap();
                        assert!(
                            verify_inclusion(wrong, i, n, &all[i as usize], &p, &root_n).is_err()
                        );
                    }
                }
                for m in 0..=n {
                    let root_m = reference_root(tree, &all[..m as usize]);
                    let p = consistency_proof(&s, m, n).unwrap().unwrap();
                    verify_consistency(tree, m, n, &root_m, &root_n, &p)
                        .unwrap_or_else(|e| panic!("{m}->{n}: {e}"));
                }
            }
        }
    }

    #[test]
    fn requests_outside_the_tree_are_refused() {
        let tree = TreeHash::Sha256;
        let all = leaves(tree, 5);
        let s = src(tree, &all);
        assert!(matches!(
            inclusion_proof(&s, 5, 5).unwrap(),
            Err(ProofRequestError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            consistency_proof(&s, 5, 4).unwrap(),
            Err(ProofRequestError::Shrinking { .. })
        ));
        assert!(matches!(
            verify_inclusion(tree, 5, 5, &all[0], &[], &all[0]),
            Err(InclusionError::IndexOutOfRange { .. })
        ));
    }

    /// Known-answer vector pinning the version-1 tree shape: the root of 7 leaves, whose
    /// leaf i is `leaf_hash(i as u64 big-endian)`. Computed once with the reference
    /// recursion; docs/FORMAT.md shows the same value.
    #[test]
    fn known_answer_root_of_seven() {
        let all: Vec<Hash> = (0..7u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let l = |i: usize| all[i];
        let n = |a: &Hash, b: &Hash| TreeHash::Blake3.node(a, b);
        let expected = n(
            &n(&n(&l(0), &l(1)), &n(&l(2), &l(3))),
            &n(&n(&l(4), &l(5)), &l(6)),
        );
        assert_eq!(reference_root(TreeHash::Blake3, &all), expected);
        assert_eq!(root(&src(TreeHash::Blake3, &all), 7).unwrap(), expected);
    }

    /// The version-2 tree is RFC 6962's: the roots of Certificate Transparency's reference
    /// test vectors (the eight leaves of `merkle_tree_test.cc` in the CT C++ sources, also in
    /// Go's `sumdb/tlog` tests), and SHA-256 of the empty string for the empty tree.
    #[test]
    fn version_2_is_rfc_6962() {
        fn hex(s: &str) -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
        let inputs = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let tree = TreeHash::Sha256;
        assert_eq!(
            tree.empty().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaves: Vec<Hash> = inputs.iter().map(|i| tree.leaf(&hex(i))).collect();
        let mut f = Frontier::new(tree);
        for (i, leaf) in leaves.iter().enumerate() {
            f.push(*leaf, |_, _, _| {});
            assert_eq!(f.root().to_hex(), roots[i], "size {}", i + 1);
        }
    }

    proptest! {
        #[test]
        fn tampered_proofs_fail(v2: bool, n in 2u64..200, i_seed: u64, m_seed: u64, pos_seed: usize, bit in 0u8..8) {
            let tree = if v2 { TreeHash::Sha256 } else { TreeHash::Blake3 };
            let all = leaves(tree, n);
            let s = src(tree, &all);
            let i = i_seed % n;
            let root_n = reference_root(tree, &all);
            let mut p = inclusion_proof(&s, i, n).unwrap().unwrap();
            if !p.is_empty() {
                let pos = pos_seed % p.len();
                p[pos].0[(pos_seed / 7) % 32] ^= 1 << bit;
                prop_assert!(verify_inclusion(tree, i, n, &all[i as usize], &p, &root_n).is_err());
            }
            let m = 1 + m_seed % (n - 1);
            let root_m = reference_root(tree, &all[..m as usize]);
            let mut c = consistency_proof(&s, m, n).unwrap().unwrap();
            prop_assert!(verify_consistency(tree, m, n, &root_m, &root_n, &c).is_ok());
            let pos = pos_seed % c.len();
            c[pos].0[(pos_seed / 7) % 32] ^= 1 << bit;
            prop_assert!(verify_consistency(tree, m, n, &root_m, &root_n, &c).is_err());
            // A truncated proof fails on shape, before hashing.
            c.pop();
            prop_assert!(
                matches!(
                    verify_consistency(tree, m, n, &root_m, &root_n, &c),
                    Err(ConsistencyError::WrongLength { .. })
                ),
                "truncated proof must fail on shape"
            );
        }
    }
}
