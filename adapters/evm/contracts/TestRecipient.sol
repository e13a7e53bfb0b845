// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {IMessageRecipient} from "./IMessageRecipient.sol";

/// @title TestRecipient: a recipient that misbehaves on demand (tests only, never deployed
///        by the devnet)
/// @notice Exercises the Inbox's failure semantics: a reverting handle, one that burns all its
///         gas, one that returns a huge revert payload.
contract TestRecipient is IMessageRecipient {
    enum Mode {
        Accept,
        Revert,
        BurnGas,
        ReturnBomb
    }

    Mode public mode;
    uint256 public handled;
    bytes public lastBody;

    event Handled(uint32 origin, bytes32 sender, bytes body);

    error Refused(string why);

    function setMode(Mode mode_) external {
        mode = mode_;
    }

    function handle(uint32 origin, bytes32 sender, bytes calldata body) external {
        Mode current = mode;
        if (current == Mode.Revert) revert Refused("TestRecipient refuses");
        if (current == Mode.BurnGas) {
            // Spin until the stipend is gone.
            while (true) {}
        }
        if (current == Mode.ReturnBomb) {
            assembly {
                revert(0, 100000)
            }
        }
        ++handled;
        lastBody = body;
        emit Handled(origin, sender, body);
    }
}
