//! The RFC 6962 Merkle tree: leaf and node hashes, the compact frontier that appends in
//! O(log n) memory, inclusion and consistency proofs (RFC 6962 §2.1.1–2.1.2) read from a
//! [`LeafSource`], and their verification (RFC 9162 §2.1.3.2 and §2.1.4.2).

use sha2::{Digest, Sha256};

use crate::error::{AuditError, Result};
use crate::hash::Hash32;

/// SHA-256(0x00 || data): the hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash32(h.finalize().into())
}

/// SHA-256(0x01 || left || right): the hash of an interior node.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash32(h.finalize().into())
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash32 {
    Hash32(Sha256::digest([]).into())
}

/// The compact "frontier" of a tree: the roots of its maximal perfect subtrees, largest first.
/// Appending a leaf and computing the root both take O(log n) time and memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(height, root)` of each perfect subtree, heights strictly decreasing.
    nodes: Vec<(u32, Hash32)>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// How many leaves have been pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash32) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The Merkle tree hash (MTH) of the leaves pushed so far.
    pub fn root(&self) -> Hash32 {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Random access to leaf hashes, e.g. the fixed-width leaf-hash file.
pub trait LeafSource {
    /// Leaf hash number `index`.
    fn leaf(&mut self, index: u64) -> Result<Hash32>;

    /// The MTH of leaves `[lo, hi)`, reading them in order (O(log n) memory).
    fn subtree_root(&mut self, lo: u64, hi: u64) -> Result<Hash32> {
        let mut f = Frontier::new();
        for i in lo..hi {
            f.push(self.leaf(i)?);
        }
        Ok(f.root())
    }
}

impl LeafSource for &[Hash32] {
    fn leaf(&mut self, index: u64) -> Result<Hash32> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.get(i).copied())
            .ok_or_else(|| AuditError::Proof(format!("no leaf {index}")))
    }
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 6962 PATH).
pub fn inclusion_proof(src: &mut dyn LeafSource, index: u64, size: u64) -> Result<Vec<Hash32>> {
    if index >= size {
        return Err(AuditError::Proof(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    // Walk down from the root, collecting the sibling subtrees; they come out root-first.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(src.subtree_root(lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(src.subtree_root(lo, lo + k)?);
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof between the trees of the first `old` and `new` leaves (RFC 6962
/// PROOF). Empty when `old` is 0 or equal to `new`.
pub fn consistency_proof(src: &mut dyn LeafSource, old: u64, new: u64) -> Result<Vec<Hash32>> {
    if old > new {
        return Err(AuditError::Proof(format!(
            "old size {old} is larger than new size {new}"
        )));
    }
    let mut proof = Vec::new();
    if old == 0 || old == new {
        return Ok(proof);
    }
    // SUBPROOF(m, D[lo:hi], whole) walked iteratively; hashes come out root-first.
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new, old, true);
    while m != hi - lo {
        let k = split(hi - lo);
        if m <= k {
            proof.push(src.subtree_root(lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(src.subtree_root(lo, lo + k)?);
            lo += k;
            m -= k;
            whole = false;
        }
    }
    if !whole {
        proof.push(src.subtree_root(lo, hi)?);
    }
    proof.reverse();
    Ok(proof)
}

/// Checks an audit path (RFC 9162 §2.1.3.2): does `leaf` at `index` lead to `root` for a tree
/// of `size` leaves?
pub fn verify_inclusion(
    leaf: &Hash32,
    index: u64,
    size: u64,
    path: &[Hash32],
    root: &Hash32,
) -> Result<()> {
    let fail = |why: &str| Err(AuditError::Proof(format!("inclusion proof: {why}")));
    if index >= size {
        return fail("index is not below the tree size");
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in path {
        if snode == 0 {
            return fail("path is longer than the tree is deep");
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
        return fail("path is shorter than the tree is deep");
    }
    if r != *root {
        return fail("path leads to another root");
    }
    Ok(())
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2): is the tree of `old` leaves with
/// `old_root` a prefix of the tree of `new` leaves with `new_root`?
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<()> {
    let fail = |why: &str| Err(AuditError::Proof(format!("consistency proof: {why}")));
    if old > new {
        return fail("old size is larger than new size");
    }
    if old == 0 {
        return match proof.is_empty() {
            true => Ok(()),
            false => fail("a proof from the empty tree must be empty"),
        };
    }
    if old == new {
        return match (proof.is_empty(), old_root == new_root) {
            (true, true) => Ok(()),
            (false, _) => fail("a proof between equal sizes must be empty"),
            (true, false) => fail("equal sizes with different roots"),
        };
    }
    let Some(&first) = proof.first() else {
        return fail("empty proof");
    };
    let mut rest = proof;
    let seed = if old.is_power_of_two() {
        *old_root
    } else {
        rest = &proof[1..];
        first
    };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if snode == 0 {
            return fail("proof is too long");
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
        return fail("proof is too short");
    }
    if fr != *old_root {
        return fail("proof does not lead to the old root");
    }
    if sr != *new_root {
        return fail("proof does not lead to the new root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MTH straight from the RFC's recursive definition.
    fn mth(leaves: &[Hash32]) -> Hash32 {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn rfc6962_reference_roots() {
        // The eight test leaves of certificate-transparency-go's merkle tests and their roots.
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
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
        let mut f = Frontier::new();
        assert_eq!(
            f.root().to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for (d, want) in data.iter().zip(roots) {
            f.push(leaf_hash(d));
            assert_eq!(f.root().to_string(), want);
        }
    }

    #[test]
    fn frontier_matches_recursive_definition() {
        let l = leaves(70);
        let mut f = Frontier::new();
        for (i, h) in l.iter().enumerate() {
            f.push(*h);
            assert_eq!(f.root(), mth(&l[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn all_inclusion_proofs_of_small_trees_verify_and_flips_fail() {
        let l = leaves(33);
        for n in 1..=l.len() as u64 {
            let root = mth(&l[..n as usize]);
            for i in 0..n {
                let path = inclusion_proof(&mut &l[..], i, n).unwrap();
                verify_inclusion(&l[i as usize], i, n, &path, &root).unwrap();
                for j in 0..path.len() {
                    let mut bad = path.clone();
                    bad[j].0[0] ^= 1;
                    assert!(verify_inclusion(&l[i as usize], i, n, &bad, &root).is_err());
                }
                let short = &path[..path.len().saturating_sub(1)];
                assert!(
                    path.is_empty()
                        || verify_inclusion(&l[i as usize], i, n, short, &root).is_err()
                );
            }
        }
    }

    #[test]
    fn all_consistency_proofs_of_small_trees_verify() {
        let l = leaves(33);
        for n in 1..=l.len() as u64 {
            let new_root = mth(&l[..n as usize]);
            for m in 0..=n {
                let old_root = mth(&l[..m as usize]);
                let p = consistency_proof(&mut &l[..], m, n).unwrap();
                verify_consistency(m, n, &old_root, &new_root, &p).unwrap();
                for j in 0..p.len() {
                    let mut bad = p.clone();
                    bad[j].0[5] ^= 0x80;
                    assert!(verify_consistency(m, n, &old_root, &new_root, &bad).is_err());
                }
                if m > 0 && m < n {
                    let wrong = mth(&leaves(m as usize + 1)[1..]);
                    assert!(verify_consistency(m, n, &wrong, &new_root, &p).is_err());
                }
            }
        }
    }

    proptest! {
        #[test]
        fn proofs_between_random_sizes(n in 1u64..3000, a in any::<u64>(), b in any::<u64>()) {
            let l = leaves(n as usize);
            let (m, i) = (a % (n + 1), b % n);
            let new_root = mth(&l);
            let old_root = mth(&l[..m as usize]);
            let p = consistency_proof(&mut &l[..], m, n).unwrap();
            prop_assert!(verify_consistency(m, n, &old_root, &new_root, &p).is_ok());
            let path = inclusion_proof(&mut &l[..], i, n).unwrap();
            prop_assert!(verify_inclusion(&l[i as usize], i, n, &path, &new_root).is_ok());
            prop_assert!(verify_inclusion(&l[i as usize], (i + 1) % n, n, &path, &new_root).is_err() || n == 1);
        }
    }
}
