// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @notice The tree already holds MerkleLib.MAX_LEAVES leaves.
error MerkleTreeFull();


/// @title MerkleLib: the outbox accumulator (DESIGN.md, "Outbox accumulator")
/// @notice A depth-32 incremental Merkle tree of message ids, the Ethereum deposit-contract /
///         Hyperlane shape: zero[0] = 0, zero[i+1] = keccak256(zero[i] ‖ zero[i]), inner node
///         keccak256(left ‖ right), root over the first `count` leaves with zero subtrees to
///         the right, no length mix-in. light_clients/merkle.py is the reference.
/// @dev The fixed depth is what defeats second-preimage proofs (docs/threats.md T12): leaves
///      and inner nodes hash alike, so a proof of any other length is never accepted - here the
///      branch is a `bytes32[32]`, so the ABI itself enforces the length, and a multiproof
///      (`multiRoot`) always walks all 32 levels.
///
///      Storage: a `Tree` is exactly 33 words, `branch[0..31]` then `count`. The Outbox puts it
///      first so that these are slots 0..32, which attesters read with eth_getProof.
library MerkleLib {
    uint256 internal constant TREE_DEPTH = 32;

    /// @dev The count must fit a u32 (the message nonce and the checkpoint index are u32).
    uint256 internal constant MAX_LEAVES = 2 ** TREE_DEPTH - 1;

    // Roots of the empty subtrees of height 0..31. Z_32, the empty-tree root, is the one root
    // an inbox must never accept (T1).
    bytes32 internal constant Z_0 = bytes32(0);
    bytes32 internal constant Z_1 = 0xad3228b676f7d3cd4284a5443f17f1962b36e491b30a40b2405849e597ba5fb5;
    bytes32 internal constant Z_2 = 0xb4c11951957c6f8f642c4af61cd6b24640fec6dc7fc607ee8206a99e92410d30;
    bytes32 internal constant Z_3 = 0x21ddb9a356815c3fac1026b6dec5df3124afbadb485c9ba5a3e3398a04b7ba85;
    bytes32 internal constant Z_4 = 0xe58769b32a1beaf1ea27375a44095a0d1fb664ce2dd358e7fcbfb78c26a19344;
    bytes32 internal constant Z_5 = 0x0eb01ebfc9ed27500cd4dfc979272d1f0913cc9f66540d7e8005811109e1cf2d;
    bytes32 internal constant Z_6 = 0x887c22bd8750d34016ac3c66b5ff102dacdd73f6b014e710b51e8022af9a1968;
    bytes32 internal constant Z_7 = 0xffd70157e48063fc33c97a050f7f640233bf646cc98d9524c6b92bcf3ab56f83;
    bytes32 internal constant Z_8 = 0x9867cc5f7f196b93bae1e27e6320742445d290f2263827498b54fec539f756af;
    bytes32 internal constant Z_9 = 0xcefad4e508c098b9a7e1d8feb19955fb02ba9675585078710969d3440f5054e0;
    bytes32 internal constant Z_10 = 0xf9dc3e7fe016e050eff260334f18a5d4fe391d82092319f5964f2e2eb7c1c3a5;
    bytes32 internal constant Z_11 = 0xf8b13a49e282f609c317a833fb8d976d11517c571d1221a265d25af778ecf892;
    bytes32 internal constant Z_12 = 0x3490c6ceeb450aecdc82e28293031d10c7d73bf85e57bf041a97360aa2c5d99c;
    bytes32 internal constant Z_13 = 0xc1df82d9c4b87413eae2ef048f94b4d3554cea73d92b0f7af96e0271c691e2bb;
    bytes32 internal constant Z_14 = 0x5c67add7c6caf302256adedf7ab114da0acfe870d449a3a489f781d659e8becc;
    bytes32 internal constant Z_15 = 0xda7bce9f4e8618b6bd2f4132ce798cdc7a60e7e1460a7299e3c6342a579626d2;
    bytes32 internal constant Z_16 = 0x2733e50f526ec2fa19a22b31e8ed50f23cd1fdf94c9154ed3a7609a2f1ff981f;
    bytes32 internal constant Z_17 = 0xe1d3b5c807b281e4683cc6d6315cf95b9ade8641defcb32372f1c126e398ef7a;
    bytes32 internal constant Z_18 = 0x5a2dce0a8a7f68bb74560f8f71837c2c2ebbcbf7fffb42ae1896f13f7c7479a0;
    bytes32 internal constant Z_19 = 0xb46a28b6f55540f89444f63de0378e3d121be09e06cc9ded1c20e65876d36aa0;
    bytes32 internal constant Z_20 = 0xc65e9645644786b620e2dd2ad648ddfcbf4a7e5b1a3a4ecfe7f64667a3f0b7e2;
    bytes32 internal constant Z_21 = 0xf4418588ed35a2458cffeb39b93d26f18d2ab13bdce6aee58e7b99359ec2dfd9;
    bytes32 internal constant Z_22 = 0x5a9c16dc00d6ef18b7933a6f8dc65ccb55667138776f7dea101070dc8796e377;
    bytes32 internal constant Z_23 = 0x4df84f40ae0c8229d0d6069e5c8f39a7c299677a09d367fc7b05e3bc380ee652;
    bytes32 internal constant Z_24 = 0xcdc72595f74c7b1043d0e1ffbab734648c838dfb0527d971b602bc216c9619ef;
    bytes32 internal constant Z_25 = 0x0abf5ac974a1ed57f4050aa510dd9c74f508277b39d7973bb2dfccc5eeb0618d;
    bytes32 internal constant Z_26 = 0xb8cd74046ff337f0a7bf2c8e03e10f642c1886798d71806ab1e888d9e5ee87d0;
    bytes32 internal constant Z_27 = 0x838c5655cb21c6cb83313b5a631175dff4963772cce9108188b34ac87c81c41e;
    bytes32 internal constant Z_28 = 0x662ee4dd2dd7b2bc707961b1e646c4047669dcb6584f0d8d770daf5d7e7deb2e;
    bytes32 internal constant Z_29 = 0x388ab20e2573d171a88108e79d820e98f26c0b84aa8b2f4aa4968dbb818ea322;
    bytes32 internal constant Z_30 = 0x93237c50ba75ee485f4c22adf2f741400bdf8d6a9cc7df7ecae576221665d735;
    bytes32 internal constant Z_31 = 0x8448818bb4ae4562849e949e17ac16e0be16688e156b5cf15e098c627c0056a9;

    /// @dev Root of the empty tree (zero[32]): never a valid checkpoint root.
    bytes32 internal constant EMPTY_ROOT = 0x27ae5ba08d7291c96c8cbddcc148bf48a6d68c7974b94356f53754ef6171d757;

    /// @dev Field order is the storage layout attesters prove: branch first, then count.
    struct Tree {
        bytes32[32] branch;
        uint256 count;
    }

    function zeroHashes() internal pure returns (bytes32[32] memory zeros) {
        zeros = [
            Z_0, Z_1, Z_2, Z_3, Z_4, Z_5, Z_6, Z_7, Z_8, Z_9, Z_10, Z_11, Z_12, Z_13, Z_14, Z_15,
            Z_16, Z_17, Z_18, Z_19, Z_20, Z_21, Z_22, Z_23, Z_24, Z_25, Z_26, Z_27, Z_28, Z_29,
            Z_30, Z_31
        ];
    }

    /// @notice Appends `leaf`; reverts with MerkleTreeFull past MAX_LEAVES leaves.
    /// @dev Deposit-contract insert: `branch[h]` keeps the last complete left subtree root at
    ///      height h, so one append writes one branch slot and the count (2 SSTOREs).
    ///      The walk is assembly because it runs on every `Outbox.dispatch`: `branch[h]` is
    ///      addressed as slot `tree.slot + h` directly (h < 32 holds by construction, so the
    ///      compiler's bounds check per level only cost gas) and each pair is hashed in the
    ///      scratch space. It always stops: after the increment `size` is in 1..2^32 - 1, so
    ///      one of its 32 low bits is set and the loop breaks at that height.
    function insert(Tree storage tree, bytes32 leaf) internal {
        uint256 size = tree.count;
        if (size >= MAX_LEAVES) revert MerkleTreeFull();
        unchecked {
            size += 1;
        }
        tree.count = size;
        assembly ("memory-safe") {
            let slot := tree.slot
            let node := leaf
            for { } 1 { } {
                if and(size, 1) {
                    sstore(slot, node)
                    break
                }
                mstore(0x00, sload(slot))
                mstore(0x20, node)
                node := keccak256(0x00, 0x40)
                size := shr(1, size)
                slot := add(slot, 1)
            }
        }
    }

    /// @notice The root over the first `count` leaves (EMPTY_ROOT when there are none).
    function root(Tree storage tree) internal view returns (bytes32 current) {
        uint256 index = tree.count;
        bytes32[32] memory zeros = zeroHashes();
        for (uint256 height; height < TREE_DEPTH; ) {
            if ((index >> height) & 1 == 1) {
                current = _hashPair(tree.branch[height], current);
            } else {
                current = _hashPair(current, zeros[height]);
            }
            unchecked {
                ++height;
            }
        }
    }

    /// @notice The root implied by a set of leaves and a multiproof of them (docs/design.md,
    ///         "Batch proof"; light_clients/multiproof.py is the reference and builds them).
    /// @param nodes Memory pointer to `n` pairs of words (leaf index, leaf), indices strictly
    ///        ascending and below `count` (the caller checks both). Overwritten: on return the
    ///        first pair is (0, root).
    /// @param proof The siblings the walk needs, in the order it needs them: level by level
    ///        from the leaves up, left to right within a level. A sibling that is itself
    ///        computed from the set, or whose subtree lies wholly at or past `count` (an empty
    ///        subtree of the checkpointed tree, whose root is the known zero hash), is not in
    ///        the proof.
    /// @param count Leaves in the checkpointed tree (checkpoint index + 1).
    /// @return computed The root the leaves and the proof imply.
    /// @return used How many proof hashes the walk consumed; the caller must require it to be
    ///         exactly `proof.length`: more means the proof ran out (the hashes read past its
    ///         end were not the proof's, and the root is meaningless), fewer that the proof was
    ///         built for another leaf set.
    /// @dev Per level, each node either meets its sibling as the next node of the set, or takes
    ///      it from the proof / the zero table; parents are written back in place (they stay
    ///      strictly ascending). After 32 levels exactly one node, index 0, is left. The walk
    ///      does not stop when the proof runs out (no bounds check in the hot loop): `used`
    ///      then exceeds `proof.length`, which the caller refuses.
    function multiRoot(uint256 nodes, uint256 n, bytes32[] calldata proof, uint256 count)
        internal
        pure
        returns (bytes32 computed, uint256 used)
    {
        bytes32[32] memory zeros = zeroHashes();
        assembly ("memory-safe") {
            let next := proof.offset
            for { let height := 0 } lt(height, 32) { height := add(height, 1) } {
                let out := nodes
                let last := add(nodes, shl(6, n))
                for { let at := nodes } lt(at, last) { } {
                    let index := mload(at)
                    let node := mload(add(at, 0x20))
                    switch and(index, 1)
                    case 0 {
                        // A left child: its sibling is the next node of the set, or supplied.
                        let after := add(at, 0x40)
                        switch and(lt(after, last), eq(mload(after), add(index, 1)))
                        case 1 {
                            mstore(0x20, mload(add(after, 0x20)))
                            at := add(after, 0x40)
                        }
                        default {
                            switch lt(shl(height, add(index, 1)), count)
                            case 1 {
                                mstore(0x20, calldataload(next))
                                next := add(next, 0x20)
                            }
                            default { mstore(0x20, mload(add(zeros, shl(5, height)))) }
                            at := after
                        }
                        mstore(0x00, node)
                    }
                    default {
                        // A right child whose left sibling is not in the set: always supplied
                        // (it lies before this node, so below `count`).
                        mstore(0x00, calldataload(next))
                        mstore(0x20, node)
                        next := add(next, 0x20)
                        at := add(at, 0x40)
                    }
                    mstore(out, shr(1, index))
                    mstore(add(out, 0x20), keccak256(0x00, 0x40))
                    out := add(out, 0x40)
                }
                n := shr(6, sub(out, nodes))
            }
            computed := mload(add(nodes, 0x20))
            used := shr(5, sub(next, proof.offset))
        }
    }

    function _hashPair(bytes32 left, bytes32 right) private pure returns (bytes32 parent) {
        assembly ("memory-safe") {
            mstore(0x00, left)
            mstore(0x20, right)
            parent := keccak256(0x00, 0x40)
        }
    }
}
