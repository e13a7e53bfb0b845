// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @title Recipients for the re-proof tests (tests/test_inbox_reproof.py; tests only, never
///        deployed by the devnet).

/// @notice A recipient that catches its own inner failure, as try/catch or an ignored
///         low-level call does in third-party contracts: on too little gas its `handle` still
///         returns success while the effect (`credit`, eight fresh storage slots) was lost.
///         The Inbox must never let a caller hand a parked message to it with less gas than
///         `process` gives. While `refusing`, `handle` reverts with a hostile Error(string)
///         (NUL, newline, ESC): what a recipient can put into the operator's terminal.
contract Swallower {
    uint256 public handled;
    uint256 public credited;
    bool public refusing = true;
    uint256[8] private slots;

    function setRefusing(bool refusing_) external {
        refusing = refusing_;
    }

    /// @notice The effect that needs gas: only this contract may call it (from `handle`).
    function credit() external {
        require(msg.sender == address(this), "self only");
        for (uint256 i; i < 8; ++i) {
            slots[i] = block.number + 1;
        }
        ++credited;
    }

    function handle(uint32, bytes32, bytes calldata) external {
        if (refusing) revert("no\x00\nFORGED LINE\x1b[2J");
        ++handled;
        // The swallowed failure: an out-of-gas `credit` leaves `handle` successful.
        try this.credit() {} catch {}
    }
}
