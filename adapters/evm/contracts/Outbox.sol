// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {MerkleLib} from "./MerkleLib.sol";
import {Owned} from "./Owned.sol";

/// @title Outbox: where a chain's cross-chain messages are born
/// @notice `dispatch` assigns the next nonce, builds the canonical message (DESIGN.md,
///         "Message"), appends its id to the accumulator and emits it. Attesters sign
///         checkpoints (origin, outbox, root, count - 1) of this contract; inboxes deliver
///         against them.
/// @dev STORAGE LAYOUT IS PART OF THE PROTOCOL. Attesters do not trust an RPC's `root()`: they
///      read slots 0..32 with eth_getProof against a finalized state root and recompute the
///      root off-chain. So:
///        slot 0..31  MerkleLib.Tree.branch[0..31]   (bytes32 each)
///        slot 32     MerkleLib.Tree.count           (uint256; the next nonce)
///      `tree` must stay the first and only state variable, and this contract must not
///      inherit from anything with storage in ordinary slots. Everything else is immutable
///      (in the code), or namespaced far from slots 0..32: the owner (`Owned`), the deployer
///      until it hands the Outbox over in two steps. The owner changes nothing in the message
///      path today; it is who will set delivery fees (issue #11, paid delivery).
///      tests/test_contracts.py checks these slots against eth_getStorageAt and the compiler's
///      storage layout (recorded in the artifact).
contract Outbox is Owned {
    using MerkleLib for MerkleLib.Tree;

    /// @dev Slots 0..32 - see the contract comment before adding any state.
    MerkleLib.Tree internal tree;

    /// @notice This chain's Passerelle domain (a u32 from config, not necessarily the chain id).
    uint32 public immutable localDomain;

    /// @notice Message format version written into every message.
    uint8 public constant VERSION = 1;

    /// @notice Largest body accepted: 64 KiB, as light_clients.message.MAX_BODY_BYTES. A larger
    ///         one would be dispatched but never delivered by any relayer or inbox.
    uint256 public constant MAX_BODY_BYTES = 64 * 1024;

    /// @notice A message was dispatched. `message` is the exact canonical encoding, so
    ///         `id == keccak256(message)` and the nonce is `message[1:5]`.
    event Dispatch(bytes32 indexed id, uint32 indexed destination, uint32 nonce, bytes message);

    error BodyTooLarge(uint256 size, uint256 maximum);
    error DestinationIsLocal(uint32 destination);
    error ZeroRecipient();
    error EmptyOutbox();

    constructor(uint32 localDomain_) Owned(msg.sender) {
        localDomain = localDomain_;
    }

    /// @notice Sends `body` to `recipient` (32 bytes: an EVM address left-padded, or a
    ///         Substrate account) on domain `destination`. The sender is `msg.sender`.
    /// @return id keccak256 of the canonical message, its leaf and replay key.
    function dispatch(uint32 destination, bytes32 recipient, bytes calldata body)
        external
        returns (bytes32 id)
    {
        // A message to ourselves could only be delivered by an inbox on this same chain, which
        // refuses its own origin; refusing here keeps the lane free of undeliverable leaves.
        if (destination == localDomain) revert DestinationIsLocal(destination);
        if (recipient == bytes32(0)) revert ZeroRecipient();
        if (body.length > MAX_BODY_BYTES) revert BodyTooLarge(body.length, MAX_BODY_BYTES);
        // The nonce is the leaf index; insert() below reverts once the u32 range is used up,
        // so this cast never truncates a nonce that gets committed.
        uint32 nonce = uint32(tree.count);
        bytes memory message = abi.encodePacked(
            VERSION,
            nonce,
            localDomain,
            bytes32(uint256(uint160(msg.sender))),
            destination,
            recipient,
            body
        );
        id = keccak256(message);
        tree.insert(id);
        emit Dispatch(id, destination, nonce, message);
    }

    /// @notice Current accumulator root (MerkleLib.EMPTY_ROOT before the first dispatch).
    function root() external view returns (bytes32) {
        return tree.root();
    }

    /// @notice Messages dispatched so far, which is also the next nonce.
    function count() external view returns (uint32) {
        return uint32(tree.count);
    }

    /// @notice The branch as stored (slots 0..31), for cross-checking storage proofs.
    function branch() external view returns (bytes32[32] memory) {
        return tree.branch;
    }

    /// @notice The checkpoint attesters would sign now: (root, count - 1). An empty outbox
    ///         has no checkpoint (its root is the empty-tree root), so this reverts.
    function latestCheckpoint() external view returns (bytes32 root_, uint32 index) {
        uint256 size = tree.count;
        if (size == 0) revert EmptyOutbox();
        return (tree.root(), uint32(size - 1));
    }
}
