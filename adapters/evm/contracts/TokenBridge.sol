// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {IMessageRecipient} from "./IMessageRecipient.sol";
import {Inbox} from "./Inbox.sol";
import {Outbox} from "./Outbox.sol";
import {Governed} from "./Governed.sol";
import {WrappedToken} from "./WrappedToken.sol";

/// @title TokenBridge: lock-and-mint / burn-and-unlock of ERC-20s over Passerelle messages
/// @notice One TokenBridge per chain; each trusts exactly one remote bridge per domain.
///         - A *home token* lives on this chain. `transferRemote` locks it here and asks the
///           remote bridge to mint its WrappedToken there.
///         - A *wrapped token* represents a token whose home is another domain.
///           `transferRemote` burns it here and asks the home bridge to unlock the original.
///
///         Message body (exactly 128 bytes):
///             abi.encode(uint8 action, bytes32 homeToken, uint256 amount, bytes32 recipient)
///         action 1 = MINT   (home -> remote): mint `amount` of the wrapped `homeToken`;
///         action 2 = UNLOCK (remote -> home): release `amount` of `homeToken` (the home
///                    chain's token address, left-padded);
///         recipient is the beneficiary on the destination (an EVM address, left-padded).
///         action 3 = REFUND (escrow remote -> home, from its escrow account only): the body
///                    is abi.encode(uint8 3, bytes32 messageId, uint256 amount, bytes32
///                    reason): give back a transfer this bridge sent to that remote and the
///                    remote could never deliver (see `refunds`).
///
///         An *escrow remote* (`escrowRemote`) is a domain without contracts (a Substrate
///         chain such as Asset Hub) where "the bridge" is an escrow account: a token return
///         there is the user's own extrinsic (an escrow transfer batched with a message
///         remark), so its sender is the user, and the committee attests only escrow-backed
///         messages. From such a domain any sender is accepted, but only UNLOCK.
///
///         Safety (docs/threats.md): `handle` accepts only calls from our Inbox carrying a message
///         whose sender is the registered bridge of its origin, or, from an escrow remote,
///         any sender but only UNLOCK (T14); zero or unregistered tokens, zero amounts and
///         malformed bodies are rejected (T15); a remote can unlock at most what was locked
///         towards that same remote (`locked`), so even a compromised remote domain - or a
///         compromised escrow route - cannot drain what other routes locked; the only effects
///         a message can have are a mint or an unlock - every admin function is owner-only
///         (T20). A rejected message reverts `handle`, which the Inbox records as failed and
///         lets anyone retry (e.g. once the owner registers a missing token pair).
///
///         Governance (`Governed`, issue #11): trusting a remote bridge (`setRemote` with a
///         non-zero bridge) and making a domain an escrow remote (`setEscrowRemote(d, true)`:
///         from then on ANY sender there can unlock what was locked towards it) add trust, so
///         they are announced (`announceRemote`, `announceEscrowRemote`) and enacted after
///         the change delay, within its window. Forgetting a remote and unmarking an escrow
///         remote only remove trust and are immediate. The devnet keeps a zero delay.
contract TokenBridge is IMessageRecipient, Governed {
    uint8 public constant ACTION_MINT = 1;
    uint8 public constant ACTION_UNLOCK = 2;
    uint8 public constant ACTION_REFUND = 3;
    uint256 internal constant BODY_SIZE = 128;

    Outbox public immutable outbox;
    Inbox public immutable inbox;
    uint32 public immutable localDomain;

    /// @notice The trusted bridge (32-byte id) on each remote domain; zero = none. For an
    ///         escrow remote it is the bridge (escrow) account there: the recipient of the
    ///         messages this bridge sends there (e.g. the committee's multisig on Asset Hub).
    mapping(uint32 => bytes32) public remoteBridge;
    /// @notice Whether a remote domain is an *escrow remote*: a chain without contracts (such
    ///         as Asset Hub) where tokens sent from here are held by the account
    ///         `remoteBridge[domain]`, and returned by a user's own extrinsic that transfers them
    ///         back into that escrow and posts the UNLOCK message in the same atomic batch
    ///         (`Utility.batch_all([Assets.transfer(..), System.remark_with_event(..)])`).
    ///         Such a message's sender is necessarily the user's account (the remark signer),
    ///         never a bridge contract, so from an escrow remote `handle` accepts any sender:
    ///         the committee attests only remarks backed by such an escrow transfer (of the
    ///         asset matching the message's token, for exactly its amount). In exchange:
    ///         - only ACTION_UNLOCK is accepted from it; a MINT reverts
    ///           `MintFromEscrowRemote` (no wrapped token here is backed by that escrow);
    ///         - unlocks stay capped by `locked[token][domain]`, what this bridge locked
    ///           towards that domain, so even a compromised escrow route (a committee signing
    ///           unbacked remarks) releases at most what was sent to that domain.
    mapping(uint32 => bool) public escrowRemote;
    /// @notice The home tokens an escrow remote wraps (Asset Hub: the asset minted for it).
    ///         A transfer to an escrow remote of any other token, or of more than a u128 (the
    ///         Substrate balance type), could never be delivered there: it reverts at dispatch
    ///         (`NotWrappedAtRemote`, `AmountAboveU128`) instead of locking tokens for nothing.
    mapping(uint32 => mapping(address => bool)) public remoteWraps;
    /// @notice Transfers sent to an escrow remote, by message id, until refunded: who sent
    ///         what. An escrow remote's escrow account (a committee multisig, acting only with
    ///         a threshold of its signatories) answers a transfer it can never deliver with a
    ///         REFUND naming the message id; the entry is deleted when paid, so a transfer is
    ///         refunded at most once, and only to its sender. (The remote's replay guard makes
    ///         delivery and refund of one message mutually exclusive there; entries of
    ///         delivered transfers stay, unused.)
    mapping(bytes32 => Refund) public refunds;

    /// @dev `amount` fits a uint128 (an escrow remote takes no more: `AmountAboveU128`), so
    ///      it shares a slot with `destination`: three slots per entry.
    struct Refund {
        address token;
        address sender;
        uint128 amount;
        uint32 destination;
    }

    /// @notice Whether a home token may be sent to a remote domain.
    mapping(address => mapping(uint32 => bool)) public homeTokenRoute;
    /// @notice Home tokens locked here per remote domain: what that domain can unlock.
    mapping(address => mapping(uint32 => uint256)) public locked;
    /// @notice The WrappedToken here for (home domain, home token).
    mapping(uint32 => mapping(bytes32 => address)) public wrappedTokenOf;

    struct Home {
        uint32 domain;
        bytes32 token;
    }

    /// @notice For a wrapped token here: its home domain and home token.
    mapping(address => Home) public homeOf;

    /// @dev Reentrancy guard in storage, not transient storage: the contracts are compiled for
    ///      shanghai too (a chain without EIP-1153). It moves between two non-zero values, as
    ///      OpenZeppelin's ReentrancyGuard does: 1 -> 2 -> 1 within a call costs one cold SLOAD
    ///      and a non-zero write, and setting the slot back to its value at the start of the
    ///      transaction earns a refund, so the guard costs ~2,300 gas per call, not the ~22,100 of
    ///      a zero -> non-zero write (whose refund the 1/5 cap would mostly forfeit). A revert
    ///      anywhere under the guard undoes its write with the rest, so it never stays locked.
    uint256 private constant NOT_ENTERED = 1;
    uint256 private constant ENTERED = 2;
    uint256 private reentrancyStatus = NOT_ENTERED;

    event RemoteAnnounced(uint32 indexed domain, bytes32 bridge, uint256 notBefore);
    event RemoteSet(uint32 indexed domain, bytes32 bridge);
    event EscrowRemoteAnnounced(uint32 indexed domain, uint256 notBefore);
    event EscrowRemoteSet(uint32 indexed domain, bool escrow);
    event HomeTokenRegistered(address indexed token, uint32 indexed remoteDomain);
    event WrappedTokenRegistered(
        uint32 indexed homeDomain, bytes32 indexed homeToken, address indexed wrapped
    );
    event TransferRemote(
        bytes32 indexed id,
        address indexed token,
        uint32 indexed destination,
        bytes32 recipient,
        uint256 amount
    );
    event TransferReceived(
        uint32 indexed origin, address indexed token, address indexed recipient, uint256 amount
    );
    event RemoteWrapsSet(uint32 indexed domain, address indexed token, bool wraps);
    event Refunded(
        uint32 indexed origin,
        bytes32 indexed id,
        address indexed sender,
        address token,
        uint256 amount,
        bytes32 reason
    );

    error NotInbox(address caller);
    error ZeroAddress();
    error Reentrancy();
    error DomainMismatch(uint32 localDomain, uint32 outboxDomain, uint32 inboxDomain);
    error DomainIsLocal(uint32 domain);
    error UnknownRemote(uint32 domain);
    error UnknownSender(uint32 origin, bytes32 sender);
    error MintFromEscrowRemote(uint32 origin);
    error NotAContract(address token);
    error NotOurWrappedToken(address wrapped);
    error AlreadyRegistered();
    error UnregisteredToken(bytes32 token, uint32 domain);
    error WrongDestination(uint32 destination, uint32 homeDomain);
    error ZeroAmount();
    error InvalidRecipient(bytes32 recipient);
    error MalformedBody(uint256 length);
    error UnknownAction(uint8 action);
    error InsufficientLocked(address token, uint32 domain, uint256 locked, uint256 amount);
    error TokenTransferFailed(address token);
    error NotWrappedAtRemote(address token, uint32 domain);
    error AmountAboveU128(uint256 amount);
    error RefundNotFromEscrow(uint32 origin, bytes32 sender);
    error UnknownRefund(bytes32 id);
    error RefundMismatch(bytes32 id, uint256 expected, uint256 amount);
    error RefundFromOtherRemote(bytes32 id, uint32 destination, uint32 origin);

    modifier nonReentrant() {
        if (reentrancyStatus == ENTERED) revert Reentrancy();
        reentrancyStatus = ENTERED;
        _;
        reentrancyStatus = NOT_ENTERED;
    }

    constructor(Outbox outbox_, Inbox inbox_, uint32 localDomain_, address owner_)
        Governed(owner_)
    {
        uint32 outboxDomain = outbox_.localDomain();
        uint32 inboxDomain = inbox_.localDomain();
        if (outboxDomain != localDomain_ || inboxDomain != localDomain_) {
            revert DomainMismatch(localDomain_, outboxDomain, inboxDomain);
        }
        outbox = outbox_;
        inbox = inbox_;
        localDomain = localDomain_;
    }

    // ------------------------------------------------------------------ administration

    /// @notice Announces that `setRemote(domain, bridge)` may trust `bridge` once the change
    ///         delay has passed (see `Governed`); replaces any announced before for `domain`.
    function announceRemote(uint32 domain, bytes32 bridge) external onlyOwner {
        if (domain == localDomain) revert DomainIsLocal(domain);
        uint256 notBefore = _announce(remoteChangeKey(domain), bridge);
        emit RemoteAnnounced(domain, bridge, notBefore);
    }

    /// @notice Trusts `bridge` as the TokenBridge of `domain` (announced before); zero forgets
    ///         it at once, unannounced (it only removes trust).
    function setRemote(uint32 domain, bytes32 bridge) external onlyOwner {
        if (domain == localDomain) revert DomainIsLocal(domain);
        if (bridge != bytes32(0)) _enact(remoteChangeKey(domain), bridge);
        remoteBridge[domain] = bridge;
        emit RemoteSet(domain, bridge);
    }

    /// @notice Announces that `setEscrowRemote(domain, true)` may follow after the delay.
    function announceEscrowRemote(uint32 domain) external onlyOwner {
        if (domain == localDomain) revert DomainIsLocal(domain);
        uint256 notBefore = _announce(escrowChangeKey(domain), bytes32(uint256(1)));
        emit EscrowRemoteAnnounced(domain, notBefore);
    }

    /// @notice Marks `domain` as an escrow remote (announced before), or not (at once): see
    ///         `escrowRemote`. Its `remoteBridge` is then the escrow account there, set with
    ///         `setRemote`.
    function setEscrowRemote(uint32 domain, bool escrow) external onlyOwner {
        if (domain == localDomain) revert DomainIsLocal(domain);
        if (escrow) _enact(escrowChangeKey(domain), bytes32(uint256(1)));
        escrowRemote[domain] = escrow;
        emit EscrowRemoteSet(domain, escrow);
    }

    /// @notice The `pendingChange` key of a change of `domain`'s remote bridge.
    function remoteChangeKey(uint32 domain) public pure returns (bytes32) {
        return keccak256(abi.encode("passerelle.bridge.remote", domain));
    }

    /// @notice The `pendingChange` key of making `domain` an escrow remote.
    function escrowChangeKey(uint32 domain) public pure returns (bytes32) {
        return keccak256(abi.encode("passerelle.bridge.escrow", domain));
    }

    /// @notice Declares that the escrow remote `domain` wraps (`wraps`) the home `token`:
    ///         only such tokens may be sent there (see `remoteWraps`).
    function setRemoteWraps(uint32 domain, address token, bool wraps) external onlyOwner {
        if (domain == localDomain) revert DomainIsLocal(domain);
        remoteWraps[domain][token] = wraps;
        emit RemoteWrapsSet(domain, token, wraps);
    }

    /// @notice Lets `token` (an ERC-20 whose home is this chain) be sent to `remoteDomain`.
    function registerHomeToken(address token, uint32 remoteDomain) external onlyOwner {
        if (remoteDomain == localDomain) revert DomainIsLocal(remoteDomain);
        // T15: an address without code "succeeds" every transferFrom while locking nothing.
        if (token.code.length == 0) revert NotAContract(token);
        if (homeOf[token].token != bytes32(0)) revert AlreadyRegistered();
        homeTokenRoute[token][remoteDomain] = true;
        emit HomeTokenRegistered(token, remoteDomain);
    }

    /// @notice Pairs `wrapped` (a WrappedToken minted only by this bridge) with `homeToken` of
    ///         `homeDomain`. A pairing is permanent: re-pointing it would strand holders.
    function registerWrappedToken(uint32 homeDomain, bytes32 homeToken, address wrapped)
        external
        onlyOwner
    {
        if (homeDomain == localDomain) revert DomainIsLocal(homeDomain);
        if (homeToken == bytes32(0) || wrapped == address(0)) revert ZeroAddress();
        if (wrapped.code.length == 0) revert NotAContract(wrapped);
        if (WrappedToken(wrapped).bridge() != address(this)) revert NotOurWrappedToken(wrapped);
        if (wrappedTokenOf[homeDomain][homeToken] != address(0)) revert AlreadyRegistered();
        if (homeOf[wrapped].token != bytes32(0)) revert AlreadyRegistered();
        wrappedTokenOf[homeDomain][homeToken] = wrapped;
        homeOf[wrapped] = Home(homeDomain, homeToken);
        emit WrappedTokenRegistered(homeDomain, homeToken, wrapped);
    }

    // ------------------------------------------------------------------ transfers

    /// @notice Sends `amount` of `token` to `recipient` on `destination`: locks a home token
    ///         (needs an allowance; the amount sent is what the bridge actually received) or
    ///         burns a wrapped one (which can only go back to its home domain).
    /// @return id The Passerelle message id.
    function transferRemote(address token, uint256 amount, uint32 destination, bytes32 recipient)
        external
        nonReentrant
        returns (bytes32 id)
    {
        id = _transferRemote(token, amount, destination, recipient, 0);
    }

    /// @notice `transferRemote`, paying the Outbox's Paymaster for `gasAmount` gas delivering
    ///         it in the same transaction: all of `msg.value` goes to `Outbox.dispatchAndPay`,
    ///         which keeps the quote and refunds the rest to the caller (never to this bridge,
    ///         which has no way to send ether on). Reverts as a whole if the payment is refused.
    function transferRemoteAndPay(
        address token,
        uint256 amount,
        uint32 destination,
        bytes32 recipient,
        uint256 gasAmount
    ) external payable nonReentrant returns (bytes32 id) {
        id = _transferRemote(token, amount, destination, recipient, gasAmount);
    }

    /// @dev Both entry points; `gasAmount` zero (and so no value: `transferRemote` is not
    ///      payable, and a paid one must name the gas it buys) dispatches unpaid.
    function _transferRemote(
        address token,
        uint256 amount,
        uint32 destination,
        bytes32 recipient,
        uint256 gasAmount
    ) private returns (bytes32 id) {
        if (amount == 0) revert ZeroAmount();
        if (recipient == bytes32(0)) revert InvalidRecipient(recipient);
        bytes32 remote = remoteBridge[destination];
        if (remote == bytes32(0)) revert UnknownRemote(destination);
        bool escrow = escrowRemote[destination];
        if (escrow) {
            // Refuse now what the remote could never deliver: the tokens would stay locked.
            if (!remoteWraps[destination][token]) revert NotWrappedAtRemote(token, destination);
            if (amount > type(uint128).max) revert AmountAboveU128(amount);
        }
        bytes memory body;
        Home memory home = homeOf[token];
        if (home.token != bytes32(0)) {
            if (destination != home.domain) revert WrongDestination(destination, home.domain);
            WrappedToken(token).burn(msg.sender, amount);
            body = abi.encode(ACTION_UNLOCK, home.token, amount, recipient);
        } else if (homeTokenRoute[token][destination]) {
            // Credit what arrived, not what was asked (fee-on-transfer tokens, T15).
            uint256 before = _balanceOf(token);
            _call(token, abi.encodeWithSelector(0x23b872dd, msg.sender, address(this), amount));
            amount = _balanceOf(token) - before;
            if (amount == 0) revert ZeroAmount();
            locked[token][destination] += amount;
            body = abi.encode(ACTION_MINT, bytes32(uint256(uint160(token))), amount, recipient);
        } else {
            revert UnregisteredToken(bytes32(uint256(uint160(token))), destination);
        }
        // Checked again on what arrived (a token may credit more than was asked).
        if (escrow && amount > type(uint128).max) revert AmountAboveU128(amount);
        id = gasAmount == 0 && msg.value == 0
            ? outbox.dispatch(destination, remote, body)
            : outbox.dispatchAndPay{value: msg.value}(destination, remote, body, gasAmount, msg.sender);
        // Only a locked home token can be refunded (a wrapped one never goes to an escrow
        // remote: its home is a domain with a bridge contract). The remote it went to is
        // recorded: only that remote's escrow account may refund it (another escrow remote
        // cannot know whether this one delivered it).
        if (escrow && home.token == bytes32(0)) {
            refunds[id] = Refund(token, msg.sender, uint128(amount), destination);
        }
        emit TransferRemote(id, token, destination, recipient, amount);
    }

    /// @notice Delivery from the Inbox; see the contract comment for what is accepted.
    function handle(uint32 origin, bytes32 sender, bytes calldata body) external nonReentrant {
        if (msg.sender != address(inbox)) revert NotInbox(msg.sender);
        bytes32 remote = remoteBridge[origin];
        if (body.length == BODY_SIZE && uint256(bytes32(body[0:32])) == ACTION_REFUND) {
            _refund(origin, sender, remote, body);
            return;
        }
        // T14: the registered bridge, or from an escrow remote any sender (UNLOCK only, below).
        if (remote == bytes32(0) || (sender != remote && !escrowRemote[origin])) {
            revert UnknownSender(origin, sender);
        }
        // Exactly one encoding per transfer: no trailing bytes (T10); abi.decode also rejects
        // an action that does not fit a uint8.
        if (body.length != BODY_SIZE) revert MalformedBody(body.length);
        (uint8 action, bytes32 homeToken, uint256 amount, bytes32 recipientId) =
            abi.decode(body, (uint8, bytes32, uint256, bytes32));
        if (amount == 0) revert ZeroAmount();
        if (recipientId == bytes32(0) || uint256(recipientId) >> 160 != 0) {
            revert InvalidRecipient(recipientId);
        }
        address recipient = address(uint160(uint256(recipientId)));
        address token;
        if (action == ACTION_MINT) {
            // Nothing here is backed by an escrow account: it can only return what we locked.
            if (escrowRemote[origin]) revert MintFromEscrowRemote(origin);
            token = wrappedTokenOf[origin][homeToken];
            if (token == address(0)) revert UnregisteredToken(homeToken, origin);
            WrappedToken(token).mint(recipient, amount);
        } else if (action == ACTION_UNLOCK) {
            if (uint256(homeToken) >> 160 != 0) revert UnregisteredToken(homeToken, origin);
            token = address(uint160(uint256(homeToken)));
            // An unregistered or zero token has nothing locked, so it fails here too (T15).
            uint256 available = locked[token][origin];
            if (available < amount) revert InsufficientLocked(token, origin, available, amount);
            unchecked {
                locked[token][origin] = available - amount;
            }
            _call(token, abi.encodeWithSelector(0xa9059cbb, recipient, amount));
        } else {
            revert UnknownAction(action);
        }
        emit TransferReceived(origin, token, recipient, amount);
    }

    // ------------------------------------------------------------------ internals

    /// @dev A REFUND: only from an escrow remote's own escrow account (a remark the committee's
    ///      multisig itself made, never a user's), only for a transfer recorded in `refunds`
    ///      as sent to that same remote, for exactly its amount, paid once to its sender and
    ///      within what is locked there.
    function _refund(uint32 origin, bytes32 sender, bytes32 remote, bytes calldata body)
        internal
    {
        if (!escrowRemote[origin] || remote == bytes32(0) || sender != remote) {
            revert RefundNotFromEscrow(origin, sender);
        }
        (, bytes32 id, uint256 amount, bytes32 reason) =
            abi.decode(body, (uint8, bytes32, uint256, bytes32));
        Refund memory entry = refunds[id];
        if (entry.sender == address(0)) revert UnknownRefund(id);
        if (entry.destination != origin) {
            revert RefundFromOtherRemote(id, entry.destination, origin);
        }
        if (entry.amount != amount) revert RefundMismatch(id, entry.amount, amount);
        delete refunds[id];
        uint256 available = locked[entry.token][origin];
        if (available < amount) {
            revert InsufficientLocked(entry.token, origin, available, amount);
        }
        unchecked {
            locked[entry.token][origin] = available - amount;
        }
        _call(entry.token, abi.encodeWithSelector(0xa9059cbb, entry.sender, amount));
        emit Refunded(origin, id, entry.sender, entry.token, amount, reason);
    }

    function _balanceOf(address token) internal view returns (uint256) {
        (bool ok, bytes memory data) =
            token.staticcall(abi.encodeWithSelector(0x70a08231, address(this)));
        if (!ok || data.length < 32) revert TokenTransferFailed(token);
        return abi.decode(data, (uint256));
    }

    /// @dev transfer/transferFrom that also accepts tokens returning nothing (USDT-style) but
    ///      not a `false` return or an address without code.
    function _call(address token, bytes memory data) internal {
        if (token.code.length == 0) revert NotAContract(token);
        (bool ok, bytes memory returned) = token.call(data);
        if (!ok || (returned.length != 0 && (returned.length < 32 || !abi.decode(returned, (bool)))))
        {
            revert TokenTransferFailed(token);
        }
    }
}
