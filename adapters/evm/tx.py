"""Sending transactions from one key: nonces, EIP-1559 (or legacy) fees, capped escalation.

The failure modes this avoids, each reported by operators of other relayers: a nonce burned by a
failed broadcast (Hermes #3547), a local nonce drifting above the chain's (OpenZeppelin relayer
#818), a transaction stuck forever behind a fee spike (#808), "replacement transaction
underpriced" (Hyperlane #2924).

- The next nonce is only advanced after the node accepted the broadcast; any broadcast error
  re-syncs it from ``eth_getTransactionCount(…, "pending")``.
- Fees are EIP-1559: ``maxFeePerGas = 2 × baseFee + tip``, never above ``fee_cap``.
  With ``fee_model="legacy"`` (chains without EIP-1559: BSC, many sidechains and L2s) the
  transaction is type 0 with ``gasPrice = eth_gasPrice``, never above ``fee_cap``; it is kept in
  both fee fields of :class:`SentTx` (a legacy price is its own max fee and its own tip, which
  is how EIP-1559 reads a legacy transaction), so everything downstream reads one shape.
- A transaction not mined within ``escalate_after`` seconds is replaced (same nonce) with fees
  raised by at least 12.5 % (the replacement rule of geth's pool), up to ``fee_cap``; every
  hash sent for the nonce is watched, whichever is mined wins. A legacy ``gasPrice`` is raised
  by the same rule.

The engine holds no key. It hands each transaction to a :class:`TransactionSigner`
(:class:`relayer.signer.Signer`: a key in this process, or a remote signer) through
:func:`adapters.signing.call_signer` (bounded in time), and broadcasts the answer only once
:func:`check_signed_transaction` has shown it to be exactly that transaction, signed by the
engine's own address: a signer answering with another key's signature, or with another
transaction (another nonce, recipient, value, fee), gets nothing broadcast and nothing recorded
(:class:`TxNotSigned`, a failed RPC to the caller; the nonce is not consumed). A fee bump
the signer will not sign leaves the transaction at its fees, with one warning per transaction
(not per attempt: a signer's fee policy refuses every bump alike); every such failure also
counts in ``passerelle_signing_errors_total`` (:func:`adapters.signing.signer_health`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, Protocol, get_args

import trio

from adapters.errors import AdapterError
from adapters.rpc import JsonRpcClient, MalformedAnswer, RpcError
from adapters.signing import SignerError, call_signer
from adapters.text import quoted
from light_clients.committee import recover_signer
from light_clients.errors import DecodeError, VerificationError
from light_clients.ethereum import rlp
from light_clients.ethereum.receipt import Log
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_loose_uint, to_hex

log = logging.getLogger("passerelle.tx")

GWEI = 10**9
REPLACEMENT_BUMP_PERCENT = 125  # at least +12.5 % to replace, per geth's txpool; we use +25 %


BroadcastHook = Callable[["SentTx", bytes], Awaitable[None]]

FeeModel = Literal["eip1559", "legacy"]
"""How a :class:`TxEngine` prices gas: EIP-1559 (type 2, ``maxFeePerGas`` and
``maxPriorityFeePerGas``) or legacy (type 0, one ``gasPrice`` from ``eth_gasPrice``)."""
FEE_MODELS: tuple[FeeModel, ...] = get_args(FeeModel)


class TxError(AdapterError):
    """A transaction could not be sent or was not mined; str() says why."""


class TxNotSigned(TxError):
    """The signer refused, did not answer in time, or answered with something other than the
    transaction asked, signed by the engine's address: nothing was broadcast, the nonce is not
    consumed, and the same call may succeed later."""


class TxReverted(TxError):
    """The transaction was mined but reverted (status 0). ``block_hash`` is the receipt's
    ``blockHash`` (None if the node's receipt has none): :meth:`TxEngine.receipt` holds it
    against the chain's block at ``block_number`` before believing the revert."""

    def __init__(
        self, tx_hash: bytes, block_number: int, gas_used: int, block_hash: bytes | None = None
    ) -> None:
        super().__init__(f"transaction 0x{tx_hash.hex()} reverted in block {block_number}")
        self.tx_hash, self.block_number, self.gas_used = tx_hash, block_number, gas_used
        self.block_hash = block_hash


@dataclass
class SentTx:
    """A transaction in flight: every hash sent for its nonce, latest fees first.

    A legacy transaction (``fee_model="legacy"``) carries its ``gasPrice`` in both
    ``max_fee`` and ``priority_fee``."""

    nonce: int
    to: bytes
    data: bytes
    gas: int
    max_fee: int
    priority_fee: int
    hashes: list[bytes] = field(default_factory=list)
    sent_at: float = 0.0
    fee_model: FeeModel = "eip1559"
    value: int = 0
    """Wei the transaction carries; a replacement carries the same (it is the same payment)."""
    bump_refused: bool = field(default=False, repr=False, compare=False)
    """The signer refused to sign a fee bump of it once already (warned once, not again)."""

    @property
    def gas_price(self) -> int:
        """The highest price per gas the transaction may pay (a legacy ``gasPrice``)."""
        return self.max_fee


@dataclass(frozen=True)
class MinedTx:
    """A mined transaction and what it cost."""

    hash: bytes
    nonce: int
    block_number: int
    gas_used: int
    effective_gas_price: int
    logs: list[Log]
    """The receipt's logs, parsed (:func:`parse_receipt`)."""
    fee_model: FeeModel = "eip1559"
    """How the sent transaction was priced (from :class:`SentTx`; a receipt alone has -1 for
    the nonce and this default, see :func:`parse_receipt`)."""
    block_hash: bytes | None = None
    """The receipt's ``blockHash`` (None if the node's receipt has none): what
    :meth:`TxEngine.receipt` holds against the chain's block at ``block_number``."""

    @property
    def fee_paid(self) -> int:
        """Wei paid for gas."""
        return self.gas_used * self.effective_gas_price


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_WORD = re.compile(r"0x[0-9a-fA-F]{64}")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_MAX_TOPICS = 4  # LOG0..LOG4


def _malformed(what: str, value: Any) -> MalformedAnswer:
    return MalformedAnswer(f"node returned a malformed {what}: {quoted(value)}")


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def parse_quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity (``"0x1a"``, leading zeros tolerated) as an int;
    :class:`MalformedAnswer` for anything else (numbers, booleans, decimal or signed strings,
    more than 64 hex digits): :func:`light_clients.hexstr.parse_loose_uint`, with the
    adapters' error."""
    try:
        return parse_loose_uint(value, what, 32)
    except DecodeError:
        raise _malformed(what, value) from None


def _field(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise MalformedAnswer(f"node returned a {what} without {key!r}")
    return obj[key]


def parse_base_fee(block: Any) -> int:
    """The ``baseFeePerGas`` of an ``eth_getBlockByNumber`` answer (0 for a pre-London block
    that has none); :class:`MalformedAnswer` if the answer is not a block object."""
    if not isinstance(block, dict):
        raise _malformed("block", block)
    if "baseFeePerGas" not in block:
        return 0
    return parse_quantity(block["baseFeePerGas"], "block baseFeePerGas")


def _parse_log(entry: Any) -> Log:
    """One receipt log as a typed :class:`~light_clients.ethereum.receipt.Log` (20-byte
    address, 32-byte topics, data), every field checked: no code downstream indexes JSON."""
    if not isinstance(entry, dict):
        raise _malformed("receipt log", entry)
    address = _field(entry, "address", "receipt log")
    topics = _field(entry, "topics", "receipt log")
    data = _field(entry, "data", "receipt log")
    if not _matches(_ADDRESS, address):
        raise _malformed("log address", address)
    if not isinstance(topics, list) or len(topics) > _MAX_TOPICS:
        raise _malformed("log topics", topics)
    for topic in topics:
        if not _matches(_WORD, topic):
            raise _malformed("log topic", topic)
    if not _matches(_DATA, data):
        raise _malformed("log data", data)
    return Log(
        bytes.fromhex(address[2:]),
        tuple(bytes.fromhex(topic[2:]) for topic in topics),
        bytes.fromhex(data[2:]),
    )


def parse_receipt(tx_hash: bytes, answer: Any) -> MinedTx | None:
    """An ``eth_getTransactionReceipt`` answer for ``tx_hash``: None if not mined, the
    :class:`MinedTx` (nonce -1: a receipt does not carry it) if it succeeded, :class:`TxReverted`
    if it reverted, and :class:`MalformedAnswer` for any other shape — including a receipt of
    another transaction, and one without ``status`` (it could not say whether it reverted).
    """
    if answer is None:
        return None
    if not isinstance(answer, dict):
        raise _malformed("receipt", answer)
    answered_hash = _field(answer, "transactionHash", "receipt")
    if not isinstance(answered_hash, str) or answered_hash.lower() != to_hex(tx_hash):
        raise _malformed(f"receipt for 0x{tx_hash.hex()} (transactionHash)", answered_hash)
    block_number = parse_quantity(_field(answer, "blockNumber", "receipt"), "receipt blockNumber")
    gas_used = parse_quantity(_field(answer, "gasUsed", "receipt"), "receipt gasUsed")
    # Optional: pre-London nodes do not report it; it only feeds the fee statistics.
    price = parse_quantity(answer.get("effectiveGasPrice", "0x0"), "receipt effectiveGasPrice")
    status = parse_quantity(_field(answer, "status", "receipt"), "receipt status")
    if status not in (0, 1):
        raise _malformed("receipt status", answer["status"])
    logs = answer.get("logs", [])
    if not isinstance(logs, list):
        raise _malformed("receipt logs", logs)
    block_hash = answer.get("blockHash")
    if block_hash is not None and not _matches(_WORD, block_hash):
        raise _malformed("receipt blockHash", block_hash)
    mined = MinedTx(
        tx_hash,
        -1,
        block_number,
        gas_used,
        price,
        [_parse_log(e) for e in logs],
        block_hash=None if block_hash is None else bytes.fromhex(block_hash[2:]),
    )
    if status == 0:
        raise TxReverted(tx_hash, block_number, gas_used, mined.block_hash)
    return mined


class TransactionSigner(Protocol):
    """What signs a :class:`TxEngine`'s transactions: :class:`relayer.signer.Signer` is one
    (its contract, in relayer/signer.py, is what a remote implementation must keep)."""

    @property
    def address(self) -> bytes:
        """The 20-byte address every transaction it signs is sent from."""
        ...

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        """The raw signed transaction of ``tx`` (an ``eth_account`` transaction dict)."""
        ...


def transaction_dict(sent: SentTx, chain_id: int) -> dict[str, Any]:
    """``sent`` as the ``eth_account`` transaction dict a :class:`TransactionSigner` signs."""
    # Here, not at the top: eth_utils costs ~0.2 CPU s to import, and an attester (which reads
    # chains through this package but sends nothing) never needs it.
    from eth_utils.address import to_checksum_address  # noqa: PLC0415

    tx: dict[str, Any] = {
        "type": 2,
        "chainId": chain_id,
        "nonce": sent.nonce,
        "to": to_checksum_address(sent.to[-20:]),
        "data": to_hex(sent.data),
        "value": sent.value,
        "gas": sent.gas,
        "maxFeePerGas": sent.max_fee,
        "maxPriorityFeePerGas": sent.priority_fee,
    }
    if sent.fee_model == "legacy":
        # Type 0 with EIP-155 replay protection (chainId): eth_account signs a legacy
        # transaction when there is no "type" and a gasPrice.
        del tx["type"], tx["maxFeePerGas"], tx["maxPriorityFeePerGas"]
        tx["gasPrice"] = sent.gas_price
    return tx


_TYPED_EIP1559 = b"\x02"  # EIP-2718 type byte of an EIP-1559 transaction
_EIP155_V_OFFSET = 35  # a legacy v is 35 + 2 × chain id + y-parity (EIP-155)


def check_signed_transaction(raw: bytes, sent: SentTx, chain_id: int, sender: bytes) -> bytes:
    """The hash of ``raw``, if ``raw`` is exactly ``sent`` (on ``chain_id``) signed by
    ``sender``; :class:`~adapters.signing.SignerError` otherwise (one line).

    "Exactly" is byte for byte: ``raw`` must be the canonical encoding of ``sent``'s fields —
    an EIP-1559 transaction ``0x02 ‖ rlp([chainId, nonce, tip, maxFee, gas, to, value, data,
    [], y, r, s])``, or a legacy one ``rlp([nonce, gasPrice, gas, to, value, data, v, r, s])``
    with EIP-155's ``v`` for ``chain_id`` — and its signature must be strict (low-s,
    :func:`light_clients.committee.recover_signer`) over the transaction's signing hash and
    recover to ``sender``. Computed here from ``sent``, not taken from the signer: what the
    signer answers is the only thing checked, never what it says about it. It costs about an
    eighth of what eth-account's signature itself does (strict RLP and one ``ecrecover``).
    """
    nonce = f"nonce {sent.nonce}"
    who = f"signer 0x{sender.hex()}"
    common = [rlp.encode_uint(sent.nonce)]
    body: list[rlp.RLPItem] = [rlp.encode_uint(sent.gas), sent.to[-20:]]
    body += [rlp.encode_uint(sent.value), sent.data]
    if sent.fee_model == "legacy":
        prefix = b""
        fields: list[rlp.RLPItem] = [*common, rlp.encode_uint(sent.gas_price), *body]
        digest = keccak256(rlp.encode([*fields, rlp.encode_uint(chain_id), b"", b""]))
    else:
        prefix = _TYPED_EIP1559
        fields = [rlp.encode_uint(chain_id), *common, rlp.encode_uint(sent.priority_fee)]
        fields += [rlp.encode_uint(sent.max_fee), *body, []]  # [] : no access list
        digest = keccak256(prefix + rlp.encode(fields))
    if not isinstance(raw, bytes | bytearray) or not raw:
        raise SignerError(f"{who} answered {nonce} with no transaction")
    # A legacy transaction is an RLP list (first byte 0xc0 or above); a typed one starts with
    # its type byte.
    if (raw[0] >= 0xC0) != (sent.fee_model == "legacy") or not raw.startswith(prefix):
        raise SignerError(f"{who} answered {nonce} with no {sent.fee_model} transaction")
    try:
        decoded = rlp.decode(bytes(raw[len(prefix) :]))
    except DecodeError as exc:
        raise SignerError(f"{who} answered {nonce} with no transaction: {exc}") from None
    if not isinstance(decoded, list) or decoded[:-3] != fields or len(decoded) != len(fields) + 3:
        raise SignerError(f"{who} answered {nonce} with another transaction than the one asked")
    try:
        v, r, s = (rlp.decode_uint(item) for item in decoded[-3:])
        parity = v if prefix else v - _EIP155_V_OFFSET - 2 * chain_id
        if parity not in (0, 1):
            raise SignerError(f"{who} answered {nonce} with v = {v}, not one for chain {chain_id}")
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((27 + parity,))
        recovered = recover_signer(digest, signature)
    except VerificationError as exc:  # DecodeError, MalformedSignatureError (high s, r = 0, …)
        raise SignerError(f"{who} answered {nonce} with no valid signature: {exc}") from None
    if recovered != sender:
        raise SignerError(f"{who} answered {nonce} signed by 0x{recovered.hex()}")
    return keccak256(bytes(raw))


class TxEngine:
    """One sender on one chain: its nonces and fees; its signatures come from a signer."""

    def __init__(
        self,
        rpc: JsonRpcClient,
        signer: TransactionSigner,
        chain_id: int,
        *,
        fee_cap: int = 500 * GWEI,
        priority_fee: int = 1 * GWEI,
        escalate_after: float = 12.0,
        gas_margin_percent: int = 25,
        fee_model: FeeModel = "eip1559",
        sign_timeout: float | None = None,
    ) -> None:
        """``fee_model="legacy"`` sends type-0 transactions priced by ``eth_gasPrice`` (for
        chains without EIP-1559; ``priority_fee`` is then unused); ``fee_cap`` bounds the
        price per gas either way. ``signer`` signs every transaction, within
        ``sign_timeout`` seconds (default: ``adapters.signing.SIGN_TIMEOUT``, read at each
        call, as the attester does; :func:`adapters.signing.call_signer`)."""
        if fee_model not in FEE_MODELS:
            raise ValueError(f"fee_model {fee_model!r} is not one of {', '.join(FEE_MODELS)}")
        address = signer.address
        if not isinstance(address, bytes) or len(address) != 20:
            raise ValueError(f"a signer's address is 20 bytes, got {address!r}")
        self.fee_model: FeeModel = fee_model
        self.rpc = rpc
        self.signer = signer
        self.address = address
        from eth_utils.address import to_checksum_address  # noqa: PLC0415 (transaction_dict)

        self._checksum_address = str(to_checksum_address(address))
        self.chain_id = chain_id
        self.fee_cap, self.priority_fee = fee_cap, priority_fee
        self.escalate_after = escalate_after
        self.gas_margin_percent = gas_margin_percent
        self.sign_timeout = sign_timeout
        self._next_nonce: int | None = None
        self._lock = trio.Lock()
        self.broadcast_errors = 0
        self.signing_errors = 0
        self.replacements = 0

    @property
    def checksum_address(self) -> str:
        """The sender as a checksummed hex string."""
        return self._checksum_address

    async def sync_nonce(self) -> int:
        """Re-read the next nonce from the chain (pending pool included), under the engine's
        lock: a count the node gave before a concurrent send's broadcast reached it, written
        after that send consumed its nonce, would hand the same nonce out again."""
        async with self._lock:
            return await self._read_nonce()

    async def _read_nonce(self) -> int:
        """:meth:`sync_nonce` for a caller that holds the lock already (a send)."""
        count = await self.rpc.call("eth_getTransactionCount", [self.checksum_address, "pending"])
        self._next_nonce = parse_quantity(count, "transaction count")
        return self._next_nonce

    async def estimate_gas(
        self, to: bytes, data: bytes, value: int = 0, *, fees: tuple[int, int] | None = None
    ) -> int:
        """``eth_estimateGas`` plus the safety margin; raises RpcCallError if it would revert.

        ``fees`` is the ``(maxFeePerGas, maxPriorityFeePerGas)`` the transaction will carry
        (:meth:`current_fees` when not given; for a legacy engine the dry run is priced with
        ``gasPrice`` = the first). The dry run must see the same ``tx.gasprice`` as
        the real transaction: without fee fields a node estimates at gas price 0, and a callee
        that behaves differently when ``tx.gasprice == 0`` passes the estimate and then makes
        every real transaction run out of gas (issue #8, point 2).
        """
        max_fee, tip = fees if fees is not None else await self.current_fees()
        call = {
            "from": self.checksum_address,
            "to": to_hex(to[-20:]),
            "data": to_hex(data),
            "value": hex(value),
        }
        if self.fee_model == "legacy":
            call["gasPrice"] = hex(max_fee)
        else:
            # The type too: without it the EthereumJS client dry-runs a legacy transaction at
            # gas price 0, which a block with a base fee refuses (anvil and geth infer type 2).
            call["type"] = "0x2"
            call["maxFeePerGas"] = hex(max_fee)
            call["maxPriorityFeePerGas"] = hex(tip)
        estimate = parse_quantity(await self.rpc.call("eth_estimateGas", [call]), "gas estimate")
        return estimate * (100 + self.gas_margin_percent) // 100

    async def current_fees(self) -> tuple[int, int]:
        """``(maxFeePerGas, maxPriorityFeePerGas)`` for a new transaction, within the cap;
        :class:`MalformedAnswer` if the latest block is not a block.

        Legacy: ``(gasPrice, gasPrice)``, the price ``eth_gasPrice`` suggests, within the cap
        (:class:`MalformedAnswer` if it is not a quantity)."""
        if self.fee_model == "legacy":
            suggested = parse_quantity(await self.rpc.call("eth_gasPrice"), "gas price")
            price = min(self.fee_cap, suggested)
            return price, price
        block = await self.rpc.call("eth_getBlockByNumber", ["latest", False])
        base_fee = parse_base_fee(block)
        tip = min(self.priority_fee, self.fee_cap)
        return min(self.fee_cap, 2 * base_fee + tip), tip

    async def send(
        self,
        to: bytes,
        data: bytes,
        *,
        gas: int | None = None,
        value: int = 0,
        fees: tuple[int, int] | None = None,
        before_broadcast: BroadcastHook | None = None,
    ) -> SentTx:
        """Sign and broadcast; the nonce is consumed only if the node accepts it.

        ``fees`` (max fee, priority fee) are those a caller's dry run used, so the transaction
        carries exactly the gas price its recipients were estimated at; default: the current
        ones. ``before_broadcast(sent, tx_hash)`` runs after signing and before the transaction
        leaves the process, so a caller can record the hash durably first: a crash in between
        then leaves a record of a transaction that may or may not exist, never an unrecorded one.
        """
        max_fee, tip = fees if fees is not None else await self.current_fees()
        if gas is None:
            gas = await self.estimate_gas(to, data, value, fees=(max_fee, tip))
        async with self._lock:
            if self._next_nonce is None:
                await self._read_nonce()
            assert self._next_nonce is not None
            sent = SentTx(
                nonce=self._next_nonce,
                to=to,
                data=data,
                gas=gas,
                max_fee=max_fee,
                priority_fee=tip,
                fee_model=self.fee_model,
                value=value,
            )
            await self._broadcast(sent, before_broadcast)
            self._next_nonce += 1
        return sent

    async def _broadcast(self, sent: SentTx, before_broadcast: BroadcastHook | None) -> None:
        raw, tx_hash = await self._signed(sent)
        if before_broadcast is not None:
            await before_broadcast(sent, tx_hash)
        try:
            await self.rpc.call("eth_sendRawTransaction", [to_hex(raw)])
        except RpcError as exc:
            self.broadcast_errors += 1
            # Never keep a nonce the node did not take: re-read it now, or (node unreachable)
            # before the next send.
            self._next_nonce = None
            with contextlib.suppress(RpcError):
                await self._read_nonce()
            raise TxError(f"broadcast of nonce {sent.nonce} failed: {exc}") from None
        sent.hashes.append(tx_hash)
        sent.sent_at = trio.current_time()

    async def _signed(self, sent: SentTx) -> tuple[bytes, bytes]:
        """``sent`` signed by the signer and checked (:func:`check_signed_transaction`): the
        raw transaction and its hash; :class:`TxNotSigned` if the signer refused, hung or
        answered anything else. No fallback: this engine has one signer, and one sender.

        The check runs with the signature, in the signer's thread (a failed check is then a
        signer failure like the others, counted once, in one place), on a copy of ``sent``:
        an abandoned thread may still be checking after :meth:`_replace` restored the fees."""
        asked = replace(sent, hashes=[])
        sign = partial(self.signer.sign_transaction, transaction_dict(asked, self.chain_id))

        def signed() -> tuple[bytes, bytes]:
            raw = sign()
            tx_hash = check_signed_transaction(raw, asked, self.chain_id, self.address)
            return bytes(raw), tx_hash  # checked: bytes, or a bytearray of them

        try:
            return await call_signer(self.signer, signed, timeout=self.sign_timeout)
        except SignerError as exc:
            self.signing_errors += 1
            raise TxNotSigned(f"nonce {sent.nonce} not signed: {exc}") from None

    async def _replace(self, sent: SentTx, before_broadcast: BroadcastHook | None) -> bool:
        """Re-send the same nonce with higher fees; False when already at the cap.

        One rule for both fee models: each fee becomes the larger of the current one and the
        sent one raised by ``REPLACEMENT_BUMP_PERCENT``, never above the cap. A legacy
        transaction's fees are one price twice (:meth:`current_fees`), so its ``gasPrice``
        follows the ``max_fee`` line exactly."""
        max_fee, tip = await self.current_fees()
        bumped_tip = min(
            self.fee_cap, max(tip, sent.priority_fee * REPLACEMENT_BUMP_PERCENT // 100)
        )
        bumped_fee = min(self.fee_cap, max(max_fee, sent.max_fee * REPLACEMENT_BUMP_PERCENT // 100))
        if bumped_fee <= sent.max_fee:
            return False
        previous = (sent.max_fee, sent.priority_fee)
        sent.max_fee, sent.priority_fee = bumped_fee, max(bumped_tip, sent.priority_fee)
        try:
            async with self._lock:
                await self._broadcast(sent, before_broadcast)
        except TxNotSigned as exc:
            sent.max_fee, sent.priority_fee = previous
            if not sent.bump_refused:  # a fee policy refuses every bump: say it once
                sent.bump_refused = True
                log.warning(
                    "nonce %d stays at max fee %d: its fee bump to %d was not signed (%s); "
                    "retried at each escalation, not logged again for this transaction",
                    sent.nonce,
                    sent.max_fee,
                    bumped_fee,
                    exc,
                )
            return False
        except TxError:
            sent.max_fee, sent.priority_fee = previous
            return False
        self.replacements += 1
        return True

    async def receipt(self, tx_hash: bytes) -> MinedTx | None:
        """The receipt of ``tx_hash`` if mined in the chain as the node serves it now, else
        None; TxReverted if it reverted, :class:`MalformedAnswer` if the node's answer is not a
        receipt of ``tx_hash`` (see :func:`parse_receipt`).

        A receipt's block number is what the relayer records as the carrier's block, and
        waits for finality to reach: a made-up one (2^62) would leave the carrier's messages
        ``submitted`` for ever. So it is held against the block at that number
        (:meth:`_in_chain`); one the chain does not have, or whose hash is not the receipt's
        (a fabrication, or a block just reorged away), counts as "not mined yet": whoever
        waits asks again, and a transaction never found mined is dropped and sent again (a
        replay the inbox skips). One more request per mined transaction, not per poll.

        A reverted receipt is held against the chain the same way before TxReverted is
        raised: a revert is terminal for the carrier (recorded failed without waiting for
        finality, its messages failed, a lone message's attempt counted), so a made-up one, or
        one from a block just reorged away, must not end a delivery that succeeded."""
        answer = await self.rpc.call("eth_getTransactionReceipt", [to_hex(tx_hash)])
        try:
            mined = parse_receipt(tx_hash, answer)
        except TxReverted as reverted:
            if await self._in_chain(tx_hash, reverted.block_number, reverted.block_hash):
                raise
            return None
        if mined is None or await self._in_chain(mined.hash, mined.block_number, mined.block_hash):
            return mined
        return None

    async def _in_chain(self, tx_hash: bytes, number: int, block_hash: bytes | None) -> bool:
        """Whether the node has a block at ``number`` whose hash is ``block_hash``, the one
        the receipt of ``tx_hash`` names (any block there, for a receipt without one);
        :class:`MalformedAnswer` if its answer is not a block."""
        block = await self.rpc.call("eth_getBlockByNumber", [hex(number), False])
        if block is None:
            log.warning(
                "receipt of 0x%s claims block %d, which the chain does not have: not mined yet",
                tx_hash.hex(),
                number,
            )
            return False
        if not isinstance(block, dict) or not _matches(_WORD, block.get("hash")):
            raise _malformed(f"block {number}", block)
        if block_hash is not None and bytes.fromhex(block["hash"][2:]) != block_hash:
            log.warning(
                "receipt of 0x%s names block %d as 0x%s, the chain has 0x%s: not mined yet",
                tx_hash.hex(),
                number,
                block_hash.hex()[:16],
                block["hash"][2:18],
            )
            return False
        return True

    async def wait(
        self,
        sent: SentTx,
        *,
        timeout: float = 120.0,
        poll: float = 0.25,
        before_broadcast: BroadcastHook | None = None,
    ) -> MinedTx:
        """Wait until one of ``sent``'s hashes is mined, escalating fees when it is stuck.

        Replacements go through ``before_broadcast`` like the first broadcast did.
        """
        with trio.move_on_after(timeout):
            while True:
                for tx_hash in reversed(sent.hashes):
                    try:
                        mined = await self.receipt(tx_hash)
                    except RpcError:  # an unreachable node, or a garbled receipt (a
                        # MalformedAnswer), is not an answer: keep polling until the timeout
                        mined = None
                    if mined is not None:
                        return replace(mined, nonce=sent.nonce, fee_model=sent.fee_model)
                if trio.current_time() - sent.sent_at > self.escalate_after:
                    with contextlib.suppress(RpcError):  # no fee data now: escalate later
                        await self._replace(sent, before_broadcast)
                    sent.sent_at = trio.current_time()
                await trio.sleep(poll)
        raise TxError(
            f"nonce {sent.nonce} not mined within {timeout:.0f} s ({len(sent.hashes)} broadcasts)"
        )
