// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {Owned} from "./Owned.sol";

/// @title Paymaster: senders pay, on the origin, for their message's delivery gas
/// @notice Delivery costs the relayer gas on the destination; this contract lets a sender pay
///         for it in the origin's native currency when dispatching (docs/design.md, "Paid
///         delivery"; Hyperlane's interchain gas paymaster is the model). Per destination
///         domain an oracle sets two numbers: the destination's gas price (in its smallest
///         native unit per gas) and the exchange rate destination-native -> origin-native,
///         scaled by `RATE_SCALE`. Then
///             quote(destination, gas) = gas * gasPrice * exchangeRate / RATE_SCALE
///         in origin wei. A payment is bound to a message id AND a destination domain
///         (`paid(id, destination)`), so paying for the wrong id or the wrong destination buys
///         nothing for the real message - and cannot spoil anyone else's payment either.
///         Payments accumulate (a top-up adds gas); the collected fees go to the `beneficiary`
///         the owner names (the relayer operator), by `claim()`.
///
///         How much gas a message must buy is on chain too (Hyperlane's `gasOverhead`): per
///         destination the oracle sets a fixed overhead and a price per body byte, so
///             deliveryGasFor(destination, bodyLength) = gasOverhead + gasPerByte * bodyLength
///         and `quoteDispatch(destination, bodyLength)` prices exactly that. The sender's
///         client and the relayer's "paid" policy both read these numbers here, so a relayer
///         that needs more raises them here (for messages sent from then on) instead of in its
///         own config, where it would strand the messages its users paid under the old value.
/// @dev The relayer reads `paid(id, destination)`, `rates` and `deliveryGas` at the origin's
///      final block and delivers under a "paid" policy only if the gas bought covers
///      `deliveryGasFor(destination, the message's real body length)` (relayer/payments.py):
///      a sender who pays for a shorter body than it sent bought too little, and its message
///      waits unpaid until topped up. Nothing on the destination checks payments: paying is
///      between the sender and the relayer that wants its gas back.
contract Paymaster is Owned {
    /// @notice Fixed-point scale of `exchangeRate` (1e10 = one destination unit per origin unit).
    uint256 public constant RATE_SCALE = 1e10;

    /// @notice Gas forwarded with an overpayment refund. Enough for a plain account or a
    ///         simple wallet's receive(); a refundTo that needs more (or reverts) does not
    ///         block the payment: its change is kept for it (`refunds`, `withdrawRefund`).
    uint256 public constant REFUND_GAS = 30_000;

    /// @notice Largest `gasOverhead` the oracle may set: a 30M-gas block. More is a typo or a
    ///         compromised oracle pricing every delivery out of reach (no delivery can use it).
    uint256 public constant MAX_GAS_OVERHEAD = 30_000_000;

    /// @notice Largest `gasPerByte`: 25x EIP-7623's 40-gas calldata floor per byte, room for
    ///         a destination that also copies and hashes the body, far below an absurd price.
    uint256 public constant MAX_GAS_PER_BYTE = 1_000;

    /// @notice Largest body a message can have (Outbox.MAX_BODY_BYTES): bounds
    ///         `deliveryGasFor` at MAX_GAS_OVERHEAD + MAX_GAS_PER_BYTE * 64 KiB (< 2^27).
    uint256 public constant MAX_BODY_BYTES = 64 * 1024;

    /// @notice What one destination's delivery gas costs; both zero = not priced (quote reverts).
    struct GasRate {
        uint128 gasPrice;
        uint128 exchangeRate;
    }

    /// @notice The destination gas one message to a destination must buy, as set by the
    ///         oracle: `gasOverhead + gasPerByte * bodyLength`; overhead zero = not set.
    struct DeliveryGas {
        uint64 gasOverhead;
        uint64 gasPerByte;
    }

    /// @notice The total paid for one (message id, destination): origin wei and gas bought.
    struct Payment {
        uint256 amount;
        uint256 gas;
    }

    /// @notice The account allowed to set gas rates (named by the owner; zero = nobody).
    address public oracle;

    /// @notice Where `claim()` sends the collected fees (named by the owner).
    address public beneficiary;

    /// @notice Destination domain => its gas rate.
    mapping(uint32 => GasRate) public rates;

    /// @notice Destination domain => the gas one message's delivery there must buy.
    mapping(uint32 => DeliveryGas) public deliveryGas;

    /// @notice Overpayments whose refund call failed, kept for their refundTo to withdraw.
    mapping(address => uint256) public refunds;

    /// @notice Sum of `refunds`: wei in this contract that is not fees.
    uint256 public refundsOwed;

    mapping(bytes32 => mapping(uint32 => Payment)) internal payments;

    event OracleSet(address indexed oracle);
    event BeneficiarySet(address indexed beneficiary);
    event GasRateSet(uint32 indexed destination, uint128 gasPrice, uint128 exchangeRate);
    event DeliveryGasSet(uint32 indexed destination, uint64 gasOverhead, uint64 gasPerByte);
    /// @notice One payment (or top-up) for message `id` to `destination`: `gasAmount` gas for
    ///         `payment` wei (the quote; any change was refunded).
    event GasPayment(
        bytes32 indexed id,
        uint32 indexed destination,
        uint256 gasAmount,
        uint256 payment,
        address indexed payer
    );
    event RefundHeld(address indexed refundTo, uint256 amount);
    event RefundWithdrawn(address indexed refundTo, uint256 amount);
    event Claimed(address indexed beneficiary, uint256 amount);

    error NotOracle(address caller);
    error ZeroAddress();
    error ZeroRate(uint32 destination);
    error NoRate(uint32 destination);
    error ZeroGas();
    error QuoteOverflow(uint32 destination, uint256 gasAmount);
    error DeliveryGasOutOfRange(uint32 destination, uint64 gasOverhead, uint64 gasPerByte);
    error NoDeliveryGas(uint32 destination);
    error BodyTooLarge(uint256 size, uint256 maximum);
    error Underpaid(uint256 required, uint256 sent);
    error NothingToWithdraw();
    error LengthMismatch();
    error TransferFailed(address to, uint256 amount);

    /// @param owner_ who names the oracle and the beneficiary (two-step `Owned`).
    /// @param beneficiary_ where fees go until the owner names another.
    constructor(address owner_, address beneficiary_) Owned(owner_) {
        if (beneficiary_ == address(0)) revert ZeroAddress();
        beneficiary = beneficiary_;
        emit BeneficiarySet(beneficiary_);
    }

    // ------------------------------------------------------------------ governance

    /// @notice Names the account that sets gas rates (zero: nobody until another is named).
    function setOracle(address oracle_) external onlyOwner {
        oracle = oracle_;
        emit OracleSet(oracle_);
    }

    /// @notice Names where `claim()` sends fees.
    function setBeneficiary(address beneficiary_) external onlyOwner {
        if (beneficiary_ == address(0)) revert ZeroAddress();
        beneficiary = beneficiary_;
        emit BeneficiarySet(beneficiary_);
    }

    /// @notice Sets `destination`'s gas price and exchange rate (the oracle only). A zero in
    ///         either is refused: it would price every delivery there at nothing, so anyone
    ///         could have the relayer deliver for free under a "paid" policy.
    function setGasRate(uint32 destination, uint128 gasPrice, uint128 exchangeRate)
        external
        onlyOracle
    {
        _setGasRate(destination, gasPrice, exchangeRate);
    }

    /// @notice `setGasRate` for several destinations in one call (same rules, all or none).
    function setGasRates(
        uint32[] calldata destinations,
        uint128[] calldata gasPrices,
        uint128[] calldata exchangeRates
    ) external onlyOracle {
        uint256 count = _sameLength(destinations.length, gasPrices.length, exchangeRates.length);
        for (uint256 i = 0; i < count; ++i) {
            _setGasRate(destinations[i], gasPrices[i], exchangeRates[i]);
        }
    }

    /// @notice Sets, per destination, the gas one message's delivery must buy there:
    ///         `gasOverheads[i] + gasPerByte[i] * bodyLength` (the oracle only; all or none).
    ///         The overhead must be in 1..MAX_GAS_OVERHEAD (zero would let a message buy its
    ///         delivery for a few gas per byte) and the per-byte price at most
    ///         MAX_GAS_PER_BYTE: an oracle cannot price deliveries beyond any block. A message
    ///         paid before a raise keeps what it bought; under the relayer's "paid" policy it
    ///         then waits until topped up (`pay` again for the same id adds gas).
    function setDeliveryGas(
        uint32[] calldata destinations,
        uint64[] calldata gasOverheads,
        uint64[] calldata gasPerByte
    ) external onlyOracle {
        uint256 count = _sameLength(destinations.length, gasOverheads.length, gasPerByte.length);
        for (uint256 i = 0; i < count; ++i) {
            uint32 destination = destinations[i];
            uint64 overhead = gasOverheads[i];
            uint64 perByte = gasPerByte[i];
            if (overhead == 0 || overhead > MAX_GAS_OVERHEAD || perByte > MAX_GAS_PER_BYTE) {
                revert DeliveryGasOutOfRange(destination, overhead, perByte);
            }
            deliveryGas[destination] = DeliveryGas(overhead, perByte);
            emit DeliveryGasSet(destination, overhead, perByte);
        }
    }

    // ------------------------------------------------------------------ paying

    /// @notice The destination gas a message with a `bodyLength`-byte body must buy for its
    ///         delivery to `destination`. Reverts `NoDeliveryGas` if the oracle set none
    ///         there, and `BodyTooLarge` past MAX_BODY_BYTES (no such message exists, and the
    ///         bound keeps the product far from overflowing).
    function deliveryGasFor(uint32 destination, uint256 bodyLength)
        public
        view
        returns (uint256)
    {
        if (bodyLength > MAX_BODY_BYTES) revert BodyTooLarge(bodyLength, MAX_BODY_BYTES);
        DeliveryGas memory needed = deliveryGas[destination];
        if (needed.gasOverhead == 0) revert NoDeliveryGas(destination);
        return uint256(needed.gasOverhead) + uint256(needed.gasPerByte) * bodyLength;
    }

    /// @notice What delivering a `bodyLength`-byte message to `destination` costs now: the
    ///         gas it must buy (`deliveryGasFor`) and its price in origin wei (`quote`). Pay
    ///         `fee` for `gas` (`Outbox.dispatchAndPay` or `pay`) with the message's real body
    ///         length: the relayer checks the gas bought against that length, not the one
    ///         given here.
    function quoteDispatch(uint32 destination, uint256 bodyLength)
        external
        view
        returns (uint256 fee, uint256 gas)
    {
        gas = deliveryGasFor(destination, bodyLength);
        fee = quote(destination, gas);
    }

    /// @notice What `gasAmount` gas on `destination` costs now, in origin wei (rounded up, so
    ///         a quote is never a wei short of the gas it buys). Reverts `NoRate` for an
    ///         unpriced destination and `QuoteOverflow` rather than wrap to a small number.
    function quote(uint32 destination, uint256 gasAmount) public view returns (uint256) {
        GasRate memory rate = rates[destination];
        if (rate.gasPrice == 0) revert NoRate(destination);
        // gasPrice * exchangeRate < 2**256 (two uint128s); only gasAmount can overflow it.
        uint256 perGas = uint256(rate.gasPrice) * uint256(rate.exchangeRate);
        if (gasAmount > type(uint256).max / perGas) revert QuoteOverflow(destination, gasAmount);
        uint256 scaled = gasAmount * perGas;
        return scaled / RATE_SCALE + (scaled % RATE_SCALE == 0 ? 0 : 1);
    }

    /// @notice Pays for `gasAmount` gas delivering message `id` to `destination`: exactly
    ///         the quote is kept, anything above it is refunded to `refundTo` in this call
    ///         (or held for it to withdraw if the refund call fails). Refuses less than the
    ///         quote. Paying again for the same (id, destination) adds to what was paid.
    function pay(bytes32 id, uint32 destination, uint256 gasAmount, address refundTo)
        external
        payable
    {
        if (gasAmount == 0) revert ZeroGas();
        if (refundTo == address(0)) revert ZeroAddress();
        uint256 required = quote(destination, gasAmount);
        if (msg.value < required) revert Underpaid(required, msg.value);
        Payment storage payment = payments[id][destination];
        payment.amount += required;
        payment.gas += gasAmount;
        emit GasPayment(id, destination, gasAmount, required, msg.sender);
        uint256 change = msg.value - required;
        if (change != 0) _refund(refundTo, change);
    }

    /// @notice What has been paid for message `id` to `destination`: wei and gas bought.
    function paid(bytes32 id, uint32 destination)
        external
        view
        returns (uint256 amount, uint256 gas)
    {
        Payment storage payment = payments[id][destination];
        return (payment.amount, payment.gas);
    }

    /// @notice Sends the caller the change held for it after a refund call failed.
    function withdrawRefund() external {
        uint256 amount = refunds[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        refunds[msg.sender] = 0;
        refundsOwed -= amount;
        emit RefundWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @notice Sends every collected fee to the beneficiary. Anyone may call it: the money
    ///         can only go to the account the owner named. Held refunds are not fees.
    function claim() external {
        uint256 amount = address(this).balance - refundsOwed;
        if (amount == 0) revert NothingToWithdraw();
        address to = beneficiary;
        emit Claimed(to, amount);
        _send(to, amount);
    }

    // ------------------------------------------------------------------ internals

    modifier onlyOracle() {
        if (msg.sender != oracle) revert NotOracle(msg.sender);
        _;
    }

    /// @dev The common length of an oracle call's parallel arrays; LengthMismatch otherwise.
    function _sameLength(uint256 a, uint256 b, uint256 c) private pure returns (uint256) {
        if (b != a || c != a) revert LengthMismatch();
        return a;
    }

    function _setGasRate(uint32 destination, uint128 gasPrice, uint128 exchangeRate) private {
        if (gasPrice == 0 || exchangeRate == 0) revert ZeroRate(destination);
        rates[destination] = GasRate(gasPrice, exchangeRate);
        emit GasRateSet(destination, gasPrice, exchangeRate);
    }

    /// @dev The refund is a call with `REFUND_GAS` whose return data is never copied, so a
    ///      refundTo can neither make the payment revert (nor run it out of gas, nor bomb it
    ///      with return data): if the call fails the change is held for it instead. State is
    ///      final before the call, so re-entering `pay` or `claim` from it finds nothing extra.
    function _refund(address refundTo, uint256 amount) private {
        bool ok;
        uint256 stipend = REFUND_GAS;
        assembly ("memory-safe") {
            ok := call(stipend, refundTo, amount, 0, 0, 0, 0)
        }
        if (!ok) {
            refunds[refundTo] += amount;
            refundsOwed += amount;
            emit RefundHeld(refundTo, amount);
        }
    }

    /// @dev A full-gas transfer that reverts the whole call if it fails (the caller chose the
    ///      recipient: its own withdrawal, or the owner's beneficiary).
    function _send(address to, uint256 amount) private {
        bool ok;
        assembly ("memory-safe") {
            ok := call(gas(), to, amount, 0, 0, 0, 0)
        }
        if (!ok) revert TransferFailed(to, amount);
    }
}
