// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {IMessageRecipient} from "./IMessageRecipient.sol";
import {MerkleLib} from "./MerkleLib.sol";
import {Governed} from "./Governed.sol";

/// @notice An outbox state a committee signs (DESIGN.md, "Checkpoint attestation"): `root`
///         over the leaves 0..`index` of the Outbox `outbox` on domain `origin`.
struct Checkpoint {
    uint32 origin;
    bytes32 outbox;
    bytes32 root;
    uint32 index;
}

/// @title Inbox: delivers messages a committee attested on their origin
/// @notice One `process` call verifies ONE checkpoint attestation and ONE multiproof, then
///         delivers a batch of messages proven by it. For each message the inbox checks: version
///         1, origin == checkpoint origin, destination == this domain, nonce <= checkpoint index,
///         nonces strictly ascending through the batch; then that the multiproof of the leaves
///         keccak256(message) at indices `nonce` leads to the checkpoint root (docs/design.md,
///         "Inbox", "Batch proof").
///
///         Delivery semantics (what relayers, recipients and operators can rely on):
///         - All or nothing for proofs: if the checkpoint, any signature, any message's checks
///           or the batch's proof fail, the whole call reverts with a typed error naming it.
///         - Replays are no-ops, not errors: a proven message whose (origin, outbox, nonce)
///           bit is already set in `delivered` is skipped with `AlreadyDelivered(id)`, so two relayers
///           racing with overlapping batches both succeed and nothing is delivered twice (T16).
///           The replay guard is a bitmap per origin outbox, 256 nonces a word: a nonce is the
///           leaf index the proof binds the message to, so one bit per nonce is exactly one
///           bit per message id, and a batch of consecutive nonces writes one word per 256.
///         - The bit is set when the inbox accepts the message, before the recipient is called
///           (checks-effects-interactions: a re-entering recipient sees it delivered). It
///           means "accepted, never to be processed again", not "handled".
///         - The recipient's `handle` runs with exactly HANDLE_GAS gas. If `handle` reverts, the
///           message is recorded as failed
///           (a `failedMessage` record, event `HandleFailed(id, reason)`, reason = the first
///           MAX_REASON_BYTES of the revert data) and the batch goes on: a broken recipient
///           never blocks the lane. The same is recorded, without calling, when the recipient
///           is not an EVM address, has no code, is this inbox or is marked protected by the
///           owner (T20); `reason` is then the ABI encoding of the matching error.
///         - A failure record is keyed by (origin, outbox, nonce) (`failureKey`), so two
///           byte-identical messages of two outboxes of one origin never share one, and it
///           remembers what `process` trusted when it accepted the message: the committee
///           epoch that attested it and the origin's trust era (`originEra`).
///         - Anyone can `retry(message)` a failed message: it re-runs `handle` with all the gas
///           the caller forwards, but only while what `process` checked still holds: the
///           origin still trusts the same outbox, unchanged since (`OriginChangedSince`), and
///           no committee up to the one that attested the message was revoked
///           (`revokedThrough`, `CommitteeRevokedSince`).
///           A recipient that failed for an ordinary reason is retried by its user while
///           nothing changed: a broken recipient never blocks a lane. On success the record is
///           cleared and `Delivered` is emitted; on failure `retry` reverts with the
///           recipient's revert data and the record stays.
///         - Once that trust changed, `retryProven(cp, signatures, message, proof)` is the way
///           back: the same hand-over as `retry`, after the message is proven afresh exactly
///           as `process` proves a batch, under the committee, outbox and era trusted NOW. An
///           honest message can always be re-attested; one a revoked committee forged cannot
///           (the honest outbox's leaf at its nonce is another message, or none). The owner
///           can void a record, announced under the change delay like a change that adds
///           trust (`announceDiscard`, `discardFailed`, event `FailedDiscarded`).
///         - `retry` and `retryProven` refuse with InsufficientGas unless the full HANDLE_GAS
///           stipend can still be given (and forward all that is left): a recipient that
///           catches its own out-of-gas would otherwise "succeed" without its effect, and the
///           record would be gone.
///         - `Delivered(id, origin, nonce)` is emitted exactly once per message: when `handle`
///           succeeded, in `process` or in a later `retry` or `retryProven`.
///         - Nor in `process` is gas ever the recipient's problem: before each message (before
///           its replay bit is read) the inbox checks that MESSAGE_GAS_NEEDED is left, enough for the worst
///           that message can cost whatever its recipient does (the full HANDLE_GAS stipend, a
///           failure record, staging a 64 KiB body) and for stopping after it. If not,
///           `process` reverts with InsufficientGas (all or nothing, so eth_estimateGas of it
///           is the gas of the whole batch), and `processOrCut` stops the batch there instead:
///           `BatchCut(position, nonce)` names the first message not touched; it and every
///           later one keep their replay bit clear and no record, and any later batch delivers
///           them (docs/design.md, "Inbox", "Cut batches"). A cut before the first message
///           did nothing and reverts with InsufficientGas too. So a relayer that under-funds a
///           batch, on purpose or because a recipient burned in the real transaction what it
///           did not burn in the dry run, only delays messages: it can never make a healthy
///           recipient fail for want of gas, and with `processOrCut` one greedy recipient no
///           longer reverts the messages before it. The relayer estimates `process` and sends
///           `processOrCut` with the same arguments and one stipend more.
///         - On a chain whose id differs from the deployment's (a fork), `process`, `retry`
///           and `retryProven` refuse everything with ForkedChain (T8).
///
///         Governance: only the owner (two-step transfer, `Owned`) changes the committee, the
///         trusted outbox of an origin and the protected set; no message can reach them (the
///         inbox never calls itself or a protected address). A change that adds trust (a new
///         committee, a new outbox for an origin) is first announced (`announceCommittee`,
///         `announceOrigin`, events with the time it takes effect) and enacted (`setCommittee`,
///         `setOrigin`) within its window under `Governed`'s rules (the delay then and now,
///         expiry, voided by a longer delay or a new owner), so users can see it coming and
///         leave before it applies. With a zero delay (the devnet) a change can be enacted
///         without announcement. A change that only removes trust is immediate, the owner's
///         emergency levers: `setOrigin(origin, 0)` untrusts an origin, `revokeCommittee()`
///         leaves no committee at all (nothing verifies until a new one is enacted through
///         the delay), and both stop plain `retry` of what was parked under the old trust
///         (OriginChangedSince, CommitteeRevokedSince); such a message comes back only by
///         `retryProven` under the trust enacted since. Only `discardFailed`, protecting the
///         recipient, or trusting a DIFFERENT outbox for the origin voids a parked message.
contract Inbox is Governed {
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

    /// @dev Bytes of the big-endian length before each message in `process`'s `messages`.
    uint256 internal constant LENGTH_PREFIX = 3;

    /// @dev EIP-150 forwards at most 63/64 of what is left, so HANDLE_GAS needs 64/63 of it at
    ///      the CALL, plus the call's own cost (cold account access, memory) and some slack.
    uint256 internal constant HANDLE_GAS_NEEDED = (HANDLE_GAS * 64) / 63 + 10_000;

    /// @dev What the inbox itself may spend on one message around its `handle`, at worst:
    ///      staging a 64 KiB message (copy + keccak, ~19k; no memory growth: `_readBatch`
    ///      reserves what any message of the batch uses, see MESSAGE_MEMORY, so this does not
    ///      depend on the batch's size), a fresh guard word (22.1k), the recipient checks (two cold reads,
    ///      4.7k), a fresh failure record with its era (24.2k) and `HandleFailed` with 256
    ///      bytes of reason (~3.7k): ~74k; then the next iteration's check and `BatchCut`
    ///      (~2k). 90k leaves ~14k of slack (tests/test_inbox_truncation.py drives a batch to
    ///      every cut point at the exact gas and watches for an out-of-gas).
    uint256 internal constant MESSAGE_OVERHEAD = 90_000;

    /// @dev Bytes of memory one delivery may use past its message's length: the 164 bytes of
    ///      call header and padding around the staged copy (`_stage`), the reason kept
    ///      (32 + 256), the failure record and `HandleFailed`'s encoding (~420): just over
    ///      1,024 as compiled (the trace test saw 1,024 fall one word short), so 1,536.
    ///      `_readBatch` touches the word this far past each message's copy, so that no
    ///      message grows memory (each new word costs more the more memory is in use, and
    ///      the batch's tables make that grow with the batch: MESSAGE_OVERHEAD could not be
    ///      a constant otherwise; tests/test_inbox_truncation.py traces it).
    uint256 internal constant MESSAGE_MEMORY = 1536;

    /// @notice Gas the inbox must have left before a message to start it (see the contract
    ///         comment): with less, `process` reverts and `processOrCut` stops before it.
    uint256 public constant MESSAGE_GAS_NEEDED = HANDLE_GAS_NEEDED + MESSAGE_OVERHEAD;

    /// @dev secp256k1 n / 2: a larger s is the malleated twin of a low-s signature (EIP-2, T4).
    uint256 internal constant HALF_N =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    /// @dev Protocol tag domain-separating checkpoint digests from anything else signed (T8).
    bytes24 internal constant CHECKPOINT_TAG = "PASSERELLE/v1/checkpoint";

    /// @dev What `_process` does once the batch is proven: deliver it all or revert
    ///      (`process`), deliver it or cut it (`processOrCut`), hand its one parked message
    ///      over again (`retryProven`).
    uint256 internal constant ALL_OR_NOTHING = 0;
    uint256 internal constant CUT = 1;
    uint256 internal constant REPROVE = 2;

    /// @dev Key of a pending committee change (`pendingChange`); an origin's key is its own
    ///      hash (`originChangeKey`).
    bytes32 internal constant COMMITTEE_CHANGE = keccak256("passerelle.inbox.committee");

    /// @notice This chain's Passerelle domain; only messages addressed to it are delivered (T8).
    uint32 public immutable localDomain;

    /// @notice The chain id this inbox was deployed on. After a chain split the copy of the
    ///         inbox on the fork sees another `block.chainid` and refuses everything, so
    ///         attested messages are not replayed there (T8, the ETHW Omni Bridge incident).
    uint256 public immutable deployedChainId;

    /// @notice Incremented by every setCommittee and revokeCommittee; 0 means no committee
    ///         was ever set.
    uint32 public epoch;
    /// @notice Signatures needed: 0 < threshold <= committee size while a committee is set;
    ///         0 when there is none (never set, or revoked): then nothing verifies.
    uint8 public threshold;
    /// @notice Every epoch up to and including this one was revoked (`revokeCommittee`):
    ///         nothing its committee attested is retried. One number, not a set of epochs:
    ///         a compromised key may have served in several consecutive committees (an
    ///         ordinary rotation keeps members), and the owner learns of the leak only after
    ///         it, so a revocation covers every epoch before the current one too.
    uint32 public revokedThrough;

    address[] internal committee;
    /// @dev A member of the current committee has memberEpoch == epoch. Rotating the committee
    ///      bumps the epoch, which retires every old member without clearing storage.
    mapping(address => uint32) internal memberEpoch;

    /// @notice The trusted Outbox (32-byte id) per origin domain; zero = unknown origin (T14).
    mapping(uint32 => bytes32) public outboxOf;
    /// @notice Addresses a message can never call (the inbox itself is always protected, T20).
    mapping(address => bool) public isProtected;
    /// @notice The replay guard (T16): bit `nonce % 256` of
    ///         `delivered[origin][outbox][nonce / 256]` is set once the message with that nonce
    ///         from that outbox of `origin` is accepted. Keyed by the outbox too: nonces restart
    ///         at 0 in a new outbox, whose messages must not read as replays of the old one's.
    mapping(uint32 => mapping(bytes32 => mapping(uint256 => uint256))) public delivered;
    /// @notice Messages whose `handle` failed, by `failureKey(origin, outbox, nonce)`: the
    ///         first 24 bytes of the message id, the committee epoch that attested it and the
    ///         origin's trust era when it was accepted; all zero once retried successfully,
    ///         discarded, or if it never failed.
    mapping(bytes32 => Failure) public failedMessage;
    /// @notice Bumped by every `setOrigin` of that origin (trusting or untrusting): a failure
    ///         recorded in an earlier era was proven under a trust that has changed since.
    mapping(uint32 => uint32) public originEra;
    /// @notice A failed message's record (see `failedMessage`), packed into ONE storage word
    ///         so that parking a message costs one fresh slot (a reverting recipient is free
    ///         to target; the relayer pays). The id is truncated to its first 192 bits: the
    ///         record is found by its (origin, outbox, nonce) key and only ever compared with
    ///         the id of a message proven at that nonce, so a false match needs a second
    ///         message agreeing on 192 bits of keccak256 (about 2^96 work even for a
    ///         birthday search over messages the attacker writes both of).
    struct Failure {
        bytes24 id;
        uint32 epoch;
        uint32 era;
    }

    event Delivered(bytes32 indexed id, uint32 indexed origin, uint32 nonce);
    event AlreadyDelivered(bytes32 indexed id);
    /// @notice `processOrCut` stopped before the message at `position` of its batch (nonce
    ///         `nonce`) for want of MESSAGE_GAS_NEEDED: it and every later one were not touched.
    event BatchCut(uint256 position, uint32 nonce);
    event HandleFailed(bytes32 indexed id, bytes reason);
    event CommitteeAnnounced(address[] validators, uint8 threshold, uint256 notBefore);
    event CommitteeSet(uint32 indexed epoch, address[] validators, uint8 threshold);
    event OriginAnnounced(uint32 indexed origin, bytes32 outbox, uint256 notBefore);
    event OriginSet(uint32 indexed origin, bytes32 outbox);
    /// @notice Every epoch up to `revokedThrough` is revoked (see `revokedThrough`).
    event CommitteeRevoked(uint32 indexed revokedThrough);
    event DiscardAnnounced(bytes32 indexed key, uint256 notBefore);
    event ProtectedSet(address indexed account, bool isProtected);
    /// @notice `id` is the record's: the first 24 bytes of the message id.
    event FailedDiscarded(bytes24 indexed id, uint32 indexed origin, bytes32 outbox, uint32 nonce);

    // Administration.
    error EmptyCommittee();
    error InvalidThreshold(uint256 threshold, uint256 size);
    error ZeroValidator(uint256 position);
    error ValidatorsNotAscending(uint256 position);
    error OriginIsLocal(uint32 origin);
    // Checkpoint and attestation.
    error EmptyBatch();
    error ForkedChain(uint256 expected, uint256 actual);
    error UnknownOrigin(uint32 origin);
    error WrongOutbox(uint32 origin, bytes32 outbox);
    error InvalidRoot(bytes32 root);
    error IndexTooLarge(uint32 index);
    error NoCommittee();
    error MalformedSignatures(uint256 length);
    error BelowThreshold(uint256 signatures, uint256 threshold);
    error InvalidSignature(uint256 position);
    error UnknownSigner(uint256 position, address signer);
    error DuplicateSigner(address signer);
    error SignersNotAscending(uint256 position);
    // Messages (position = index in the batch).
    error TruncatedBatch(uint256 position);
    error MalformedMessage(uint256 position, uint256 length);
    error UnsupportedVersion(uint256 position, uint8 version);
    error WrongOrigin(uint256 position, uint32 origin);
    error WrongDestination(uint256 position, uint32 destination);
    error NonceBeyondCheckpoint(uint256 position, uint32 nonce, uint32 index);
    error NoncesNotAscending(uint256 position, uint32 nonce);
    // The batch proof.
    error ProofTooShort(uint256 needed, uint256 given);
    error UnusedProofHashes(uint256 used, uint256 given);
    error InvalidProof(bytes32 computed);
    /// @notice Not enough gas left for a message of the batch (`process`), or for its first
    ///         one (`processOrCut`); see MESSAGE_GAS_NEEDED.
    error InsufficientGas();
    /// @notice MESSAGE_OVERHEAD did not cover what a message cost before its call (a bug).
    error StipendUnavailable();
    // Recipients (also the `reason` of HandleFailed when the inbox refuses to call).
    error RecipientNotAddress(bytes32 recipient);
    error RecipientProtected(address recipient);
    error RecipientNotContract(address recipient);
    error NotFailed(bytes32 id);
    error OriginChangedSince(uint32 origin, uint32 era);
    error CommitteeRevokedSince(uint32 epoch, uint32 revokedThrough);
    /// @notice `retryProven` takes exactly one message; its batch held `count`.
    error NotOneMessage(uint256 count);

    constructor(uint32 localDomain_, address owner_) Governed(owner_) {
        localDomain = localDomain_;
        deployedChainId = block.chainid;
    }

    // ------------------------------------------------------------------ administration

    /// @notice Announces the committee `setCommittee(members, threshold_)` may install once
    ///         `changeDelay` has passed; replaces any committee announced before. Validated
    ///         now too, so a change that could never be enacted is not announced.
    function announceCommittee(address[] calldata members, uint8 threshold_) external onlyOwner {
        _checkCommittee(members, threshold_);
        uint256 notBefore = _announce(COMMITTEE_CHANGE, keccak256(abi.encode(members, threshold_)));
        emit CommitteeAnnounced(members, threshold_, notBefore);
    }

    /// @notice Replaces the committee with the announced one. `members` must be non-empty,
    ///         non-zero and strictly ascending (so distinct), at most 255 of them, and
    ///         0 < threshold <= n (T3, T5). Whether the threshold is *safe* (T7) is the config
    ///         linter's call, not this one.
    function setCommittee(address[] calldata members, uint8 threshold_) external onlyOwner {
        _checkCommittee(members, threshold_);
        _enact(COMMITTEE_CHANGE, keccak256(abi.encode(members, threshold_)));
        uint32 next = epoch + 1;
        for (uint256 i; i < members.length; ++i) {
            memberEpoch[members[i]] = next;
        }
        committee = members;
        epoch = next;
        threshold = threshold_;
        emit CommitteeSet(next, members, threshold_);
    }

    /// @notice Announces that `setOrigin(origin, outbox)` may trust `outbox` for `origin` once
    ///         `changeDelay` has passed; replaces any change of that origin announced before.
    function announceOrigin(uint32 origin, bytes32 outbox) external onlyOwner {
        if (origin == localDomain) revert OriginIsLocal(origin);
        uint256 notBefore = _announce(_originKey(origin), outbox);
        emit OriginAnnounced(origin, outbox, notBefore);
    }

    /// @notice Trusts `outbox` as the Outbox of domain `origin` (announced before, see
    ///         `Governed`). Zero untrusts the origin at once, with no announcement: it only
    ///         removes trust. Either way the origin's era moves on, so nothing parked under the
    ///         old trust can be retried (`retry`) without a fresh proof (`retryProven`).
    function setOrigin(uint32 origin, bytes32 outbox) external onlyOwner {
        if (origin == localDomain) revert OriginIsLocal(origin);
        if (outbox != bytes32(0)) _enact(_originKey(origin), outbox);
        outboxOf[origin] = outbox;
        originEra[origin] += 1;
        emit OriginSet(origin, outbox);
    }

    /// @notice The emergency lever against a committee that signs what it should not: at once
    ///         and unannounced, no committee is trusted any more (the epoch moves on, so every
    ///         member retires, and the threshold is 0, so `process` refuses everything with
    ///         NoCommittee) and nothing attested by this committee OR ANY EARLIER ONE and parked
    ///         as failed can be retried (`revokedThrough`): the leaked keys may have served in
    ///         earlier epochs too. A new committee comes only through `setCommittee`, announced
    ///         under the delay like any other. Honest parked messages of those epochs are
    ///         then retried with a fresh proof under the new committee (`retryProven`).
    function revokeCommittee() external onlyOwner {
        uint32 revoked = epoch;
        if (threshold == 0) revert NoCommittee();
        revokedThrough = revoked;
        epoch = revoked + 1;
        threshold = 0;
        delete committee;
        emit CommitteeRevoked(revoked);
    }

    /// @notice Announces that `discardFailed(origin, outbox, nonce)` may void that failure
    ///         record once `changeDelay` has passed.
    function announceDiscard(uint32 origin, bytes32 outbox, uint32 nonce) external onlyOwner {
        bytes32 key = failureKey(origin, outbox, nonce);
        uint256 notBefore = _announce(_discardKey(key), key);
        emit DiscardAnnounced(key, notBefore);
    }

    /// @notice Voids the failure record of the message with `nonce` from `outbox` of `origin`
    ///         (for example one a compromised committee attested to a recipient the owner had
    ///         protected in time): it can never be retried. Announced and delayed like a change
    ///         that adds trust (`announceDiscard`, `Governed`): its only effect is to destroy a
    ///         user's parked message (for the bridge, value locked or burned on the origin),
    ///         so its owner must see it coming and get the chance to retry first. An
    ///         emergency needs no discard: protecting the recipient, untrusting the origin or
    ///         revoking the committee stop a hostile retry at once.
    function discardFailed(uint32 origin, bytes32 outbox, uint32 nonce) external onlyOwner {
        bytes32 key = failureKey(origin, outbox, nonce);
        bytes24 id = failedMessage[key].id;
        if (id == bytes24(0)) revert NotFailed(key);
        _enact(_discardKey(key), key);
        delete failedMessage[key];
        emit FailedDiscarded(id, origin, outbox, nonce);
    }

    /// @notice Marks an address that relayed messages must never call (T20), e.g. a contract
    ///         whose `handle`-shaped function is privileged. Immediate: protecting is the
    ///         lever an owner pulls in an emergency.
    function setProtected(address account, bool protected_) external onlyOwner {
        isProtected[account] = protected_;
        emit ProtectedSet(account, protected_);
    }

    /// @notice The `pendingChange` key of a change of `origin`'s outbox.
    function originChangeKey(uint32 origin) external pure returns (bytes32) {
        return _originKey(origin);
    }

    /// @notice The `pendingChange` key of a discard of the failure record `key`.
    function discardChangeKey(bytes32 key) external pure returns (bytes32) {
        return _discardKey(key);
    }

    /// @notice The `pendingChange` key of a change of the committee.
    function committeeChangeKey() external pure returns (bytes32) {
        return COMMITTEE_CHANGE;
    }

    /// @notice The `failedMessage` key of the message with `nonce` from `outbox` of `origin`:
    ///         keccak256(abi.encode(origin, outbox, nonce)).
    function failureKey(uint32 origin, bytes32 outbox, uint32 nonce)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(origin, outbox, nonce));
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

    /// @notice Whether the message with `nonce` from `origin`'s trusted outbox was accepted
    ///         (see `delivered`).
    function isDelivered(uint32 origin, uint32 nonce) external view returns (bool) {
        return delivered[origin][outboxOf[origin]][nonce >> 8] & (1 << (nonce & 0xff)) != 0;
    }

    // ------------------------------------------------------------------ delivery

    /// @notice Verifies the committee's attestation of `cp` and the multiproof `proof` of the
    ///         whole batch once, then delivers each message of `messages`; reverts with
    ///         InsufficientGas if MESSAGE_GAS_NEEDED is not left before one of them (so
    ///         eth_estimateGas of this call sizes the whole batch).
    /// @param signatures k signatures of 65 bytes r ‖ s ‖ v concatenated, k >= threshold, in
    ///        strictly ascending signer-address order.
    /// @param messages The batch, packed: for each message a 3-byte big-endian length then the
    ///        message itself, nonces strictly ascending. (An ABI `bytes[]` would spend 64-71
    ///        more calldata bytes per message on offsets, lengths and padding.)
    /// @param proof The multiproof of the leaves keccak256(message) at indices `nonce` under
    ///        `cp.root`, in the order MerkleLib.multiRoot consumes it (light_clients/multiproof.py
    ///        builds it); every hash must be used.
    /// @dev See the contract comment for what reverts and what is recorded.
    function process(
        Checkpoint calldata cp,
        bytes calldata signatures,
        bytes calldata messages,
        bytes32[] calldata proof
    ) external {
        _process(cp, signatures, messages, proof);
    }

    /// @notice `process`, except that a message which could not be given MESSAGE_GAS_NEEDED
    ///         cuts the batch there (`BatchCut(position, nonce)`) instead of reverting it: the
    ///         messages before it are delivered, it and the rest are not touched and can be
    ///         delivered by any later batch. A cut before the first message reverts with
    ///         InsufficientGas (the call would have done nothing). Not for eth_estimateGas:
    ///         once the proofs pass every gas limit succeeds, so its estimate is the gas of a
    ///         batch cut after one message; estimate `process` with the same arguments.
    function processOrCut(
        Checkpoint calldata cp,
        bytes calldata signatures,
        bytes calldata messages,
        bytes32[] calldata proof
    ) external {
        _process(cp, signatures, messages, proof);
    }

    /// @dev The body of `process`, `processOrCut` and `retryProven`: ONE verification path for
    ///      all three, its `mode` read from the entry point's selector (`msg.sig`; only those
    ///      three external functions call it). Inline here rather than a function of its own,
    ///      which cost ~200 gas a batch (2 gas a message in benchmarks.bench_delivery_gas).
    function _process(
        Checkpoint calldata cp,
        bytes calldata signatures,
        bytes calldata messages,
        bytes32[] calldata proof
    ) internal {
        // Not a parameter: the optimizer inlines `_process` into each caller, and three
        // callers passing three constants kept three copies (+3.4 KB, 922 bytes under
        // EIP-170); with identical callers it keeps one (17.8 KB runtime instead of 23.7).
        uint256 mode = msg.sig == this.processOrCut.selector
            ? CUT
            : (msg.sig == this.retryProven.selector ? REPROVE : ALL_OR_NOTHING);
        _checkNotForked();
        if (messages.length == 0) revert EmptyBatch();
        uint32 origin = cp.origin;
        bytes32 trusted = outboxOf[origin];
        if (trusted == bytes32(0)) revert UnknownOrigin(origin);
        if (cp.outbox != trusted) revert WrongOutbox(origin, cp.outbox);
        bytes32 root = cp.root;
        if (root == bytes32(0) || root == MerkleLib.EMPTY_ROOT) revert InvalidRoot(root);
        uint32 index = cp.index;
        // An Outbox never holds more than MAX_LEAVES leaves, so its last index is below that;
        // the Python verifier refuses the same (light_clients/multiproof.py).
        if (index >= MerkleLib.MAX_LEAVES) revert IndexTooLarge(index);
        _verifyAttestation(checkpointDigest(cp), signatures);
        (uint256 nodes, uint256 spans, uint256 count) = _readBatch(messages, origin, index);
        (bytes32 computed, uint256 used) =
            MerkleLib.multiRoot(nodes, count, proof, uint256(index) + 1);
        if (used > proof.length) revert ProofTooShort(used, proof.length);
        if (used < proof.length) revert UnusedProofHashes(used, proof.length);
        if (computed != root) revert InvalidProof(computed);
        // multiRoot's zero table is dead now: the messages reuse its memory, from the end of
        // the `spans` table (as long as `nodes`' half) on, inside what _readBatch reserved
        // for them (MESSAGE_MEMORY) instead of growing past it.
        _resetMemory(spans + ((spans - nodes) >> 1));
        if (mode == REPROVE) {
            if (count != 1) revert NotOneMessage(count);
            uint256 span;
            assembly ("memory-safe") {
                span := mload(spans)
            }
            uint256 start = span >> 64;
            uint256 end = start + ((span >> 32) & 0xffffffff);
            _retryParked(messages[start:end], origin, trusted, false);
            return;
        }
        // Only now, with every message proven, is anything written or called.
        bytes32 guard = _guardBase(origin, trusted);
        for (uint256 i; i < count; ) {
            uint256 span;
            assembly ("memory-safe") {
                span := mload(add(spans, shl(5, i)))
            }
            // Before anything of message i is read or written (its replay bit included): a
            // message is either delivered whole, with its recipient's full stipend, or not
            // touched at all.
            if (gasleft() < MESSAGE_GAS_NEEDED) {
                // Cut before the first message, the call did nothing: refused, as too little
                // gas for the proofs would be.
                if (mode != CUT || i == 0) revert InsufficientGas();
                emit BatchCut(i, uint32(span));
                return;
            }
            uint256 start = span >> 64;
            uint256 end = start + ((span >> 32) & 0xffffffff);
            _deliver(messages[start:end], uint32(span), origin, trusted, guard);
            unchecked {
                ++i;
            }
        }
    }

    /// @notice Re-runs `handle` for a message recorded in `failedMessage`, forwarding all the
    ///         gas given, if what `process` checked still holds (see the contract comment).
    ///         Reverts with the recipient's own revert data if it fails again.
    function retry(bytes calldata message) external {
        _checkNotForked();
        // Junk shorter than a header has no record: there is nothing to parse.
        if (message.length < HEADER_SIZE) revert NotFailed(keccak256(message));
        (, uint32 origin,,,) = _header(message);
        bytes32 trusted = outboxOf[origin];
        if (trusted == bytes32(0)) revert UnknownOrigin(origin);
        // Under the outbox trusted NOW: a record made under another outbox is not found.
        _retryParked(message, origin, trusted, true);
    }

    /// @notice `retry` with a fresh proof: re-runs `handle` for a parked message that the
    ///         CURRENT committee attests under the CURRENT trusted outbox, whatever trust it
    ///         was parked under. The way out for an honest message parked under a committee
    ///         revoked since (`CommitteeRevokedSince`) or an origin trust changed since
    ///         (`OriginChangedSince`, e.g. untrusted and trusted again): `retry` refuses those
    ///         for good, and their replay bit is set, so without this the value a token
    ///         transfer carried would be stranded.
    ///
    ///         The checkpoint, signatures, message and proof are verified exactly as
    ///         `process` verifies a batch (the same code, `_process`): the origin's outbox
    ///         trusted now, no zero or empty root, the index bound, threshold before any
    ///         recovery, ascending distinct low-s members of the current epoch, version,
    ///         origin, destination, nonce within the checkpoint, the multiproof of the leaf at
    ///         its nonce. `messages` is `process`'s packed form holding exactly ONE message.
    ///         Then it runs only if `failedMessage[failureKey(origin, outbox, nonce)]` holds
    ///         that message's id (`NotFailed` otherwise: never parked, retried already,
    ///         discarded, or parked under another outbox), and from there on it is `retry`:
    ///         recipient rules (`RecipientNotAddress`/`RecipientProtected`/
    ///         `RecipientNotContract`, checked again now), the record deleted before the
    ///         call, all the gas given forwarded, the recipient's revert data on failure (the
    ///         record then stays as it was), `Delivered` once on success.
    ///
    ///         Why this is safe after a revocation: what it delivers is the leaf at that nonce
    ///         of the tree an honest committee signs, so a message a compromised committee
    ///         forged (another leaf at that nonce, or a nonce the outbox never reached) can
    ///         never be re-proven, while an honest one can be re-attested at any time.
    function retryProven(
        Checkpoint calldata cp,
        bytes calldata signatures,
        bytes calldata messages,
        bytes32[] calldata proof
    ) external {
        _process(cp, signatures, messages, proof);
    }

    // ------------------------------------------------------------------ internals

    /// @dev The shape rules of a committee (see `setCommittee`).
    function _checkCommittee(address[] calldata members, uint8 threshold_) internal pure {
        uint256 size = members.length;
        if (size == 0) revert EmptyCommittee();
        if (threshold_ == 0 || threshold_ > size) revert InvalidThreshold(threshold_, size);
        // A uint8 threshold cannot exceed 255, so neither may the set (keeps n/t comparable).
        if (size > type(uint8).max) revert InvalidThreshold(threshold_, size);
        address previous;
        for (uint256 i; i < size; ++i) {
            address validator = members[i];
            if (validator == address(0)) revert ZeroValidator(i);
            if (validator <= previous) revert ValidatorsNotAscending(i);
            previous = validator;
        }
    }

    function _originKey(uint32 origin) internal pure returns (bytes32) {
        return keccak256(abi.encode("passerelle.inbox.origin", origin));
    }

    function _discardKey(bytes32 key) internal pure returns (bytes32) {
        return keccak256(abi.encode("passerelle.inbox.discard", key));
    }

    function _checkNotForked() internal view {
        if (block.chainid != deployedChainId) revert ForkedChain(deployedChainId, block.chainid);
    }

    /// @dev The second half of `retry` and `retryProven`: hands the parked `message` of
    ///      `origin` (at least a header long) over again if the failure record under
    ///      (`origin`, `outbox`, its nonce) holds its id. `sameTrust`: `retry`, which proves
    ///      nothing itself, also needs the trust the record was made under to hold still
    ///      (era and committee); `retryProven` has just proven the message under today's.
    function _retryParked(bytes calldata message, uint32 origin, bytes32 outbox, bool sameTrust)
        internal
    {
        uint256 arena = _freeMemory();
        (bytes32 id, uint256 buffer) = _stage(message);
        (uint32 nonce,, bytes32 sender,, bytes32 recipient) = _header(message);
        bytes32 key = failureKey(origin, outbox, nonce);
        Failure memory failure = failedMessage[key];
        // Zero means no record (no message has an all-zero id prefix but with ~2^-192 odds).
        if (failure.id == bytes24(0) || failure.id != bytes24(id)) revert NotFailed(id);
        if (sameTrust) {
            if (failure.era != originEra[origin]) revert OriginChangedSince(origin, failure.era);
            uint32 through = revokedThrough;
            if (failure.epoch <= through) revert CommitteeRevokedSince(failure.epoch, through);
        }
        (address target, bytes memory refusal) = _target(recipient);
        if (refusal.length != 0) {
            assembly ("memory-safe") {
                revert(add(refusal, 0x20), mload(refusal))
            }
        }
        // Before the call (checks-effects-interactions): a re-entering recipient finds no
        // record to retry a second time.
        // At least what `process` gives it: a caller must not starve a recipient that
        // catches its own inner failures into a "successful" hand-over.
        if (gasleft() < HANDLE_GAS_NEEDED) revert InsufficientGas();
        delete failedMessage[key];
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

    function _verifyAttestation(bytes32 digest, bytes calldata signatures) internal view {
        uint32 current = epoch;
        uint256 needed = threshold;
        // Zero before the first committee and after a revocation: with no signature needed,
        // the loop below would accept an empty list.
        if (needed == 0) revert NoCommittee();
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

    /// @dev Checks every message of the packed batch (see `process`) and lays out two tables
    ///      in memory: `nodes`, a (nonce, id) pair per message for MerkleLib.multiRoot, and
    ///      `spans`, a word per message: start in `messages` << 64 | length << 32 | nonce.
    ///      Past them (the free memory pointer it leaves), it grows memory to what the
    ///      delivery of its longest message will use (MESSAGE_MEMORY).
    function _readBatch(bytes calldata messages, uint32 origin, uint32 index)
        internal
        view
        returns (uint256 nodes, uint256 spans, uint256 count)
    {
        uint256 end = messages.length;
        // Every message takes at least LENGTH_PREFIX + HEADER_SIZE bytes.
        uint256 capacity = end / (LENGTH_PREFIX + HEADER_SIZE) + 1;
        assembly ("memory-safe") {
            nodes := mload(0x40)
            spans := add(nodes, shl(6, capacity))
            mstore(0x40, add(spans, shl(5, capacity)))
        }
        uint256 cursor;
        uint256 previous;
        while (cursor < end) {
            if (end - cursor < LENGTH_PREFIX) revert TruncatedBatch(count);
            uint256 length = uint24(bytes3(messages[cursor:cursor + LENGTH_PREFIX]));
            uint256 start = cursor + LENGTH_PREFIX;
            if (length < HEADER_SIZE || length > HEADER_SIZE + MAX_BODY_BYTES) {
                revert MalformedMessage(count, length);
            }
            if (end - start < length) revert TruncatedBatch(count);
            bytes calldata message = messages[start:start + length];
            if (uint8(message[0]) != VERSION) revert UnsupportedVersion(count, uint8(message[0]));
            (uint32 nonce, uint32 from,, uint32 destination,) = _header(message);
            if (from != origin) revert WrongOrigin(count, from);
            if (destination != localDomain) revert WrongDestination(count, destination);
            if (nonce > index) revert NonceBeyondCheckpoint(count, nonce, index);
            // Strictly ascending: a repeated leaf would count one message twice in the proof.
            if (count != 0 && nonce <= previous) revert NoncesNotAscending(count, nonce);
            previous = nonce;
            assembly ("memory-safe") {
                let scratch := mload(0x40)
                calldatacopy(scratch, message.offset, length)
                let node := add(nodes, shl(6, count))
                mstore(node, nonce)
                mstore(add(node, 0x20), keccak256(scratch, length))
                mstore(add(spans, shl(5, count)), or(shl(64, start), or(shl(32, length), nonce)))
                // What this message's delivery will use past the same point (its staged copy
                // and MESSAGE_MEMORY), grown now: the loop of `_process` never grows memory.
                // Scratch, never read: only the size matters (paid once, for the longest).
                mstore(add(scratch, add(length, sub(MESSAGE_MEMORY, 32))), 0)
            }
            cursor = start + length;
            unchecked {
                ++count;
            }
        }
    }

    /// @dev The storage slot of `delivered[from][outbox]` (Solidity's nested-mapping layout),
    ///      from which `_deliver` derives each word's slot with one more hash.
    function _guardBase(uint32 from, bytes32 outbox) internal pure returns (bytes32 base) {
        assembly ("memory-safe") {
            mstore(0x00, from)
            mstore(0x20, delivered.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, outbox)
            base := keccak256(0x00, 0x40)
        }
    }

    /// @dev Delivers one proven message (see the contract comment).
    function _deliver(
        bytes calldata message,
        uint32 nonce,
        uint32 origin,
        bytes32 outbox,
        bytes32 guard
    ) internal {
        uint256 arena = _freeMemory();
        (bytes32 id, uint256 buffer) = _stage(message);
        bool seen;
        assembly ("memory-safe") {
            mstore(0x00, shr(8, nonce))
            mstore(0x20, guard)
            let slot := keccak256(0x00, 0x40)
            let bits := sload(slot)
            let bit := shl(and(nonce, 0xff), 1)
            seen := iszero(iszero(and(bits, bit)))
            // Set before the recipient runs, and read fresh each time: a recipient may re-enter
            // and set other bits of this very word.
            if iszero(seen) { sstore(slot, or(bits, bit)) }
        }
        if (seen) {
            emit AlreadyDelivered(id);
            _resetMemory(arena);
            return;
        }
        (, , bytes32 sender, , bytes32 recipient) = _header(message);
        (address target, bytes memory refusal) = _target(recipient);
        if (refusal.length != 0) {
            _fail(failureKey(origin, outbox, nonce), id, origin, refusal);
        } else {
            // Never reached while MESSAGE_OVERHEAD covers what this message spent since the
            // check in `_process`; kept so that a wrong bound reverts the batch instead of
            // starving a healthy recipient into a recorded failure (its own error, so that a
            // test can tell it from the cut: tests/test_inbox_truncation.py).
            if (gasleft() < HANDLE_GAS_NEEDED) revert StipendUnavailable();
            if (_callHandle(target, HANDLE_GAS, buffer, origin, sender, message.length)) {
                emit Delivered(id, origin, nonce);
            } else {
                _fail(failureKey(origin, outbox, nonce), id, origin, _returnedReason());
            }
        }
        _resetMemory(arena);
    }

    /// @dev Parks a message `process` accepted but could not hand over, with the trust it was
    ///      accepted under (see `retry`).
    function _fail(bytes32 key, bytes32 id, uint32 origin, bytes memory reason) internal {
        failedMessage[key] = Failure(bytes24(id), epoch, originEra[origin]);
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
