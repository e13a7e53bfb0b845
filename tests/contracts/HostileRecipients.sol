// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @title Hostile recipients for the relayer's delivery tests (tests only, never deployed by
///        the devnet). Each one is what an attacker can deploy and send a message to.

/// @notice Emits events with the Inbox's signatures from inside `handle`: they land in the
///         delivery transaction's receipt next to the inbox's own events.
contract EventForger {
    event Delivered(bytes32 indexed id, uint32 indexed origin, uint32 nonce);
    event AlreadyDelivered(bytes32 indexed id);
    event HandleFailed(bytes32 indexed id, bytes reason);

    bytes32[] public targets;
    uint256 public handled;

    /// @notice The ids to forge events about (someone else's message, ids nobody knows).
    function setTargets(bytes32[] calldata ids) external {
        targets = ids;
    }

    function handle(uint32 origin, bytes32, bytes calldata) external {
        for (uint256 i; i < targets.length; ++i) {
            emit Delivered(targets[i], origin, 0);
            emit AlreadyDelivered(targets[i]);
            emit HandleFailed(targets[i], "");
        }
        ++handled;
    }
}

/// @notice Behaves in the dry run and burns its whole stipend in the real transaction: the
///         dry run of a relayer that estimates without fee fields runs at gas price 0.
contract GasPriceBomb {
    uint256 public handled;

    function handle(uint32, bytes32, bytes calldata) external {
        if (tx.gasprice > 0) {
            while (true) {}
        }
        ++handled;
    }
}
