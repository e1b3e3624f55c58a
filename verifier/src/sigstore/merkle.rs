//! RFC 9162 §2.1 Merkle tree hashes and §2.1.3.2 inclusion proofs, as
//! Rekor (v1 and v2) and CT logs use them.

use super::{ProofError, sha256};

/// A tree hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0], entry])
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1], left, right])
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves whose
/// root is `root`, with the audit path `proof` (leaf to root).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::new(format!(
            "inclusion proof: index {index} is not below the tree size {size}"
        )));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::new(
                "inclusion proof: longer than the tree is deep",
            ));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::new(
            "inclusion proof: shorter than the tree is deep",
        ));
    }
    if r != *root {
        return Err(ProofError::new(
            "inclusion proof: the computed root is not the proof's root hash",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of `n` leaves built the RFC 9162 way (largest power of two
    /// on the left), for proofs computed independently of the verifier.
    fn root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2;
                let k = if k == n { n / 2 } else { k };
                node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
            }
        }
    }

    fn path(leaves: &[Hash], m: usize) -> Vec<Hash> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let n = leaves.len();
        let k = n.next_power_of_two() / 2;
        let k = if k == n { n / 2 } else { k };
        if m < k {
            let mut p = path(&leaves[..k], m);
            p.push(root(&leaves[k..]));
            p
        } else {
            let mut p = path(&leaves[k..], m - k);
            p.push(root(&leaves[..k]));
            p
        }
    }

    #[test]
    fn every_leaf_of_small_trees() {
        for n in 1..=33usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let r = root(&leaves);
            for m in 0..n {
                let p = path(&leaves, m);
                verify_inclusion(m as u64, n as u64, &leaves[m], &p, &r).unwrap();
                // Another index, another leaf, a flipped hash, a short or
                // long path: refused.
                if n > 1 {
                    let other = (m + 1) % n;
                    assert!(verify_inclusion(other as u64, n as u64, &leaves[m], &p, &r).is_err());
                    assert!(verify_inclusion(m as u64, n as u64, &leaves[other], &p, &r).is_err());
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(verify_inclusion(m as u64, n as u64, &leaves[m], &bad, &r).is_err());
                    assert!(
                        verify_inclusion(m as u64, n as u64, &leaves[m], &p[..p.len() - 1], &r)
                            .is_err()
                    );
                }
                let mut long = p.clone();
                long.push(r);
                assert!(verify_inclusion(m as u64, n as u64, &leaves[m], &long, &r).is_err());
            }
            assert!(verify_inclusion(n as u64, n as u64, &leaves[0], &[], &r).is_err());
        }
    }
}
