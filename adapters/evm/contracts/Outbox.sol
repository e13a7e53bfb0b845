// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {Governed} from "./Governed.sol";
import {MerkleLib} from "./MerkleLib.sol";

/// @dev The one Paymaster function the Outbox calls (adapters/evm/contracts/Paymaster.sol).
interface IPaymaster {
    function pay(bytes32 id, uint32 destination, uint256 gasAmount, address refundTo)
        external
        payable;
}

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
///      until it hands the Outbox over in two steps, its announced changes (`Governed`), and
///      the Paymaster the owner names (`setPaymaster`, its own namespaced slot) for
///      `dispatchAndPay`. The owner changes nothing in the message path: `dispatch` never
///      reads the Paymaster. Naming a Paymaster redirects every paying user's ether, so it is
///      announced and delayed like every change that adds trust (`Governed`); switching paying
///      off (zero) only takes something away and applies at once.
///      tests/test_contracts.py checks these slots against eth_getStorageAt and the compiler's
///      storage layout (recorded in the artifact).
contract Outbox is Governed {
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
    ///         `id == keccak256(message)` and the nonce is `message[1:5]` (not repeated as a
    ///         field of its own: every byte of log data costs 8 gas on every dispatch, and a
    ///         copy could only disagree with the message). adapters/evm/chain.py's
    ///         `dispatch_message` is the one parser of this event's data.
    event Dispatch(bytes32 indexed id, uint32 indexed destination, bytes message);

    /// @dev keccak256("Dispatch(bytes32,uint32,bytes)"), the topic `_dispatch` logs with.
    bytes32 private constant DISPATCH_TOPIC =
        0x761d74082879ef6e28506fcae12fd8ff27a0d72926285cc2847942df5fe99f8a;

    /// @dev The message header: version (1), nonce (4), origin (4), sender (32),
    ///      destination (4), recipient (32) - light_clients/message.py's HEADER_SIZE.
    uint256 private constant HEADER_SIZE = 77;

    error BodyTooLarge(uint256 size, uint256 maximum);
    error DestinationIsLocal(uint32 destination);
    error ZeroRecipient();
    error EmptyOutbox();
    error NoPaymaster();

    /// @notice The owner named `paymaster` as where `dispatchAndPay` pays.
    event PaymasterSet(address indexed paymaster);
    /// @notice The owner announced `paymaster`, enactable by `setPaymaster` from `notBefore`.
    event PaymasterAnnounced(address indexed paymaster, uint256 notBefore);

    /// @dev Key of a pending Paymaster change (`pendingChange`).
    bytes32 public constant PAYMASTER_CHANGE = keccak256("passerelle.outbox.setPaymaster");

    /// @dev keccak256(abi.encode(uint256(keccak256("passerelle.outbox.paymaster")) - 1)) & ~0xff:
    ///      ERC-7201 style, far from slots 0..32 (see the contract comment).
    bytes32 private constant PAYMASTER_SLOT =
        0x5bdc87dda614d9c699fa032a57e2fdf3e5b73d2886b7621ab97676b4ee3bad00;

    constructor(uint32 localDomain_) Governed(msg.sender) {
        localDomain = localDomain_;
    }

    /// @notice Announces `paymaster_` as the Paymaster `setPaymaster` may name once
    ///         `changeDelay` has passed (users paying here see where their ether will go).
    function announcePaymaster(address paymaster_) external onlyOwner {
        uint256 notBefore = _announce(PAYMASTER_CHANGE, bytes32(uint256(uint160(paymaster_))));
        emit PaymasterAnnounced(paymaster_, notBefore);
    }

    /// @notice Names the Paymaster `dispatchAndPay` pays: the one announced, once due (with a
    ///         zero `changeDelay`, any). Zero switches paying here off at once; `dispatch` and
    ///         payments made to the Paymaster directly are unaffected.
    function setPaymaster(address paymaster_) external onlyOwner {
        if (paymaster_ != address(0)) {
            _enact(PAYMASTER_CHANGE, bytes32(uint256(uint160(paymaster_))));
        }
        assembly ("memory-safe") {
            sstore(PAYMASTER_SLOT, paymaster_)
        }
        emit PaymasterSet(paymaster_);
    }

    /// @notice The Paymaster `dispatchAndPay` pays (zero if none is named).
    function paymaster() public view returns (address paymaster_) {
        assembly ("memory-safe") {
            paymaster_ := sload(PAYMASTER_SLOT)
        }
    }

    /// @notice `dispatch`, and pay the Paymaster for `gasAmount` gas delivering it, in one
    ///         transaction: all of `msg.value` goes to `Paymaster.pay(id, destination,
    ///         gasAmount, refundTo)`, which keeps the quote and refunds the rest to `refundTo`
    ///         (a contract dispatching for a user - the TokenBridge - passes the user). Reverts
    ///         as a whole if the payment is refused (less than the quote, an unpriced
    ///         destination), so no message is dispatched unpaid by mistake.
    function dispatchAndPay(
        uint32 destination,
        bytes32 recipient,
        bytes calldata body,
        uint256 gasAmount,
        address refundTo
    ) external payable returns (bytes32 id) {
        address payee = paymaster();
        if (payee == address(0)) revert NoPaymaster();
        id = _dispatch(destination, recipient, body);
        IPaymaster(payee).pay{value: msg.value}(id, destination, gasAmount, refundTo);
    }

    /// @notice Sends `body` to `recipient` (32 bytes: an EVM address left-padded, or a
    ///         Substrate account) on domain `destination`. The sender is `msg.sender`.
    /// @return id keccak256 of the canonical message, its leaf and replay key.
    function dispatch(uint32 destination, bytes32 recipient, bytes calldata body)
        external
        returns (bytes32 id)
    {
        return _dispatch(destination, recipient, body);
    }

    /// @notice `dispatch` of each of `bodies` to the same `recipient` on `destination`, in
    ///         order (consecutive nonces), in one transaction: each message is exactly the one
    ///         `dispatch` would have made and gets its own `Dispatch` event. What it saves is
    ///         per transaction, not per message: the 21k intrinsic gas and the first (cold)
    ///         access to the count and the low branch slots are paid once for the batch.
    ///         All or nothing: one refused body reverts the whole batch.
    /// @return ids The messages' ids, in the order of `bodies`.
    function dispatchBatch(uint32 destination, bytes32 recipient, bytes[] calldata bodies)
        external
        returns (bytes32[] memory ids)
    {
        uint256 n = bodies.length;
        ids = new bytes32[](n);
        for (uint256 i; i < n; ) {
            ids[i] = _dispatch(destination, recipient, bodies[i]);
            unchecked {
                ++i;
            }
        }
    }

    /// @dev Builds the canonical message once, in memory laid out as the `Dispatch` event's
    ///      ABI data (offset word, length word, the message zero-padded to a word), hashes it
    ///      in place and logs that same memory: the body is copied from calldata exactly once
    ///      (abi.encodePacked and then `emit` copied it twice). The memory is scratch past the
    ///      free-memory pointer, which is not advanced: nothing reads the message after the
    ///      log, so a batch reuses the same bytes for every message instead of growing memory.
    function _dispatch(uint32 destination, bytes32 recipient, bytes calldata body)
        private
        returns (bytes32 id)
    {
        // A message to ourselves could only be delivered by an inbox on this same chain, which
        // refuses its own origin; refusing here keeps the lane free of undeliverable leaves.
        if (destination == localDomain) revert DestinationIsLocal(destination);
        if (recipient == bytes32(0)) revert ZeroRecipient();
        if (body.length > MAX_BODY_BYTES) revert BodyTooLarge(body.length, MAX_BODY_BYTES);
        // The nonce is the leaf index; insert() below reverts once the u32 range is used up,
        // so a nonce that gets committed always fits its 4 bytes.
        uint256 nonce = tree.count;
        uint256 here = localDomain;
        assembly ("memory-safe") {
            let data := mload(0x40)
            let message := add(data, 0x40)
            let size := add(HEADER_SIZE, body.length)
            mstore(data, 0x20)
            mstore(add(data, 0x20), size)
            // Bytes 0..8: version, nonce, origin, big-endian; the rest of this word is
            // overwritten by the next stores, each field in its place.
            mstore(message, or(shl(248, VERSION), or(shl(216, nonce), shl(184, here))))
            mstore(add(message, 9), caller()) // bytes 9..40: the sender, left-padded
            mstore(add(message, 41), shl(224, destination)) // bytes 41..44
            mstore(add(message, 45), recipient) // bytes 45..76
            calldatacopy(add(message, HEADER_SIZE), body.offset, body.length)
            // ABI data is zero-padded to a whole word; the scratch may hold an earlier
            // message's bytes there (a batch).
            mstore(add(message, size), 0)
            id := keccak256(message, size)
            // Masked: Solidity promises nothing about a uint32's high bits inside assembly
            // (only the ABI decoder cleans them, and a future internal caller may not pass
            // through it). A dirty topic would disagree with the message's destination and the
            // scan would refuse a genuine log for ever. 3 gas.
            log3(
                data,
                add(0x40, and(add(size, 31), not(31))),
                DISPATCH_TOPIC,
                id,
                and(destination, 0xffffffff)
            )
        }
        tree.insert(id);
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
