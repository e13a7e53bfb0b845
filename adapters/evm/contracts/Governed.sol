// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {Owned} from "./Owned.sol";

/// @title Governed: announced, delayed and expiring configuration changes (issue #11, T20)
/// @notice A contract whose owner can change what it trusts (the Inbox's committee and origins,
///         the TokenBridge's remote bridges) inherits this, so that users see every change
///         that ADDS trust coming and can leave before it applies:
///         1. the owner announces the change (`_announce`: an event and a `pendingChange`
///            entry holding a hash of its arguments);
///         2. the owner enacts it, with exactly the announced arguments (`_enact`), no sooner
///            than `notBefore` and no later than `notBefore + CHANGE_GRACE`.
///
///         Rules, each closing a way around the delay (hostile review of Inbox v2, finding 1):
///         - The delay in force when a change is ENACTED applies as well as the one in force
///           when it was announced: notBefore = announcedAt + max(delay then, delay now).
///         - An announcement EXPIRES `CHANGE_GRACE` (7 days) after it became due. Without
///           that, a change announced long ago (and forgotten by everyone watching) could be
///           enacted at any later moment with no fresh notice; 7 days is long enough for an
///           operator to carry out a change announced under a 30-day delay, short enough that
///           watchers need only remember the last few weeks of announcements.
///         - Raising the delay and handing ownership over (`acceptOwnership`) VOID every
///           pending announcement: each records the `changeGeneration` it was made in and is
///           only valid while it still matches. So a "sleeper" announced while the delay was
///           0 (the deployment window) cannot be enacted once the owner has promised users a
///           longer notice, and a new owner does not inherit the old key's announcements
///           (a stolen key's included).
///         - With a zero delay (the devnet; a contract being configured before it holds
///           value) a change may be enacted without announcement.
///         Changes that only REMOVE trust (untrusting an origin or a remote, revoking the
///         committee) are not delayed by the contracts that inherit this: no delay protects
///         anyone from them, and an owner facing an attack must be able to pull them at once.
/// @dev Storage is namespaced (ERC-7201 style), as `Owned`'s: inheriting this moves no slot of
///      the inheriting contract.
abstract contract Governed is Owned {
    /// @notice Longest `changeDelay`: a typo cannot freeze the configuration for ever.
    uint64 public constant MAX_CHANGE_DELAY = 30 days;

    /// @notice How long an announced change stays enactable once due (see the contract note).
    uint64 public constant CHANGE_GRACE = 7 days;

    /// @dev keccak256(abi.encode(uint256(keccak256("passerelle.governed")) - 1)) & ~0xff.
    bytes32 private constant GOVERNED_SLOT =
        0x76a48fd3ec4fe3c84df1832b2d2281e25f36f97eb5966e2957e63c8077023400;

    /// @dev The `pendingChange` key of a change of the delay itself.
    bytes32 internal constant DELAY_CHANGE = keccak256("passerelle.governed.changeDelay");

    /// @notice An announced, not yet enacted change: the hash of its arguments, when it was
    ///         announced, the delay in force then and the generation it belongs to.
    struct PendingChange {
        bytes32 change;
        uint64 announcedAt;
        uint64 delay;
        uint64 generation;
    }

    /// @custom:storage-location erc7201:passerelle.governed
    struct GovernedStorage {
        uint64 changeDelay;
        uint64 generation;
        mapping(bytes32 => PendingChange) pending;
    }

    event ChangeDelayAnnounced(uint64 delay, uint256 notBefore);
    event ChangeDelaySet(uint64 delay);
    event ChangeCancelled(bytes32 indexed key);
    /// @notice Every announcement made before is void (the delay was raised, or a new owner
    ///         accepted the contract); `generation` is the one announcements now belong to.
    event PendingChangesVoided(uint64 generation);

    error DelayTooLong(uint64 delay, uint64 maximum);
    error ChangeNotAnnounced(bytes32 key);
    error ChangeNotDue(bytes32 key, uint256 notBefore);
    error ChangeExpired(bytes32 key, uint256 expiredAt);

    constructor(address owner_) Owned(owner_) {}

    /// @notice Seconds between announcing a change that adds trust and enacting it.
    function changeDelay() public view returns (uint64) {
        return _governed().changeDelay;
    }

    /// @notice The generation announcements are made in now (see the contract note).
    function changeGeneration() external view returns (uint64) {
        return _governed().generation;
    }

    /// @notice The change announced under `key`: the hash of its arguments and the window in
    ///         which it can be enacted, as of now (zero for all if none, or if it was voided).
    function pendingChange(bytes32 key)
        external
        view
        returns (bytes32 change, uint256 notBefore, uint256 expiresAt)
    {
        GovernedStorage storage governed = _governed();
        PendingChange memory pending = governed.pending[key];
        if (pending.announcedAt == 0 || pending.generation != governed.generation) {
            return (bytes32(0), 0, 0);
        }
        notBefore = _notBefore(pending, governed.changeDelay);
        return (pending.change, notBefore, notBefore + CHANGE_GRACE);
    }

    /// @notice Announces a new `changeDelay`, enacted by `setChangeDelay` under the current one
    ///         (so shortening the delay takes as long as the delay it shortens).
    function announceChangeDelay(uint64 delay) external onlyOwner {
        if (delay > MAX_CHANGE_DELAY) revert DelayTooLong(delay, MAX_CHANGE_DELAY);
        uint256 notBefore = _announce(DELAY_CHANGE, bytes32(uint256(delay)));
        emit ChangeDelayAnnounced(delay, notBefore);
    }

    /// @notice Enacts the announced delay. A longer delay voids every pending announcement:
    ///         each was made under a promise of less notice than users are now given.
    function setChangeDelay(uint64 delay) external onlyOwner {
        if (delay > MAX_CHANGE_DELAY) revert DelayTooLong(delay, MAX_CHANGE_DELAY);
        _enact(DELAY_CHANGE, bytes32(uint256(delay)));
        GovernedStorage storage governed = _governed();
        uint64 previous = governed.changeDelay;
        governed.changeDelay = delay;
        emit ChangeDelaySet(delay);
        if (delay > previous) _voidPending();
    }

    /// @notice Withdraws an announced change (key: see the inheriting contract's `...Key`
    ///         views).
    function cancelChange(bytes32 key) external onlyOwner {
        delete _governed().pending[key];
        emit ChangeCancelled(key);
    }

    /// @dev A new owner starts with no pending announcement (see the contract note).
    function _ownershipAccepted() internal override {
        _voidPending();
    }

    /// @dev Records `change` (a hash of the arguments) under `key`; a later announcement under
    ///      the same key replaces it. Returns when it becomes enactable under today's delay.
    function _announce(bytes32 key, bytes32 change) internal returns (uint256 notBefore) {
        GovernedStorage storage governed = _governed();
        uint64 delay = governed.changeDelay;
        governed.pending[key] =
            PendingChange(change, uint64(block.timestamp), delay, governed.generation);
        notBefore = block.timestamp + delay;
    }

    /// @dev Lets the change through if it is the one announced under `key` in the current
    ///      generation and now is within its window, consuming the announcement. With a zero
    ///      delay anything goes, announced or not (the owner could enact it at once anyway).
    ///      Reverts ChangeNotAnnounced, ChangeNotDue or ChangeExpired.
    function _enact(bytes32 key, bytes32 change) internal {
        GovernedStorage storage governed = _governed();
        PendingChange memory pending = governed.pending[key];
        uint64 delay = governed.changeDelay;
        bool announced = pending.announcedAt != 0 && pending.generation == governed.generation
            && pending.change == change;
        if (delay != 0) {
            if (!announced) revert ChangeNotAnnounced(key);
            uint256 notBefore = _notBefore(pending, delay);
            if (block.timestamp < notBefore) revert ChangeNotDue(key, notBefore);
            // The window is closed at both ends: due exactly GRACE ago still passes.
            if (block.timestamp > notBefore + CHANGE_GRACE) {
                revert ChangeExpired(key, notBefore + CHANGE_GRACE);
            }
        }
        if (announced) delete governed.pending[key];
    }

    function _notBefore(PendingChange memory pending, uint64 delayNow)
        private
        pure
        returns (uint256)
    {
        uint64 longer = pending.delay > delayNow ? pending.delay : delayNow;
        return uint256(pending.announcedAt) + longer;
    }

    function _voidPending() private {
        GovernedStorage storage governed = _governed();
        uint64 next = governed.generation + 1;
        governed.generation = next;
        emit PendingChangesVoided(next);
    }

    function _governed() private pure returns (GovernedStorage storage governed) {
        assembly ("memory-safe") {
            governed.slot := GOVERNED_SLOT
        }
    }
}
