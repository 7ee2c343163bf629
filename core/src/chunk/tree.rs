//! The chunk tree: a binary Merkle tree over the chunk index entries.

use crate::digest::{Blake3Hash, ChunkId};

/// Domain separation byte of a leaf.
const LEAF_TAG: u8 = 0x00;
/// Domain separation byte of an inner node.
const NODE_TAG: u8 = 0x01;
/// Domain separation byte of the root of a tree with no leaves.
const EMPTY_TAG: u8 = 0x02;

/// The chunk tree, computed as the entries stream past in artifact order, in O(log n) memory.
///
/// - leaf = BLAKE3(`0x00` ‖ id ‖ len as u32 LE)
/// - node = BLAKE3(`0x01` ‖ left ‖ right)
/// - Level by level from the leaves, nodes are paired from the left; an odd node at the end of
///   a level is promoted unchanged to the next level. The single node left is the root: with
///   one chunk the root is its leaf.
/// - The root of an empty artifact (no chunks) is BLAKE3(`0x02`).
///
/// The builder keeps one perfect subtree per set bit of the leaf count (a binary counter);
/// folding them from the right gives the same root as the level-by-level rule.
#[derive(Debug, Clone, Default)]
pub struct ChunkTree {
    /// Perfect subtrees, left to right, strictly decreasing in height.
    stack: Vec<(u32, Blake3Hash)>,
    leaves: u64,
}

impl ChunkTree {
    /// A tree with no leaves yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the next chunk's leaf.
    pub fn push(&mut self, id: &ChunkId, len: u32) {
        let mut hash = Self::leaf(id, len);
        let mut height = 0;
        while let Some(&(top_height, top)) = self.stack.last()
            && top_height == height
        {
            self.stack.pop();
            hash = Self::node(&top, &hash);
            height += 1;
        }
        self.stack.push((height, hash));
        self.leaves += 1;
    }

    /// The number of leaves pushed so far.
    pub fn leaves(&self) -> u64 {
        self.leaves
    }

    /// The root over the leaves pushed so far.
    pub fn root(&self) -> Blake3Hash {
        match self.stack.split_last() {
            None => Self::empty_root(),
            Some((&(_, last), rest)) => rest
                .iter()
                .rev()
                .fold(last, |right, (_, left)| Self::node(left, &right)),
        }
    }

    /// The leaf of a chunk: BLAKE3(`0x00` ‖ id ‖ len as u32 LE).
    pub fn leaf(id: &ChunkId, len: u32) -> Blake3Hash {
        let mut input = [0u8; 1 + 32 + 4];
        input[0] = LEAF_TAG;
        input[1..33].copy_from_slice(id.as_bytes());
        input[33..].copy_from_slice(&len.to_le_bytes());
        Blake3Hash::of(&input)
    }

    /// An inner node: BLAKE3(`0x01` ‖ left ‖ right).
    pub fn node(left: &Blake3Hash, right: &Blake3Hash) -> Blake3Hash {
        let mut input = [0u8; 1 + 32 + 32];
        input[0] = NODE_TAG;
        input[1..33].copy_from_slice(left.as_bytes());
        input[33..].copy_from_slice(right.as_bytes());
        Blake3Hash::of(&input)
    }

    /// The root of a tree with no leaves: BLAKE3(`0x02`).
    pub fn empty_root() -> Blake3Hash {
        Blake3Hash::of(&[EMPTY_TAG])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The rule as written: pair level by level, promote an odd last node.
    fn naive_root(leaves: &[(ChunkId, u32)]) -> Blake3Hash {
        let mut level: Vec<Blake3Hash> = leaves
            .iter()
            .map(|(id, len)| ChunkTree::leaf(id, *len))
            .collect();
        if level.is_empty() {
            return Blake3Hash(*blake3::hash(&[2]).as_bytes());
        }
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => ChunkTree::node(left, right),
                    [odd] => *odd,
                    _ => unreachable!(),
                })
                .collect();
        }
        level[0]
    }

    fn tree_of(leaves: &[(ChunkId, u32)]) -> ChunkTree {
        let mut tree = ChunkTree::new();
        for (id, len) in leaves {
            tree.push(id, *len);
        }
        tree
    }

    fn leaves(n: usize) -> Vec<(ChunkId, u32)> {
        (0..n)
            .map(|i| (ChunkId::of(&i.to_le_bytes()), 1000 + i as u32))
            .collect()
    }

    #[test]
    fn small_shapes_by_hand() {
        let l = leaves(5);
        let h: Vec<Blake3Hash> = l
            .iter()
            .map(|(id, len)| ChunkTree::leaf(id, *len))
            .collect();
        let n = ChunkTree::node;
        assert_eq!(
            tree_of(&[]).root(),
            Blake3Hash(*blake3::hash(&[0x02]).as_bytes())
        );
        assert_eq!(tree_of(&l[..1]).root(), h[0]);
        assert_eq!(tree_of(&l[..2]).root(), n(&h[0], &h[1]));
        assert_eq!(tree_of(&l[..3]).root(), n(&n(&h[0], &h[1]), &h[2]));
        assert_eq!(
            tree_of(&l[..4]).root(),
            n(&n(&h[0], &h[1]), &n(&h[2], &h[3]))
        );
        assert_eq!(
            tree_of(&l[..5]).root(),
            n(&n(&n(&h[0], &h[1]), &n(&h[2], &h[3])), &h[4])
        );
    }

    #[test]
    fn empty_root_is_the_documented_value() {
        assert_eq!(
            ChunkTree::empty_root().to_hex(),
            "ab13bedf42e84bae0f7c62c7dd6a8ada571e8829bed6ea558217f0361b5e25d0"
        );
    }

    #[test]
    fn leaf_and_node_encoding() {
        let id = ChunkId([0xab; 32]);
        let mut leaf_input = vec![0x00];
        leaf_input.extend_from_slice(&[0xab; 32]);
        leaf_input.extend_from_slice(&[0x01, 0x02, 0x03, 0x04]);
        assert_eq!(
            ChunkTree::leaf(&id, 0x0403_0201).0,
            *blake3::hash(&leaf_input).as_bytes()
        );
        let (a, b) = (Blake3Hash([1; 32]), Blake3Hash([2; 32]));
        let mut node_input = vec![0x01];
        node_input.extend_from_slice(&[1; 32]);
        node_input.extend_from_slice(&[2; 32]);
        assert_eq!(
            ChunkTree::node(&a, &b).0,
            *blake3::hash(&node_input).as_bytes()
        );
        assert_ne!(
            ChunkTree::node(&a, &b),
            ChunkTree::node(&b, &a),
            "order matters"
        );
        assert_ne!(
            ChunkTree::leaf(&id, 1),
            ChunkTree::leaf(&id, 2),
            "the length is bound"
        );
    }

    #[test]
    fn every_count_up_to_70_matches_the_naive_rule() {
        for n in 0..70 {
            let l = leaves(n);
            let tree = tree_of(&l);
            assert_eq!(tree.leaves(), n as u64);
            assert_eq!(tree.root(), naive_root(&l), "n = {n}");
            assert!(tree.stack.len() <= 7, "O(log n) memory");
        }
    }

    proptest! {
        #[test]
        fn streaming_root_matches_the_naive_rule(
            entries in proptest::collection::vec((any::<[u8; 32]>(), any::<u32>()), 0..300),
        ) {
            let l: Vec<(ChunkId, u32)> =
                entries.into_iter().map(|(id, len)| (ChunkId(id), len)).collect();
            prop_assert_eq!(tree_of(&l).root(), naive_root(&l));
        }

        #[test]
        fn any_changed_entry_changes_the_root(
            n in 1usize..40,
            at in any::<prop::sample::Index>(),
            by_length in any::<bool>(),
        ) {
            let l = leaves(n);
            let mut tampered = l.clone();
            let i = at.index(n);
            if by_length {
                tampered[i].1 += 1;
            } else {
                tampered[i].0 .0[0] ^= 1;
            }
            prop_assert_ne!(tree_of(&l).root(), tree_of(&tampered).root());
        }
    }
}
