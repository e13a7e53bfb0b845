// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

// BASELINE for benchmarks/bench_delivery_gas.py: this file as it was at commit c5d2dfb
// (Inbox v1: a delivered[id] slot and a 32-hash branch per message). Not deployed anywhere.

/// @title What an Inbox calls to deliver a message
/// @notice Implementations MUST check `msg.sender` is the Inbox they trust, and SHOULD check
///         `origin`/`sender` against the peers they expect: the Inbox proves that `sender` on
///         `origin` dispatched `body` to this contract, nothing more.
interface IMessageRecipient {
    /// @param origin The origin domain.
    /// @param sender The sender on the origin (an EVM address left-padded to 32 bytes).
    /// @param body The message body, as dispatched.
    function handle(uint32 origin, bytes32 sender, bytes calldata body) external;
}
