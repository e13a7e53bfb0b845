// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

// BASELINE for benchmarks/bench_delivery_gas.py: this file as it was at commit c5d2dfb
// (Inbox v1: a delivered[id] slot and a 32-hash branch per message). Not deployed anywhere.

import {IMessageRecipient} from "./IMessageRecipient.sol";
import {MerkleLib} from "./MerkleLib.sol";

/// @notice An outbox state a committee signs (DESIGN.md, "Checkpoint attestation"): `root`
///         over the leaves 0..`index` of the Outbox `outbox` on domain `origin`.
struct Checkpoint {
    uint32 origin;
    bytes32 outbox;
    bytes32 root;
    uint32 index;
}

/// @title Inbox: delivers messages a committee attested on their origin
/// @notice One `process` call verifies ONE checkpoint attestation and then delivers a batch of
///         messages proven against it. For each message the inbox checks: version 1, origin ==
///         checkpoint origin, destination == this domain, nonce <= checkpoint index, and Merkle
///         inclusion of keccak256(message) at index `nonce` under the checkpoint root.
///
///         Delivery semantics (what relayers, recipients and operators can rely on):
///         - All or nothing for proofs: if the checkpoint, any signature, or any message's
///           checks or proof fail, the whole call reverts with a typed error naming it.
///         - Replays are no-ops, not errors: a proven message whose id is already in
///           `delivered` is skipped with `AlreadyDelivered(id)`, so two relayers racing with
///           overlapping batches both succeed and nothing is delivered twice (T16).
///         - `delivered[id]` becomes true when the inbox accepts the message, before the
///           recipient is called (checks-effects-interactions: a re-entering recipient sees
///           it delivered). It means "accepted, never to be processed again", not "handled".
///         - The recipient's `handle` runs with exactly HANDLE_GAS gas (the call reverts with
///           InsufficientGas if less than that could be forwarded, so a relayer cannot starve
///           a recipient into failing). If `handle` reverts, the message is recorded as failed
///           (`failedMessage[id] = id`, event `HandleFailed(id, reason)`, reason = the first
///           MAX_REASON_BYTES of the revert data) and the batch goes on: a broken recipient
///           never blocks the lane. The same is recorded, without calling, when the recipient
///           is not an EVM address, has no code, is this inbox or is marked protected by the
///           owner (T20); `reason` is then the ABI encoding of the matching error.
///         - Anyone can `retry(message)` a failed message: it re-runs `handle` with all the gas
///           the caller forwards. On success the failure record is cleared and `Delivered` is
///           emitted; on failure `retry` reverts with the recipient's revert data and the
///           record stays.
///         - `Delivered(id, origin, nonce)` is emitted exactly once per message: when `handle`
///           succeeded, in `process` or in a later `retry`.
///         - On a chain whose id differs from the deployment's (a fork), `process` and `retry`
///           refuse everything with ForkedChain (T8).
///         The committee, trusted outboxes and protected addresses change only through the
///         owner; no message can reach them (the inbox never calls itself or a protected
///         address).
contract Inbox {
    uint8 public constant VERSION = 1;

    /// @notice Largest body accepted, as Outbox.MAX_BODY_BYTES and the Python reference.
    uint256 public constant MAX_BODY_BYTES = 64 * 1024;

    /// @notice Gas each recipient's `handle` gets in `process`. Bounded so one recipient cannot
    ///         eat a batch's gas; generous enough for a token mint or unlock (~60k).
    uint256 public constant HANDLE_GAS = 500_000;

    /// @notice Revert data kept in HandleFailed: enough for any error message, and a recipient
    ///         cannot make the inbox pay to copy a huge one ("return bomb").
    uint256 public constant MAX_REASON_BYTES = 256;

    /// @dev version (1) nonce (4) origin (4) sender (32) destination (4) recipient (32).
    uint256 internal constant HEADER_SIZE = 77;

    /// @dev EIP-150 forwards at most 63/64 of what is left, so HANDLE_GAS needs 64/63 of it at
    ///      the CALL, plus the call's own cost (cold account access, memory) and some slack.
    uint256 internal constant HANDLE_GAS_NEEDED = (HANDLE_GAS * 64) / 63 + 10_000;

    /// @dev secp256k1 n / 2: a larger s is the malleated twin of a low-s signature (EIP-2, T4).
    uint256 internal constant HALF_N =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// @dev Protocol tag domain-separating checkpoint digests from anything else signed (T8).
    bytes24 internal constant CHECKPOINT_TAG = "PASSERELLE/v1/checkpoint";

    /// @notice This chain's Passerelle domain; only messages addressed to it are delivered (T8).
    uint32 public immutable localDomain;

    /// @notice The chain id this inbox was deployed on. After a chain split the copy of the
    ///         inbox on the fork sees another `block.chainid` and refuses everything, so
    ///         attested messages are not replayed there (T8, the ETHW Omni Bridge incident).
    uint256 public immutable deployedChainId;

    /// @notice The only address that can change the committee, origins and protected set.
    address public owner;
    /// @notice Incremented by every setCommittee; 0 means no committee yet (nothing verifies).
    uint32 public epoch;
    /// @notice Signatures needed: 0 < threshold <= committee size once a committee is set.
    uint8 public threshold;

    address[] internal committee;
    /// @dev A member of the current committee has memberEpoch == epoch. Rotating the committee
    ///      bumps the epoch, which retires every old member without clearing storage.
    mapping(address => uint32) internal memberEpoch;

    /// @notice The trusted Outbox (32-byte id) per origin domain; zero = unknown origin (T14).
    mapping(uint32 => bytes32) public outboxOf;
    /// @notice Addresses a message can never call (the inbox itself is always protected, T20).
    mapping(address => bool) public isProtected;
    /// @notice Message ids accepted by this inbox (T16); see the contract comment.
    mapping(bytes32 => bool) public delivered;
    /// @notice keccak256(message) (that is, the id) for messages whose `handle` failed and
    ///         can be retried; zero once retried successfully or if it never failed.
    mapping(bytes32 => bytes32) public failedMessage;

    event Delivered(bytes32 indexed id, uint32 indexed origin, uint32 nonce);
    event AlreadyDelivered(bytes32 indexed id);
    event HandleFailed(bytes32 indexed id, bytes reason);
    event CommitteeSet(uint32 indexed epoch, address[] validators, uint8 threshold);
    event OriginSet(uint32 indexed origin, bytes32 outbox);
    event ProtectedSet(address indexed account, bool isProtected);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    // Administration.
    error NotOwner(address caller);
    error ZeroOwner();
    error EmptyCommittee();
    error InvalidThreshold(uint256 threshold, uint256 size);
    error ZeroValidator(uint256 position);
    error ValidatorsNotAscending(uint256 position);
    error OriginIsLocal(uint32 origin);
    // Checkpoint and attestation.
    error EmptyBatch();
    error ForkedChain(uint256 expected, uint256 actual);
    error LengthMismatch(uint256 messages, uint256 branches);
    error UnknownOrigin(uint32 origin);
    error WrongOutbox(uint32 origin, bytes32 outbox);
    error InvalidRoot(bytes32 root);
    error NoCommittee();
    error MalformedSignatures(uint256 length);
    error BelowThreshold(uint256 signatures, uint256 threshold);
    error InvalidSignature(uint256 position);
    error UnknownSigner(uint256 position, address signer);
    error DuplicateSigner(address signer);
    error SignersNotAscending(uint256 position);
    // Messages (position = index in the batch).
    error MalformedMessage(uint256 position, uint256 length);
    error UnsupportedVersion(uint256 position, uint8 version);
    error WrongOrigin(uint256 position, uint32 origin);
    error WrongDestination(uint256 position, uint32 destination);
    error NonceBeyondCheckpoint(uint256 position, uint32 nonce, uint32 index);
    error InvalidProof(uint256 position, bytes32 id);
    error InsufficientGas();
    // Recipients (also the `reason` of HandleFailed when the inbox refuses to call).
    error RecipientNotAddress(bytes32 recipient);
    error RecipientProtected(address recipient);
    error RecipientNotContract(address recipient);
    error NotFailed(bytes32 id);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    constructor(uint32 localDomain_, address owner_) {
        if (owner_ == address(0)) revert ZeroOwner();
        localDomain = localDomain_;
        deployedChainId = block.chainid;
        owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
    }

    // ------------------------------------------------------------------ administration

    /// @notice Replaces the committee. `members` must be non-empty, non-zero and strictly
    ///         ascending (so distinct), at most 255 of them, and 0 < threshold <= n (T3, T5).
    ///         Whether the threshold is *safe* (T7) is the config linter's call, not this one.
    function setCommittee(address[] calldata members, uint8 threshold_) external onlyOwner {
        uint256 size = members.length;
        if (size == 0) revert EmptyCommittee();
        if (threshold_ == 0 || threshold_ > size) revert InvalidThreshold(threshold_, size);
        // A uint8 threshold cannot exceed 255, so neither may the set (keeps n/t comparable).
        if (size > type(uint8).max) revert InvalidThreshold(threshold_, size);
        uint32 next = epoch + 1;
        address previous;
        for (uint256 i; i < size; ++i) {
            address validator = members[i];
            if (validator == address(0)) revert ZeroValidator(i);
            if (validator <= previous) revert ValidatorsNotAscending(i);
            memberEpoch[validator] = next;
            previous = validator;
        }
        committee = members;
        epoch = next;
        threshold = threshold_;
        emit CommitteeSet(next, members, threshold_);
    }

    /// @notice Trusts `outbox` as the Outbox of domain `origin`; zero forgets the origin.
    function setOrigin(uint32 origin, bytes32 outbox) external onlyOwner {
        if (origin == localDomain) revert OriginIsLocal(origin);
        outboxOf[origin] = outbox;
        emit OriginSet(origin, outbox);
    }

    /// @notice Marks an address that relayed messages must never call (T20), e.g. a contract
    ///         whose `handle`-shaped function is privileged.
    function setProtected(address account, bool protected_) external onlyOwner {
        isProtected[account] = protected_;
        emit ProtectedSet(account, protected_);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroOwner();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // ------------------------------------------------------------------ views

    /// @notice The current committee, ascending.
    function validators() external view returns (address[] memory) {
        return committee;
    }

    function isValidator(address account) external view returns (bool) {
        uint32 current = epoch;
        return current != 0 && memberEpoch[account] == current;
    }

    /// @notice The EIP-191 digest the committee signs for `cp` (DESIGN.md):
    ///         keccak256("\x19Ethereum Signed Message:\n32" ‖ keccak256("PASSERELLE/v1/checkpoint"
    ///         ‖ u32 origin ‖ bytes32 outbox ‖ bytes32 root ‖ u32 index)).
    function checkpointDigest(Checkpoint calldata cp) public pure returns (bytes32) {
        bytes32 inner =
            keccak256(abi.encodePacked(CHECKPOINT_TAG, cp.origin, cp.outbox, cp.root, cp.index));
        return keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", inner));
    }

    // ------------------------------------------------------------------ delivery

    /// @notice Verifies the committee's attestation of `cp` once, then delivers each
    ///         `messages[i]` proven by `branches[i]` (32 siblings, leaf index = its nonce).
    /// @param signatures k signatures of 65 bytes r ‖ s ‖ v concatenated, k >= threshold, in
    ///        strictly ascending signer-address order.
    /// @dev See the contract comment for what reverts and what is recorded.
    function process(
        Checkpoint calldata cp,
        bytes calldata signatures,
        bytes[] calldata messages,
        bytes32[32][] calldata branches
    ) external {
        _checkNotForked();
        uint256 count = messages.length;
        if (count == 0) revert EmptyBatch();
        if (count != branches.length) revert LengthMismatch(count, branches.length);
        uint32 origin = cp.origin;
        bytes32 trusted = outboxOf[origin];
        if (trusted == bytes32(0)) revert UnknownOrigin(origin);
        if (cp.outbox != trusted) revert WrongOutbox(origin, cp.outbox);
        bytes32 root = cp.root;
        if (root == bytes32(0) || root == MerkleLib.EMPTY_ROOT) revert InvalidRoot(root);
        _verifyAttestation(checkpointDigest(cp), signatures);
        uint32 index = cp.index;
        for (uint256 i; i < count; ) {
            _deliver(i, messages[i], branches[i], origin, root, index);
            unchecked {
                ++i;
            }
        }
    }

    /// @notice Re-runs `handle` for a message recorded in `failedMessage`, forwarding all the
    ///         gas given. Reverts with the recipient's own revert data if it fails again.
    function retry(bytes calldata message) external {
        _checkNotForked();
        uint256 arena = _freeMemory();
        (bytes32 id, uint256 buffer) = _stage(message);
        // A record only exists for a message `process` proved, so it is well-formed.
        if (id == bytes32(0) || failedMessage[id] != id) revert NotFailed(id);
        (uint32 nonce, uint32 origin, bytes32 sender, , bytes32 recipient) = _header(message);
        (address target, bytes memory refusal) = _target(recipient);
        if (refusal.length != 0) {
            assembly ("memory-safe") {
                revert(add(refusal, 0x20), mload(refusal))
            }
        }
        delete failedMessage[id];
        if (!_callHandle(target, gasleft(), buffer, origin, sender, message.length)) {
            assembly ("memory-safe") {
                let size := returndatasize()
                let ptr := mload(0x40)
                returndatacopy(ptr, 0, size)
                revert(ptr, size)
            }
        }
        emit Delivered(id, origin, nonce);
        _resetMemory(arena);
    }

    // ------------------------------------------------------------------ internals

    function _checkNotForked() internal view {
        if (block.chainid != deployedChainId) revert ForkedChain(deployedChainId, block.chainid);
    }

    function _verifyAttestation(bytes32 digest, bytes calldata signatures) internal view {
        uint32 current = epoch;
        if (current == 0) revert NoCommittee();
        uint256 needed = threshold;
        uint256 length = signatures.length;
        if (length % 65 != 0) revert MalformedSignatures(length);
        uint256 given = length / 65;
        // Checked before any ecrecover: junk with too few signatures costs nothing (T3).
        if (given < needed) revert BelowThreshold(given, needed);
        address previous; // every real signer is above the zero address
        for (uint256 i; i < given; ++i) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            assembly ("memory-safe") {
                let at := add(signatures.offset, mul(i, 65))
                r := calldataload(at)
                s := calldataload(add(at, 32))
                v := byte(0, calldataload(add(at, 64)))
            }
            // Strict encoding: one valid byte string per vote (T4), no v tricks (T5).
            if ((v != 27 && v != 28) || uint256(s) > HALF_N) revert InvalidSignature(i);
            address signer = ecrecover(digest, v, r, s);
            if (signer == address(0)) revert InvalidSignature(i);
            if (memberEpoch[signer] != current) revert UnknownSigner(i, signer);
            if (signer <= previous) {
                if (signer == previous) revert DuplicateSigner(signer);
                revert SignersNotAscending(i);
            }
            previous = signer;
        }
    }

    function _deliver(
        uint256 position,
        bytes calldata message,
        bytes32[32] calldata branch,
        uint32 origin,
        bytes32 root,
        uint32 index
    ) internal {
        uint256 arena = _freeMemory();
        uint256 length = message.length;
        if (length < HEADER_SIZE || length > HEADER_SIZE + MAX_BODY_BYTES) {
            revert MalformedMessage(position, length);
        }
        if (uint8(message[0]) != VERSION) revert UnsupportedVersion(position, uint8(message[0]));
        (uint32 nonce, uint32 from, bytes32 sender, uint32 destination, bytes32 recipient) =
            _header(message);
        if (from != origin) revert WrongOrigin(position, from);
        if (destination != localDomain) revert WrongDestination(position, destination);
        if (nonce > index) revert NonceBeyondCheckpoint(position, nonce, index);
        (bytes32 id, uint256 buffer) = _stage(message);
        if (MerkleLib.branchRoot(id, branch, nonce) != root) revert InvalidProof(position, id);

        if (delivered[id]) {
            emit AlreadyDelivered(id);
            _resetMemory(arena);
            return;
        }
        delivered[id] = true;

        (address target, bytes memory refusal) = _target(recipient);
        if (refusal.length != 0) {
            _fail(id, refusal);
        } else {
            // Refuse to start a call that could not get its full stipend: otherwise a relayer
            // (or eth_estimateGas) could make a healthy recipient fail by under-funding it.
            if (gasleft() < HANDLE_GAS_NEEDED) revert InsufficientGas();
            if (_callHandle(target, HANDLE_GAS, buffer, origin, sender, length)) {
                emit Delivered(id, origin, nonce);
            } else {
                _fail(id, _returnedReason());
            }
        }
        _resetMemory(arena);
    }

    function _fail(bytes32 id, bytes memory reason) internal {
        failedMessage[id] = id;
        emit HandleFailed(id, reason);
    }

    /// @dev The recipient as an address, or the ABI-encoded reason it must not be called.
    function _target(bytes32 recipient) internal view returns (address target, bytes memory refusal) {
        if (uint256(recipient) >> 160 != 0) {
            return (address(0), abi.encodeWithSelector(RecipientNotAddress.selector, recipient));
        }
        target = address(uint160(uint256(recipient)));
        if (target == address(this) || isProtected[target]) {
            return (target, abi.encodeWithSelector(RecipientProtected.selector, target));
        }
        // A call to an address without code "succeeds" without running anything; a message
        // to it stays retryable until code exists there.
        if (target.code.length == 0) {
            return (target, abi.encodeWithSelector(RecipientNotContract.selector, target));
        }
    }

    /// @dev Header fields; `message` is at least HEADER_SIZE bytes (checked by the callers).
    function _header(bytes calldata message)
        internal
        pure
        returns (uint32 nonce, uint32 from, bytes32 sender, uint32 destination, bytes32 recipient)
    {
        assembly ("memory-safe") {
            let at := message.offset
            let head := calldataload(at)
            nonce := and(shr(216, head), 0xffffffff) // bytes 1..4
            from := and(shr(184, head), 0xffffffff) // bytes 5..8
            sender := calldataload(add(at, 9))
            destination := shr(224, calldataload(add(at, 41)))
            recipient := calldataload(add(at, 45))
        }
    }

    /// @dev Copies `message` into fresh memory at buffer + 55 and hashes it. The offset is
    ///      chosen so that the body lands at buffer + 132, exactly where the body of the
    ///      ABI-encoded `handle(uint32,bytes32,bytes)` call goes: _callHandle then only writes
    ///      the 132-byte call header over the (already parsed) message header.
    function _stage(bytes calldata message) internal pure returns (bytes32 id, uint256 buffer) {
        assembly ("memory-safe") {
            let length := message.length
            buffer := mload(0x40)
            calldatacopy(add(buffer, 55), message.offset, length)
            id := keccak256(add(buffer, 55), length)
            // Room for the header, the body rounded up to a word, and the padding word.
            mstore(0x40, add(buffer, add(164, and(add(length, 31), not(31)))))
        }
    }

    /// @dev Calls target.handle(from, sender, body) with `gasLimit`, the body being what
    ///      _stage left at buffer + 132. Return data is not copied.
    function _callHandle(
        address target,
        uint256 gasLimit,
        uint256 buffer,
        uint32 from,
        bytes32 sender,
        uint256 messageLength
    ) internal returns (bool ok) {
        bytes4 selector = IMessageRecipient.handle.selector;
        assembly ("memory-safe") {
            let bodyLength := sub(messageLength, 77)
            mstore(buffer, selector)
            mstore(add(buffer, 4), from)
            mstore(add(buffer, 36), sender)
            mstore(add(buffer, 68), 0x60)
            mstore(add(buffer, 100), bodyLength)
            mstore(add(add(buffer, 132), bodyLength), 0) // zero padding after the body
            let size := add(132, and(add(bodyLength, 31), not(31)))
            ok := call(gasLimit, target, 0, buffer, size, 0, 0)
        }
    }

    /// @dev The first MAX_REASON_BYTES of the last call's revert data.
    function _returnedReason() internal pure returns (bytes memory reason) {
        uint256 size;
        assembly ("memory-safe") {
            size := returndatasize()
        }
        if (size > MAX_REASON_BYTES) size = MAX_REASON_BYTES;
        reason = new bytes(size);
        assembly ("memory-safe") {
            returndatacopy(add(reason, 0x20), 0, size)
        }
    }

    /// @dev Each delivery allocates its staging buffer and reason; once a delivery is done
    ///      nothing in that memory is referenced again, so the next one reuses it instead of
    ///      growing memory (and its quadratic cost) across a batch.
    function _freeMemory() private pure returns (uint256 pointer) {
        assembly ("memory-safe") {
            pointer := mload(0x40)
        }
    }

    function _resetMemory(uint256 pointer) private pure {
        assembly ("memory-safe") {
            mstore(0x40, pointer)
        }
    }
}
