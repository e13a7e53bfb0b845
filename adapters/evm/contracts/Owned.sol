// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// @title Owned: two-step ownership for Passerelle's contracts (docs/threats.md, T20)
/// @notice The owner is the only account that can change what a contract trusts. Handing that
///         power over takes two transactions: the owner names a `pendingOwner`
///         (`transferOwnership`), and only that account can take it (`acceptOwnership`). A typo
///         or an address nobody holds the key of therefore never becomes the owner: until the
///         new owner accepts, the old one stays in charge and can name another (or zero, which
///         cancels the transfer).
/// @dev Storage is namespaced (ERC-7201 style: a slot derived from a name, not slot 0), so a
///      contract whose storage layout is part of the protocol - the Outbox, whose slots 0..32
///      attesters prove - can inherit this without moving a single slot.
abstract contract Owned {
    /// @dev keccak256(abi.encode(uint256(keccak256("passerelle.owned")) - 1)) & ~0xff.
    bytes32 private constant OWNED_SLOT =
        0xb6192cb7727da8cec422d3b4e221ca766d86a86dea3f7d2830da40ca462a6e00;

    /// @custom:storage-location erc7201:passerelle.owned
    struct OwnedStorage {
        address owner;
        address pendingOwner;
    }

    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOwner(address caller);
    error NotPendingOwner(address caller);
    error ZeroOwner();

    modifier onlyOwner() {
        if (msg.sender != _owned().owner) revert NotOwner(msg.sender);
        _;
    }

    constructor(address owner_) {
        if (owner_ == address(0)) revert ZeroOwner();
        _owned().owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
    }

    /// @notice The account that can change this contract's configuration.
    function owner() public view returns (address) {
        return _owned().owner;
    }

    /// @notice The account named by `transferOwnership` that has not accepted yet (or zero).
    function pendingOwner() external view returns (address) {
        return _owned().pendingOwner;
    }

    /// @notice Names `newOwner` as the next owner; nothing changes until it accepts. Zero
    ///         cancels a transfer in progress.
    function transferOwnership(address newOwner) external onlyOwner {
        _owned().pendingOwner = newOwner;
        emit OwnershipTransferStarted(msg.sender, newOwner);
    }

    /// @notice Takes the ownership `transferOwnership` offered to the caller.
    function acceptOwnership() external {
        OwnedStorage storage owned = _owned();
        if (msg.sender != owned.pendingOwner) revert NotPendingOwner(msg.sender);
        emit OwnershipTransferred(owned.owner, msg.sender);
        owned.owner = msg.sender;
        owned.pendingOwner = address(0);
        _ownershipAccepted();
    }

    /// @dev Called once the new owner has taken over; `Governed` voids the old owner's pending
    ///      announcements here. Nothing by default.
    function _ownershipAccepted() internal virtual {}

    function _owned() private pure returns (OwnedStorage storage owned) {
        assembly ("memory-safe") {
            owned.slot := OWNED_SLOT
        }
    }
}
