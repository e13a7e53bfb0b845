// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {IMessageRecipient} from "./IMessageRecipient.sol";

/// @title Ping: the demo recipient
/// @notice Counts and logs every message its Inbox delivers. Anyone may send it messages;
///         only its Inbox may deliver them.
contract Ping is IMessageRecipient {
    address public immutable inbox;

    /// @notice Messages received so far.
    uint256 public count;

    event Pinged(uint32 indexed origin, bytes32 indexed sender, bytes body);

    error NotInbox(address caller);

    constructor(address inbox_) {
        inbox = inbox_;
    }

    function handle(uint32 origin, bytes32 sender, bytes calldata body) external {
        if (msg.sender != inbox) revert NotInbox(msg.sender);
        unchecked {
            ++count;
        }
        emit Pinged(origin, sender, body);
    }
}
