"""Talking to one Substrate node: headers, events, remarks, extrinsic submission (trio).

py-substrate-interface does the SCALE work against the runtime's metadata; it blocks, and it is
not thread-safe even with one instance per thread (``docs/substrate-devnet.md``: concurrent
runtime initialisation crashes its decoder registry). So every call into it runs in a worker
thread through :data:`SUBSTRATE_LIMITER`, one ``trio.CapacityLimiter(1)`` for the whole
process, shared by every :class:`SubstrateClient`: at most one substrate-interface call runs
at any time, and the trio loop never blocks. Waiting (for inclusion, between polls) happens in
trio, not in a worker, so a slow block never holds the limiter.

What passes a light client before it is returned:

- headers: the SCALE bytes (``archive_v1_header`` where the node has it, else the JSON of
  ``chain_getHeader`` re-encoded) must hash to the block hash asked for
  (:func:`light_clients.substrate.header.verify_header_hash`). chopsticks, asked for a block it
  does not have, answers with its genesis header: that is caught here.
- remarks: the block body comes with its header, which must hash to the block asked for. The
  body itself is not yet checked against the header's extrinsics root, and events are read
  from the node (no read proof: chopsticks has none, and its state roots are zero).

Every node problem is an :class:`AdapterError` with one line naming the endpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, NamedTuple, TypeVar, overload

import trio
from scalecodec.base import ScaleBytes
from scalecodec.utils.ss58 import ss58_decode
from substrateinterface import Keypair, KeypairType, SubstrateInterface

from adapters.errors import AdapterError
from adapters.redact import redact_url, scrub_url
from adapters.signing import signs_in_process
from adapters.substrate.encoding import FastCalls, library_call
from adapters.substrate.event_records import RecordSpan, TypeWalker, record_spans
from adapters.substrate.metadata import SharedMetadataInterface
from adapters.substrate.signing import sign_sr25519
from adapters.text import one_line
from light_clients.errors import DecodeError, VerificationError
from light_clients.hashing import blake2_256
from light_clients.hexstr import parse_data, to_hex
from light_clients.message import Message
from light_clients.substrate.header import SubstrateHeader, verify_header_hash
from light_clients.substrate.remark import REMARK_PREFIX, AssetTransfer, validate_remark
from light_clients.substrate.scale import ScaleReader, encode_compact

__all__ = [
    "MORTALITY_PERIOD",
    "SUBSTRATE_LIMITER",
    "Call",
    "EventsProver",
    "Fee",
    "Included",
    "RemarkSeen",
    "Submitted",
    "SubstrateClient",
    "SubstrateEvent",
    "header_from_json",
    "keypair_from_seed",
]

log = logging.getLogger("passerelle.adapters.substrate")

SUBSTRATE_LIMITER: Final = trio.CapacityLimiter(1)
"""The one worker slot for every substrate-interface call of this process (not thread-safe)."""

MORTALITY_PERIOD: Final = 64
"""Extrinsics are mortal: valid for at most this many blocks from the finalized head they were
signed at, so a submission that was dropped can be declared dead instead of landing later."""

REQUEST_TIMEOUT: Final = 30.0
"""Seconds a single request may wait for the node's answer (websocket read timeout). A worker
thread is never abandoned, so this also bounds how long a cancellation can take."""

INCLUSION_TIMEOUT: Final = 120.0
POLL_INTERVAL: Final = 0.25
MAX_CALL_DEPTH: Final = 8
"""How deep :meth:`SubstrateClient.remarks` looks into nested ``Utility`` batches: a remark
under more than this many batches / ``as_multi`` calls is not reported, so it is never a
message (its sender's own doing; the decoder still reads the whole call, see
:data:`RUNTIME_MAX_CALL_DEPTH`)."""

RUNTIME_MAX_CALL_DEPTH: Final = 256
"""How deep a call the runtime takes: Substrate decodes an extrinsic with a nesting limit
(``MAX_EXTRINSIC_DEPTH``, 256), so the pool refuses ``batch`` nested 257 deep and takes 256
(measured on the devnet's Asset Hub runtime; chopsticks' executor then traps from 226 on while
building the block, a real node may well include all 256). Every call on chain is within it,
except the bytes of an ``OpaqueCall``, which the runtime keeps undecoded until it executes
them (it cannot execute one deeper than this)."""

_FRAMES_PER_LEVEL: Final = 16
"""Python frames scalecodec spends on one level of call nesting: 12 measured (scalecodec
1.2.12, Python 3.11), with a margin for another release of either."""

SCAN_RECURSION_LIMIT: Final = 1000 + _FRAMES_PER_LEVEL * RUNTIME_MAX_CALL_DEPTH
"""The recursion limit a process that decodes Substrate calls needs (5096): Python's default
1000 for the caller's own stack, plus the deepest call the runtime takes."""

_BATCH_CALLS: Final = frozenset({"batch", "batch_all", "force_batch"})

WS_OPTIONS: Final = {"skip_utf8_validation": True}
"""websocket-client options of every Substrate connection. Its UTF-8 check of each text frame
is pure Python: profiled in a 6,000-message Asset Hub burst it was 18 % of the relayer's CPU
and 10 % of each attester's, on the machine chopsticks needs to build blocks (issue #12).
Skipping it loses nothing: ``WebSocket.recv`` still decodes a text message with
``bytes.decode("utf-8")``, so a node sending invalid UTF-8 still fails that call, as one
AdapterError line (tests/test_multisig_together.py), and what is decoded is then parsed and
checked like any other answer."""

_HASH_LEN = 32

SYSTEM_ACCOUNT_PREFIX: Final = bytes.fromhex(
    "26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9"
)
"""``twox128("System") ‖ twox128("Account")``: the prefix of ``System.Account``, whose keys
go on with ``Blake2_128Concat`` of the 32-byte account id (:func:`system_account_key`)."""

T = TypeVar("T")


# --- values returned ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A composed runtime call: ``data`` is its SCALE encoding, ``hash`` blake2-256 of it.

    ``generic`` is substrate-interface's ``GenericCall``, for nesting into other calls
    (``Utility.batch_all``, ``Multisig.as_multi``): pass the :class:`Call` itself in ``params``.
    """

    module: str
    function: str
    data: bytes = field(repr=False)
    hash: bytes
    generic: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class Fee:
    """What ``TransactionPaymentApi.query_info`` (``payment_queryInfo``) says a call costs."""

    partial_fee: int
    """Planck, without tip."""
    weight: int
    """The call's dispatch weight (ref time)."""
    proof_size: int = 0
    """The proof-size part of the weight (weights v2 runtimes; 0 on v1 runtimes like ours)."""


@dataclass(frozen=True)
class SubstrateEvent:
    """One ``System.Events`` record, attributes as substrate-interface decodes them.

    Accounts in ``attributes`` are SS58 strings (see :func:`account_bytes`). ``error`` names the
    ``DispatchError`` the event carries, for the events that carry one (``System.ExtrinsicFailed``,
    ``Multisig.MultisigExecuted`` with an ``Err`` result, ``Utility.BatchInterrupted``), e.g.
    ``Uniques.AlreadyExists``.
    """

    extrinsic_index: int | None
    """The extrinsic that emitted it (phase ``ApplyExtrinsic``); None for block init/finalize."""
    pallet: str
    name: str
    attributes: Any
    error: str | None = None


@dataclass(frozen=True)
class Submitted:
    """An extrinsic the node accepted into its pool; not yet included."""

    extrinsic_hash: bytes
    signer: bytes
    nonce: int
    since_block: int
    """The best block when it was signed: it can only be included after this one."""
    valid_until: int
    """Mortality: it cannot be included in a block numbered above this."""


@dataclass(frozen=True)
class Included:
    """An extrinsic in a block, with the events it emitted.

    ``success`` is the outer dispatch result (``System.ExtrinsicSuccess``), ``error`` the name of
    the ``DispatchError`` otherwise. A call wrapped by ``Multisig.as_multi`` can fail while the
    extrinsic succeeds: see :func:`adapters.substrate.multisig.executed_ok`. ``events``: all
    of the extrinsic's, or only the kinds the wait was asked for
    (:meth:`SubstrateClient.wait_included`'s ``kinds``) and its outcome.
    """

    block_hash: bytes
    block_number: int
    extrinsic_index: int
    extrinsic_hash: bytes
    nonce: int
    success: bool
    error: str | None
    events: tuple[SubstrateEvent, ...] = field(repr=False)

    def named(self, pallet: str, name: str) -> list[SubstrateEvent]:
        """The events ``pallet.name`` of this extrinsic, in order."""
        return [e for e in self.events if (e.pallet, e.name) == (pallet, name)]


@dataclass(frozen=True)
class BalanceTransfer:
    """A ``Balances.Transfer`` event: ``amount`` plancks from ``source`` to ``target``."""

    source: bytes
    target: bytes
    amount: int


EventsProver = Callable[[SubstrateHeader], Awaitable[bytes]]
"""What :meth:`SubstrateClient.remarks` calls for a block whose body carries ``PSRL``: the raw
``System.Events`` value proven under the given (hash-checked) header's state root."""


@dataclass(frozen=True)
class RemarkSeen:
    """A ``System.Remarked`` event joined with the ``remark_with_event`` call that emitted it.

    Nothing here is checked against the outbox rules yet: :meth:`validate` does that.
    """

    block_number: int
    block_hash: bytes
    extrinsic_index: int
    signer: bytes
    """The extrinsic's signer (32-byte account id)."""
    remark: bytes
    """The call's ``remark`` argument, exactly as submitted."""
    event_sender: bytes
    event_hash: bytes
    extrinsic_hash: bytes = b""
    """blake2-256 of the extrinsic's bytes."""
    transfers: tuple[AssetTransfer, ...] = ()
    """The ``Assets.Transferred`` events of the same extrinsic before this remark's event (what
    may back a token return: :func:`light_clients.substrate.remark.check_escrow`)."""
    balance_transfers: tuple[BalanceTransfer, ...] = ()
    """The ``Balances.Transfer`` events of the same extrinsic after the previous ``Remarked``
    event and before this one: what may pay for its delivery (docs/design.md "Paid
    delivery"; :mod:`relayer.families.substrate.payments`)."""

    def validate(self, origin_domain: int, committee: bytes | None = None) -> Message:
        """:func:`light_clients.substrate.remark.validate_remark` of this remark (``committee``:
        the multisig whose own remarks are accepted)."""
        return validate_remark(
            self.remark,
            self.signer,
            self.event_sender,
            self.event_hash,
            origin_domain,
            committee=committee,
        )


# --- conversions -------------------------------------------------------------------------


def keypair_from_seed(seed: bytes) -> Keypair:
    """The sr25519 keypair of a 32-byte mini-secret seed (an attester's or a client's key)."""
    if len(seed) != _HASH_LEN:
        raise ValueError(f"an sr25519 seed must be 32 bytes, got {len(seed)}")
    return Keypair.create_from_seed(seed.hex(), crypto_type=KeypairType.SR25519)


def _runtime_of(substrate: SubstrateInterface) -> tuple[object, object]:
    """The runtime substrate-interface encodes for now: (spec version, transaction version),
    both signed into an extrinsic (``CheckSpecVersion``, ``CheckTxVersion``)."""
    return substrate.runtime_version, substrate.transaction_version


def _show_runtime(runtime: tuple[object, object]) -> str:
    spec, transaction = runtime
    return f"spec {spec} (transaction version {transaction})"


def _signs_in_process(keypair: Keypair) -> bool:
    """Whether ``keypair`` signs in this process, CPU only (called inline, not in a thread):
    a substrate-interface ``Keypair`` holding its own secret (devnet keys, tests), or a
    keypair that wraps a signer (``relayer.signer.as_keypair``: its ``signer`` attribute) whose
    own class says it ``signs_in_process``. Anything else (a remote signer) is called in a
    thread, bounded."""
    inner = getattr(keypair, "signer", None)
    if inner is not None:
        return signs_in_process(inner)
    return type(keypair) is Keypair and bool(keypair.private_key)


def _describe(exc: BaseException) -> str:
    """One line for an exception from substrate-interface, websocket-client or scalecodec."""
    args = exc.args
    if len(args) == 1 and isinstance(args[0], dict):  # a JSON-RPC error object
        error: dict[str, Any] = args[0]
        code = error.get("code")
        text = f"error {code}: {error.get('message')}" if code is not None else error.get("message")
        return one_line(str(text))
    return one_line(f"{type(exc).__name__}: {exc}".rstrip(": "))


_NONCE_REFUSAL = re.compile(r"author_submitExtrinsic on .*?: error (1010|1014):")
"""A submission refused for its nonce, as :func:`_describe` words the node's error: 1014
(a pooled extrinsic of the same account holds that nonce: "Priority is too low") or 1010
(invalid: the chain is past it, "outdated"; also other invalidity, which the one retry of
:meth:`SubstrateClient.submit_call` meets again and raises)."""


def _nonce_refused(error: AdapterError) -> bool:
    """Whether ``error`` is the node refusing a submission for its nonce (see
    :data:`_NONCE_REFUSAL`). Matched on our own wording; a node that words another error so
    costs one more ask and signature, nothing else."""
    return _NONCE_REFUSAL.match(str(error)) is not None


def _hash_bytes(value: Any, what: str) -> bytes:
    """A ``0x``-hex 32-byte hash from the node."""
    return _hex_bytes(value, what, _HASH_LEN)


def _hex_bytes(value: Any, what: str, size: int | None = None) -> bytes:
    """``0x``-hex bytes from the node (exactly ``size`` of them if given), strictly parsed
    (:func:`light_clients.hexstr.parse_data`); :class:`AdapterError` naming ``what`` if not."""
    try:
        return parse_data(value, what, size)
    except DecodeError:
        raise AdapterError(f"node returned a malformed {what}: {one_line(repr(value))}") from None


def blake2_128_concat(key: bytes) -> bytes:
    """FRAME's ``Blake2_128Concat`` hasher of a map key: ``blake2b-128(key) ‖ key``."""
    return hashlib.blake2b(key, digest_size=16).digest() + key


def system_account_key(account: bytes) -> bytes:
    """The storage key of ``account``'s ``System.Account`` entry (``AccountInfo``)."""
    return SYSTEM_ACCOUNT_PREFIX + blake2_128_concat(account)


def account_nonce(raw: bytes | None) -> int:
    """The nonce in a raw ``System.Account`` value: the chain's count of the account's included
    extrinsics. ``frame_system::AccountInfo`` starts with it, a little-endian u32 (``Nonce`` is
    u32 on the Polkadot-SDK system chains; what follows, the reference counts and the balances,
    is not read). An absent entry is an account that never signed: 0. Fewer than four bytes is
    no ``AccountInfo``: :class:`AdapterError` (the bytes come from an RPC answer)."""
    if raw is None:
        return 0
    if len(raw) < 4:
        raise AdapterError(f"node returned a System.Account value of {len(raw)} bytes")
    return int.from_bytes(raw[:4], "little")


def account_bytes(value: Any) -> bytes:
    """A 32-byte account id from SS58, ``0x``-hex or ``{"Id": …}`` (substrate-interface's forms)."""
    if isinstance(value, dict) and set(value) == {"Id"}:
        value = value["Id"]
    if isinstance(value, bytes | bytearray) and len(value) == _HASH_LEN:
        return bytes(value)
    if isinstance(value, str):
        if value.startswith("0x"):
            return _hash_bytes(value, "account id")
        try:
            public = bytes.fromhex(str(ss58_decode(value)))
        except (ValueError, IndexError, TypeError):
            public = b""
        if len(public) == _HASH_LEN:
            return public
    raise AdapterError(f"node returned a malformed account: {one_line(repr(value))}")


def header_from_json(obj: Any, block_hash: bytes) -> SubstrateHeader:
    """The header of ``chain_getHeader``'s JSON, SCALE-encoded again and checked against
    ``block_hash`` by the light client.

    The digest logs come as SCALE hex already; the rest is ``parent ‖ Compact(number) ‖
    state_root ‖ extrinsics_root ‖ Compact(len(logs)) ‖ logs``. Raises :class:`AdapterError`
    when the JSON is malformed or the header is not that block.
    """
    if not isinstance(obj, dict):
        raise AdapterError(f"node has no header for block {to_hex(block_hash)}")
    digest = obj.get("digest")
    logs = digest.get("logs") if isinstance(digest, dict) else None
    number = obj.get("number")
    if not isinstance(logs, list) or not isinstance(number, str | int):
        raise AdapterError(f"node returned a malformed header for block {to_hex(block_hash)}")
    try:
        number_int = int(number, 16) if isinstance(number, str) else number
    except ValueError:
        raise AdapterError(f"node returned a malformed block number {number!r}") from None
    if not 0 <= number_int < 2**32:
        raise AdapterError(f"node returned an out-of-range block number {number!r}")
    raw = (
        _hash_bytes(obj.get("parentHash"), "parent hash")
        + encode_compact(number_int)
        + _hash_bytes(obj.get("stateRoot"), "state root")
        + _hash_bytes(obj.get("extrinsicsRoot"), "extrinsics root")
        + encode_compact(len(logs))
        + b"".join(_hex_bytes(item, "digest log") for item in logs)
    )
    return _verified_header(raw, block_hash)


def _verified_header(raw: bytes, block_hash: bytes) -> SubstrateHeader:
    try:
        return verify_header_hash(raw, block_hash)
    except VerificationError as exc:
        raise AdapterError(f"header of block {to_hex(block_hash)}: {exc}") from None


def _result(answer: Any, method: str) -> Any:
    """The ``result`` of a substrate-interface ``rpc_request`` answer."""
    if not isinstance(answer, dict) or "result" not in answer:
        raise AdapterError(f"{method}: malformed JSON-RPC answer")
    return answer["result"]


def _to_generic(value: Any) -> Any:
    """Params with every :class:`Call` replaced by its ``GenericCall``."""
    if isinstance(value, Call):
        return value.generic
    if isinstance(value, list | tuple):
        return [_to_generic(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_generic(item) for key, item in value.items()}
    return value


def _weight(value: Any) -> tuple[int, int]:
    """(ref time, proof size) of a weight: u64 (weights v1) or ``{ref_time, proof_size}`` (v2)."""
    parts = (
        (value.get("ref_time"), value.get("proof_size", 0))
        if isinstance(value, dict)
        else (value, 0)
    )
    checked = [part for part in parts if isinstance(part, int) and not isinstance(part, bool)]
    if len(checked) != len(parts) or min(checked) < 0:
        raise AdapterError(f"node returned a malformed weight: {one_line(repr(value))}")
    return checked[0], checked[1]


# --- substrate-interface work, run in the worker thread ----------------------------------


def _error_name(substrate: SubstrateInterface, error: Any) -> str:
    """A decoded ``DispatchError`` by name, e.g. ``Uniques.AlreadyExists`` or ``BadOrigin``."""
    if isinstance(error, str):
        return error  # BadOrigin, CannotLookup, Other, …
    if isinstance(error, dict) and len(error) == 1:
        [(kind, detail)] = error.items()
        if kind == "Module" and isinstance(detail, dict):
            pallet_index, code = detail.get("index"), detail.get("error")
            if isinstance(code, str) and code.startswith("0x") and len(code) >= 4:
                code = int(code[2:4], 16)  # the first byte is the error; the rest is reserved
            try:
                pallet = substrate.metadata.get_pallet_by_index(pallet_index).name
                variant = substrate.metadata.get_module_error(pallet_index, code)
                return f"{pallet}.{variant.name}"
            except Exception:  # unknown index: show the numbers
                return f"Module(index={pallet_index}, error={code})"
        if isinstance(detail, str):
            return f"{kind}.{detail}"
        return f"{kind}({one_line(repr(detail))})"
    return one_line(repr(error))


def _event_error(substrate: SubstrateInterface, pallet: str, name: str, attrs: Any) -> str | None:
    if not isinstance(attrs, dict):
        return None
    if (pallet, name) == ("System", "ExtrinsicFailed"):
        return _error_name(substrate, attrs.get("dispatch_error"))
    if (pallet, name) == ("Utility", "BatchInterrupted"):
        return _error_name(substrate, attrs.get("error"))
    if (pallet, name) == ("Multisig", "MultisigExecuted"):
        result = attrs.get("result")
        if isinstance(result, dict) and "Err" in result:
            return _error_name(substrate, result["Err"])
    return None


def _events(
    substrate: SubstrateInterface, block_hash: bytes, proven: bytes | None = None
) -> list[SubstrateEvent]:
    """The block's events: read from the node, or decoded from ``proven`` (the ``System.Events``
    value a read proof established under the block's state root)."""
    if proven is None:
        return _as_events(substrate, substrate.get_events(block_hash=to_hex(block_hash)))
    substrate.init_runtime(block_hash=to_hex(block_hash))
    key = substrate.create_storage_key("System", "Events")
    return _as_events(substrate, key.decode_scale_value(ScaleBytes(proven)).elements)


def _extrinsic_events(
    substrate: SubstrateInterface,
    block_hash: bytes,
    index: int,
    walker: EventWalker,
    kinds: Collection[tuple[str, str]] | None = None,
) -> list[SubstrateEvent]:
    """The events of extrinsic ``index`` of the block — only those whose ``(pallet, name)`` is
    in ``kinds`` when given — with only those records decoded (:mod:`.event_records`); every
    event decoded and filtered when the stored value cannot be walked. The same events either
    way."""
    at = to_hex(block_hash)
    substrate.init_runtime(block_hash=at)
    key = substrate.create_storage_key("System", "Events")
    raw = _result(substrate.rpc_request("state_getStorage", [key.to_hex(), at]), "events")
    if raw is None:
        return []
    data = _hex_bytes(raw, "System.Events")
    try:
        spans = walker.spans(substrate, data)
    except Exception as error:  # the walk only saves time: whatever fails, decode it whole
        log.debug("events of block %s decoded whole: %r", at, error)
        return [
            e
            for e in _events(substrate, block_hash)
            if e.extrinsic_index == index and (kinds is None or (e.pallet, e.name) in kinds)
        ]
    records = [
        data[s.start : s.end]
        for s in spans
        if s.extrinsic_index == index and (kinds is None or (s.pallet, s.name) in kinds)
    ]
    value = encode_compact(len(records)) + b"".join(records)
    return _as_events(substrate, key.decode_scale_value(ScaleBytes(value)).elements)


class PerRuntime(Generic[T]):
    """A value worked out once per runtime a ``SubstrateInterface`` has loaded, keyed on its
    metadata object (a runtime upgrade replaces it): the delivery shapes :class:`FastCalls`
    found, the registry the event walk steps with, whether fee estimates splice."""

    def __init__(self) -> None:
        """Nothing worked out yet."""
        self._kept: tuple[object, T] | None = None

    def get(self, substrate: SubstrateInterface, work: Callable[[SubstrateInterface], T]) -> T:
        """The value for the runtime ``substrate`` has loaded: ``work(substrate)`` the first
        time (an exception from it is raised, and nothing is kept)."""
        metadata = substrate.metadata
        if self._kept is None or self._kept[0] is not metadata:
            self._kept = (metadata, work(substrate))
        return self._kept[1]


class EventWalker:
    """:func:`~adapters.substrate.event_records.record_spans` with the registry of the runtime
    a ``SubstrateInterface`` has loaded (indexed once per runtime)."""

    def __init__(self) -> None:
        """Nothing indexed yet."""
        self._registry: PerRuntime[tuple[TypeWalker, int]] = PerRuntime()

    def spans(self, substrate: SubstrateInterface, data: bytes) -> list[RecordSpan]:
        """Each event record of ``data``; DecodeError when it cannot be walked."""
        walker, events_type = self._registry.get(substrate, _events_registry)
        return record_spans(walker, events_type, data)


def _events_registry(substrate: SubstrateInterface) -> tuple[TypeWalker, int]:
    try:
        types = substrate.metadata.portable_registry.value["types"]
        function = substrate.get_metadata_storage_function("System", "Events")
        events_type = int(function.value["type"]["Plain"])
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise DecodeError(f"no type registry for System.Events: {error!r}") from None
    return TypeWalker(types), events_type


class FeeExtrinsics:
    """The extrinsic a fee estimate sends, with the call's bytes put in as they are.

    substrate-interface builds the extrinsic of ``get_payment_info`` from the call's decoded
    VALUE, encoding every nested call again: for a delivery batch of ~1,000 calls that was
    ~17 % of an attester's CPU in a burst, and held the process's one substrate-interface slot
    while it ran. A signed extrinsic (v4) ends with its call, so the extrinsic of a one-byte
    remark, built by substrate-interface with the same keypair and a zero signature (what
    ``get_payment_info`` signs with), has its call replaced by ours and its length prefix
    rewritten. Checked once per runtime: the same splice of a sample call must give the bytes
    substrate-interface builds for that call itself; if not (another extrinsic format),
    :meth:`for_call` answers None and the caller asks ``get_payment_info``.
    """

    def __init__(self) -> None:
        """Nothing checked yet."""
        self._splices: PerRuntime[bool] = PerRuntime()

    def for_call(self, substrate: SubstrateInterface, keypair: Keypair, call: Call) -> Any | None:
        """A ``GenericExtrinsic`` holding ``call`` signed by ``keypair`` (zero signature, the
        account's next nonce), or None when this runtime's extrinsics cannot be spliced."""
        if not self._splices.get(substrate, lambda s: self._splices_right(s, keypair)):
            return None
        data = self._splice(substrate, keypair, call.data, nonce=None)
        if data is None:
            return None
        return substrate.runtime_config.create_scale_object(
            "Extrinsic", data=ScaleBytes(data), metadata=substrate.metadata
        )

    def _splices_right(self, substrate: SubstrateInterface, keypair: Keypair) -> bool:
        sample = library_call(substrate, "System", "remark", {"remark": bytes(range(1, 70))})
        whole = substrate.create_signed_extrinsic(
            call=sample, keypair=keypair, signature=_ZERO_SIGNATURE, nonce=0
        )
        spliced = self._splice(substrate, keypair, bytes(sample.data.data), nonce=0)
        return spliced == bytes(whole.data.data)

    @staticmethod
    def _splice(
        substrate: SubstrateInterface, keypair: Keypair, call: bytes, *, nonce: int | None
    ) -> bytes | None:
        tiny = library_call(substrate, "System", "remark", {"remark": b""})
        shell = bytes(
            substrate.create_signed_extrinsic(
                call=tiny, keypair=keypair, signature=_ZERO_SIGNATURE, nonce=nonce
            ).data.data
        )
        tail = bytes(tiny.data.data)
        reader = ScaleReader(shell)
        try:
            declared = reader.compact()
        except DecodeError:
            return None
        body = shell[reader.offset :]
        if declared != len(body) or not body.endswith(tail):
            return None
        body = body[: len(body) - len(tail)] + call
        return encode_compact(len(body)) + body


BLOCKS_REMEMBERED: Final = 16
"""Blocks whose extrinsic hashes a client keeps for its inclusion waits (a few seconds of a
burst's blocks: every wait in flight looks at each new block once)."""

_OUTCOME_EVENTS: Final = frozenset({("System", "ExtrinsicSuccess"), ("System", "ExtrinsicFailed")})
"""An extrinsic's outcome: always among the events :meth:`SubstrateClient.wait_included` keeps."""

_ZERO_SIGNATURE: Final = "0x" + "00" * 64
"""What substrate-interface's ``get_payment_info`` signs a fee estimate's extrinsic with."""


def _as_events(substrate: SubstrateInterface, records: Sequence[Any]) -> list[SubstrateEvent]:
    events: list[SubstrateEvent] = []
    for record in records:
        value = record.value
        pallet, name, attrs = value["module_id"], value["event_id"], value["attributes"]
        index = value.get("extrinsic_idx")
        events.append(
            SubstrateEvent(
                extrinsic_index=index if isinstance(index, int) else None,
                pallet=pallet,
                name=name,
                attributes=attrs,
                error=_event_error(substrate, pallet, name, attrs),
            )
        )
    return events


class _DecodedCall(NamedTuple):
    """One call as scalecodec decoded it: what :func:`_remarks_in_call` walks.

    Decoding is the scan's whole cost (a delivery's ``as_multi`` around a ``batch_all`` of
    ~1,000 calls), so a call is decoded once and handed down as this, never decoded again
    from its bytes."""

    pallet: str
    function: str
    used: bytes
    """The call's exact encoding (call index first): a slice of the bytes it was decoded from."""
    calls: tuple[_DecodedCall, ...] | None = None
    """For a ``Utility`` batch: its calls, if the decode that produced this value showed them
    (:func:`_batch_calls`); None means: not known, cut them from :attr:`used`."""


def _decoded(call: Any) -> _DecodedCall:
    """The :class:`_DecodedCall` of a scalecodec ``GenericCall`` that has just been decoded."""
    value = call.value
    pallet, function = value["call_module"], value["call_function"]
    used = bytes(call.get_used_bytes())
    return _DecodedCall(pallet, function, used, _batch_calls(call, pallet, function, used))


def _batch_calls(
    call: Any, pallet: str, function: str, used: bytes
) -> tuple[_DecodedCall, ...] | None:
    """The calls of the ``Utility`` batch ``call`` decoded along with it, or None.

    scalecodec 1.2 keeps no per-call objects for a call's arguments: it stores them on the
    runtime metadata's description of the function (``call.call_args``, shared by every call
    of that function), so they are this call's right after its decode and another call's once
    a later decode of the same function overwrote them. They are therefore only a hint, taken
    when their bytes tile this batch exactly: count, then each call's bytes in order, up to the
    end. That is also proof they are this batch's calls: SCALE decoding under one metadata is
    prefix-deterministic, so the decode of those very bytes from this batch would cut the same
    calls and name the same functions (the list sits on this metadata's own description of
    the function, where only the decoder writes, so it did come from a decode under this
    metadata — by this connection or, the decode being shared for the same bytes
    (:mod:`adapters.substrate.metadata`), by another connection of the process; a decode cuts
    a given run of bytes one way only, so a list that tiles cannot cut them elsewhere).
    Anything else (another library version, a stale or foreign value) gives None, and the
    caller decodes the calls one by one as before.
    """
    if pallet != "Utility" or function not in _BATCH_CALLS:
        return None
    try:
        [vec] = [a.value_object["value"] for a in call.call_args if a.value["name"] == "calls"]
        calls = tuple(
            _DecodedCall(
                item.value["call_module"],
                item.value["call_function"],
                bytes(item.get_used_bytes()),
            )
            for item in vec.elements
        )
        reader = ScaleReader(used, 2)  # 2 bytes of call index
        count = reader.compact_u32()
    except (AttributeError, KeyError, TypeError, ValueError, DecodeError):
        return None
    if count != len(calls) or b"".join(c.used for c in calls) != used[reader.offset :]:
        return None
    return calls


def _decode_call(substrate: SubstrateInterface, data: bytes) -> _DecodedCall:
    """The call at the start of ``data`` (its exact bytes in :attr:`_DecodedCall.used`)."""
    call = substrate.runtime_config.create_scale_object(
        "Call", data=ScaleBytes(data), metadata=substrate.metadata
    )
    call.decode(check_remaining=False)
    return _decoded(call)


def _as_multi_call(substrate: SubstrateInterface, used: bytes) -> _DecodedCall:
    """The call a ``Multisig.as_multi`` carries, cut from its encoding: after ``threshold: u16``,
    ``other_signatories: Vec<AccountId32>`` and ``maybe_timepoint: Option<{height: u32, index:
    u32}>``, either a length-prefixed ``OpaqueCall`` (older runtimes, the devnet's included) or
    the call itself (``Box<RuntimeCall>``), as the runtime's metadata says. Decoded once here,
    and returned decoded (the caller walks this value, it does not decode the bytes again)."""
    reader = ScaleReader(used, 2)  # 2 bytes of call index
    reader.u16()
    for _ in range(reader.compact_u32()):
        reader.fixed(32, "signatory")
    if reader.u8() == 1:
        reader.fixed(8, "timepoint")
    [function] = [
        call
        for pallet in substrate.metadata.pallets
        if pallet.name == "Multisig" and pallet.calls
        for call in pallet.calls
        if call.name == "as_multi"
    ]
    # Read from the metadata remarks() initialised for this block, not through
    # get_metadata_call_function, which first re-initialises the runtime at the chain's head:
    # three round trips per as_multi, and another runtime's layout after an upgrade.
    [kind] = [a.value.get("typeName", "") for a in function.args if a.value["name"] == "call"]
    if "Opaque" in str(kind):
        data = reader.fixed(reader.compact_u32(), "opaque call")
        inner = _decode_call(substrate, data)
        if len(inner.used) != len(data):
            raise AdapterError("Multisig.as_multi: the opaque call does not decode to its length")
        return inner
    return _decode_call(substrate, used[reader.offset :])


def _split_batch(substrate: SubstrateInterface, call: _DecodedCall) -> tuple[_DecodedCall, ...]:
    """A ``Utility`` batch's calls, each decoded from the batch's bytes in turn (when the
    batch's own decode did not show them: :attr:`_DecodedCall.calls`)."""
    reader = ScaleReader(call.used, 2)  # 2 bytes of call index
    count = reader.compact_u32()
    offset = reader.offset
    calls: list[_DecodedCall] = []
    for _ in range(count):
        inner = _decode_call(substrate, call.used[offset:])
        calls.append(inner)
        offset += len(inner.used)
    if offset != len(call.used):
        raise AdapterError(f"Utility.{call.function} does not decode to its own length")
    return tuple(calls)


def _remarks_in_call(
    substrate: SubstrateInterface, call: _DecodedCall, depth: int = 0, *, as_multisig: bool = False
) -> list[tuple[bytes, bool]]:
    """The ``remark`` arguments of every ``System.remark_with_event`` in a call, in execution
    order, looking into ``Utility`` batches (which dispatch with the signer's own origin) and
    into the call of a ``Multisig.as_multi`` (dispatched as the multisig, if it executes), each
    with whether it is dispatched as a multisig rather than as the signer.

    The bytes are cut from the call's encoding with the light client's SCALE reader, not taken
    from substrate-interface's decoded values, which show ``Vec<u8>`` as text when it is UTF-8
    (and, for nested calls, are shared between calls of the same function). Every remark is
    therefore a contiguous slice of the bytes the call was decoded from (each step below cuts
    a slice of its call's :attr:`~_DecodedCall.used`): what :meth:`SubstrateClient.remarks`'
    prefilter relies on.
    """
    if (call.pallet, call.function) == ("System", "remark_with_event"):
        reader = ScaleReader(call.used, 2)  # 2 bytes of call index
        remark = reader.length_prefixed()
        reader.finish()
        return [(remark, as_multisig)]
    if depth >= MAX_CALL_DEPTH:
        return []
    if (call.pallet, call.function) == ("Multisig", "as_multi"):
        try:
            inner = _as_multi_call(substrate, call.used)
        except Exception as exc:
            # An OpaqueCall is bytes the runtime keeps undecoded: anyone can put garbage on
            # chain in one (it just never executes), and scalecodec then raises whatever it
            # likes (RemainingScaleBytesNotEmptyException is no ValueError). Nothing in it can
            # be a message; every party skips it alike (same code), and a scan must never
            # stall on one crafted extrinsic.
            log.warning(
                "Multisig.as_multi whose call does not decode (%s): %s",
                type(exc).__name__,
                one_line(str(exc)),
            )
            return []
        return _remarks_in_call(substrate, inner, depth + 1, as_multisig=True)
    if call.pallet != "Utility" or call.function not in _BATCH_CALLS:
        return []
    calls = call.calls if call.calls is not None else _split_batch(substrate, call)
    remarks: list[tuple[bytes, bool]] = []
    for inner in calls:
        remarks += _remarks_in_call(substrate, inner, depth + 1, as_multisig=as_multisig)
    return remarks


def _asset_transfer(event: SubstrateEvent) -> AssetTransfer:
    attrs = event.attributes if isinstance(event.attributes, dict) else {}
    try:
        return AssetTransfer(
            asset_id=int(attrs["asset_id"]),
            source=account_bytes(attrs["from"]),
            target=account_bytes(attrs["to"]),
            amount=int(attrs["amount"]),
        )
    except (KeyError, TypeError, ValueError):
        raise AdapterError(f"malformed Assets.Transferred event {one_line(repr(attrs))}") from None


def _balance_transfer(event: SubstrateEvent) -> BalanceTransfer:
    attrs = event.attributes if isinstance(event.attributes, dict) else {}
    try:
        return BalanceTransfer(
            source=account_bytes(attrs["from"]),
            target=account_bytes(attrs["to"]),
            amount=int(attrs["amount"]),
        )
    except (KeyError, TypeError, ValueError):
        raise AdapterError(f"malformed Balances.Transfer event {one_line(repr(attrs))}") from None


def fee_transfer(
    event: SubstrateEvent, fee_account: bytes | None, block_number: int
) -> BalanceTransfer | None:
    """A ``Balances.Transfer`` event as a possible delivery fee: None without a
    ``fee_account`` (the chain takes no fees: nothing to parse, nothing that can fail), and
    None, logged, for one that cannot be parsed (it pays nothing; the block is still read)."""
    if fee_account is None:
        return None
    try:
        return _balance_transfer(event)
    except AdapterError as exc:
        log.warning("block %d: %s (pays nothing)", block_number, exc)
        return None


def _carrying_prefix(extrinsics: Sequence[bytes]) -> frozenset[int]:
    """The indexes of the extrinsics whose bytes contain :data:`REMARK_PREFIX` anywhere: the
    only ones :meth:`SubstrateClient.remarks` decodes (nor does it decode a block's events
    when there is none).

    Why nothing is lost: a remark is a message only if it starts with ``PSRL``
    (:func:`~light_clients.substrate.remark.validate_remark`, the committee's own refunds
    included), and every remark :func:`_remarks_in_call` returns is a contiguous slice of its
    extrinsic's bytes: a ``Vec<u8>`` is a compact length then the raw bytes, a batch's calls
    are concatenated, an ``OpaqueCall`` is a length-prefixed copy of the call and a boxed
    call is the call itself; nothing the decoder follows is compressed, hashed or split. So a
    remark starting with ``PSRL`` puts ``PSRL`` into its extrinsic. What an extrinsic without
    it could have given is remarks that every consumer refuses (``missing-prefix``): they are
    no longer reported, logged or counted as skipped.

    Hostile view: anyone can put ``PSRL`` into any extrinsic (a body, an account, a remark
    of someone else's) to have it decoded: that is the cost of every extrinsic before this
    filter, no more. Nobody can hide a message from it, since the message's own bytes carry
    the prefix. The node could drop bytes, but it can serve any body today (the body is not
    checked against the extrinsics root), so it gains nothing new. One cross-check is lost:
    an event naming an extrinsic a short body lacks failed the scan; a body without ``PSRL``
    is now not read that far, so a broken node's short body passes as "no messages"
    (docs/substrate.md, "Trust and limits").

    Cost: the delivery blocks of the committee (an ``as_multi`` around ~1,000 calls and as
    many events, delivered message bodies carrying no prefix) were decoded in full by every
    attester and the relayer, about 70 % of their CPU on an Asset Hub route; now one byte
    search each.
    """
    return frozenset(i for i, encoded in enumerate(extrinsics) if REMARK_PREFIX in encoded)


def allow_the_deepest_call() -> None:
    """Raise this process's recursion limit to :data:`SCAN_RECURSION_LIMIT` (never lower it).

    scalecodec decodes a call recursively, about 12 Python frames per level of nesting, so
    under Python's default limit (1000) a ``Utility.batch`` nested ~80 deep, which anyone can
    put on chain for a fee, made every decode of its extrinsic raise ``RecursionError``: its
    block's :meth:`SubstrateClient.remarks` failed on every attempt and the relayer's and every
    attester's scan of that origin stopped there for ever. With this limit every call the
    runtime takes (:data:`RUNTIME_MAX_CALL_DEPTH`) decodes, in every process alike: the
    outcome no longer depends on how deep a process's stack is. Skipping the extrinsic on
    ``RecursionError`` instead would have made it depend on exactly that, and the relayer and
    the attesters could then disagree about a block.

    Process-wide and done once, by :meth:`SubstrateClient.connect`, since every decode runs
    through a connected client (in its worker thread; Python 3.11 applies the new limit to
    threads already running). No thread stack size needs setting: from Python 3.11 on a call
    between Python functions takes no C stack, and scalecodec's recursion is Python only
    (measured: 8,000 levels, 96,000 frames, decode in a thread with a 32 KiB stack).

    What stays out of reach: an ``OpaqueCall`` nested far deeper than the runtime allows
    (from about 420 levels on) still fails to decode, and is skipped as every undecodable
    ``OpaqueCall`` is (:func:`_remarks_in_call`). The runtime can never execute it, and where
    the failure sets in depends only on the depth the decode starts at, which is the same in
    every process (each runs it in a trio worker thread, through the same code). A body a
    node serves with a call that deep outside an ``OpaqueCall`` (none is on chain) is an
    :class:`AdapterError`, as any body that does not decode.
    """
    if sys.getrecursionlimit() < SCAN_RECURSION_LIMIT:
        sys.setrecursionlimit(SCAN_RECURSION_LIMIT)


def _extrinsic_signer_and_call(
    substrate: SubstrateInterface, encoded: bytes
) -> tuple[bytes | None, _DecodedCall]:
    """The signer of an extrinsic (None if unsigned) and its call, decoded once: the
    extrinsic's own decode decodes the call, which is taken from it, not decoded again."""
    extrinsic = substrate.runtime_config.create_scale_object(
        "Extrinsic", data=ScaleBytes(encoded), metadata=substrate.metadata
    )
    value = extrinsic.decode()
    call = _decoded(extrinsic.value_object["call"])
    if not extrinsic.signed:
        return None, call
    return account_bytes(value.get("address")), call


# --- the client --------------------------------------------------------------------------


class SubstrateClient:
    """One Substrate node over WebSocket (``ws://`` or ``wss://``), used from trio.

    ``async with SubstrateClient(url) as client:`` connects (and reads the runtime metadata:
    decoding it takes ~1.5-3 CPU s, once per process for the same metadata,
    :mod:`adapters.substrate.metadata`) and closes. Several clients may exist; all share
    :data:`SUBSTRATE_LIMITER`.
    """

    def __init__(self, url: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._substrate: SubstrateInterface | None = None
        self._raw_header_method: str | None = None
        self._genesis = b""
        self._next_nonces: dict[bytes, int] = {}
        self._nonces_forgotten: dict[bytes, int] = {}
        """Per signer, how often its nonce count was forgotten (:meth:`_forget_nonce`)."""
        self._nonces_trusted: set[bytes] = set()
        """Signers whose count the node's pool confirmed (:meth:`submit_call`): until then,
        and again after any forgetting, every submission asks the node."""
        self._storage_ahead: set[bytes] = set()
        """Signers whose on-chain nonce (``System.Account``) this client caught ahead of the
        node's own pool count (:meth:`_next_nonce`): a lie, or a read of another block.
        Until storage is no longer ahead of the pool, trust needs the storage read too
        (review RFINA L2: trusted again on the pool alone, the next storage read met the same
        lie, and a warning blaming "the key signed elsewhere" came every other submission)."""
        self._nonce_lock = trio.Lock()
        self._fast: PerRuntime[FastCalls] = PerRuntime()
        """The delivery shapes this runtime encodes as FastCalls does (probed once each)."""
        self._event_walker = EventWalker()
        self._fee_extrinsics = FeeExtrinsics()
        self._block_extrinsics: dict[bytes, list[bytes]] = {}
        """The extrinsic hashes of the last :data:`BLOCKS_REMEMBERED` blocks waits looked in
        (by block hash: a block's body never changes under its hash)."""
        self._block_fetches: dict[bytes, trio.Lock] = {}
        """One lock per block being fetched, so that its waits fetch it once."""

    # lifecycle

    async def connect(self) -> None:
        """Open the websocket and load the runtime metadata (idempotent); allow the deepest
        call the runtime takes to be decoded (:func:`allow_the_deepest_call`)."""
        if self._substrate is not None:
            return
        allow_the_deepest_call()

        def open_interface() -> tuple[SubstrateInterface, str | None, bytes]:
            substrate = SharedMetadataInterface(
                url=self.url, ws_options=WS_OPTIONS | {"timeout": self.timeout}
            )
            try:
                substrate.init_runtime()
                methods = _result(substrate.rpc_request("rpc_methods", []), "rpc_methods")
                listed = set(methods.get("methods", [])) if isinstance(methods, dict) else set()
                genesis = _hash_bytes(substrate.get_block_hash(0), "genesis hash")
            except BaseException:
                substrate.close()
                raise
            raw = next(
                (m for m in ("archive_v1_header", "archive_unstable_header") if m in listed), None
            )
            return substrate, raw, genesis

        try:
            substrate, raw, genesis = await trio.to_thread.run_sync(
                open_interface, limiter=SUBSTRATE_LIMITER
            )
        except Exception as exc:
            raise AdapterError(
                f"cannot connect to {redact_url(self.url)}: {scrub_url(_describe(exc), self.url)}"
            ) from None
        self._substrate, self._raw_header_method, self._genesis = substrate, raw, genesis

    async def aclose(self) -> None:
        """Close the websocket."""
        substrate, self._substrate = self._substrate, None
        if substrate is not None:
            with contextlib.suppress(Exception):
                await trio.to_thread.run_sync(substrate.close, limiter=SUBSTRATE_LIMITER)

    async def __aenter__(self) -> SubstrateClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, what: str, work: Callable[[SubstrateInterface], T]) -> T:
        """Run ``work(substrate)`` in the worker thread; any failure is one AdapterError line."""
        substrate = self._substrate
        if substrate is None:
            raise AdapterError(f"{what} on {redact_url(self.url)}: not connected")
        try:
            return await trio.to_thread.run_sync(work, substrate, limiter=SUBSTRATE_LIMITER)
        except AdapterError as exc:
            raise AdapterError(f"{what} on {redact_url(self.url)}: {exc}") from None
        except Exception as exc:  # substrate-interface, websocket and scalecodec raise anything
            raise AdapterError(
                f"{what} on {redact_url(self.url)}: {scrub_url(_describe(exc), self.url)}"
            ) from None

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """A raw JSON-RPC call; its ``result``."""
        return await self._run(
            method, lambda s: _result(s.rpc_request(method, list(params)), method)
        )

    # chain

    async def genesis_hash(self) -> bytes:
        """Block 0's hash as the node reports it (what ``CheckGenesis`` signs).

        On chopsticks this is a placeholder (``0x4545…45``), not the hash of a header.
        """
        return _hash_bytes(await self.rpc("chain_getBlockHash", [0]), "genesis hash")

    async def block_hash(self, number: int) -> bytes | None:
        """The canonical hash at ``number`` now; None if the node has no such block yet."""
        result = await self.rpc("chain_getBlockHash", [number])
        return None if result is None else _hash_bytes(result, f"hash of block {number}")

    async def header(self, block_hash: bytes) -> SubstrateHeader:
        """The header of ``block_hash``, its SCALE bytes hashed by the light client."""
        method = self._raw_header_method
        if method is not None:
            result = await self.rpc(method, [to_hex(block_hash)])
            if result is None:
                raise AdapterError(
                    f"{redact_url(self.url)} has no header for block {to_hex(block_hash)}"
                )
            raw = _hex_bytes(result, "SCALE header")
            try:
                return _verified_header(raw, block_hash)
            except AdapterError as exc:
                raise AdapterError(f"{method} on {redact_url(self.url)}: {exc}") from None
        obj = await self.rpc("chain_getHeader", [to_hex(block_hash)])
        try:
            return header_from_json(obj, block_hash)
        except AdapterError as exc:
            raise AdapterError(f"chain_getHeader on {redact_url(self.url)}: {exc}") from None

    async def finalized_head(self) -> SubstrateHeader:
        """The header of the node's finalized head (on chopsticks: every block, at once)."""
        head = _hash_bytes(await self.rpc("chain_getFinalizedHead"), "finalized head")
        return await self.header(head)

    async def best_number(self) -> int:
        """The number of the node's best block."""
        return await self._number_of(None)

    async def _number_of(self, block_hash: bytes | None) -> int:
        obj = await self.rpc("chain_getHeader", [] if block_hash is None else [to_hex(block_hash)])
        number = obj.get("number") if isinstance(obj, dict) else None
        try:
            return int(number, 16) if isinstance(number, str) else int(str(number))
        except ValueError:
            raise AdapterError(
                f"chain_getHeader on {redact_url(self.url)}: malformed number"
            ) from None

    async def query(
        self,
        module: str,
        storage_function: str,
        params: Sequence[Any] = (),
        block_hash: bytes | None = None,
    ) -> Any:
        """A storage value as substrate-interface decodes it (None when absent), at the best
        block or ``block_hash``. Not proven (chopsticks has no read proofs)."""
        at = None if block_hash is None else to_hex(block_hash)
        return await self._run(
            f"query {module}.{storage_function}",
            lambda s: s.query(module, storage_function, list(params), block_hash=at).value,
        )

    async def query_many(
        self, module: str, storage_function: str, params: Sequence[Sequence[Any]]
    ) -> list[Any]:
        """Several entries of one storage map in one round trip (``state_queryStorageAt``), in
        the order of ``params``; None for absent ones. Not proven, like :meth:`query`."""
        if not params:
            return []

        def work(substrate: SubstrateInterface) -> list[Any]:
            keys = [substrate.create_storage_key(module, storage_function, list(p)) for p in params]
            found = {key.to_hex(): obj for key, obj in substrate.query_multi(keys)}
            return [None if (obj := found.get(key.to_hex())) is None else obj.value for key in keys]

        return await self._run(f"query {module}.{storage_function} ×{len(params)}", work)

    async def query_map(
        self, module: str, storage_function: str, params: Sequence[Any] = (), *, limit: int = 1000
    ) -> list[tuple[Any, Any]]:
        """Up to ``limit`` entries ``(remaining key, value)`` of a storage map under the prefix
        ``params`` (e.g. every open operation of one multisig). Not proven, like :meth:`query`."""

        def work(substrate: SubstrateInterface) -> list[tuple[Any, Any]]:
            result = substrate.query_map(
                module, storage_function, list(params), max_results=limit, page_size=min(limit, 100)
            )
            return [(key.value, value.value) for key, value in result]

        return await self._run(f"query_map {module}.{storage_function}", work)

    async def events(self, block_hash: bytes) -> list[SubstrateEvent]:
        """Every event of the block (``System.Events`` at ``block_hash``), in order."""
        return await self._run("events", lambda s: _events(s, block_hash))

    async def remarks(
        self,
        block_hash: bytes,
        *,
        prove_events: EventsProver | None = None,
        fee_account: bytes | None = None,
    ) -> list[RemarkSeen]:
        """Every ``System.Remarked`` event of the block, joined with the remark that emitted it.

        The event's phase gives the extrinsic; the remark bytes are the ``remark`` argument of a
        ``System.remark_with_event`` in that extrinsic's call (at top level or inside
        ``Utility.batch``/``batch_all``/``force_batch``, which dispatch with the signer's own
        origin). Several remarks in one extrinsic are matched in order: each event to the next
        remark call whose blake2-256 is the event's hash (so a call that emitted nothing, as
        after an interrupted ``Utility.batch``, is stepped over).

        Left out, and logged: events whose sender is not the signer (remarks dispatched as
        another account: through ``Multisig.as_multi``, a proxy, a derivative account; the
        committee's own deliveries are such), since no call of the signer's own batches can
        have emitted them and no such remark could be a valid message; and events with no
        matching call at all. Left out silently: the remarks of extrinsics whose bytes do not
        contain ``PSRL`` (:func:`_carrying_prefix`: none of them can be a message; a block
        without any such extrinsic costs one byte search, no decoding). The result holds every
        remark the outbox rules must judge.

        ``prove_events``: called with the block's (hash-checked) header ONLY when the body
        carries ``PSRL``, after the prefilter: it returns the raw ``System.Events`` value proven
        under that header's state root (:func:`adapters.substrate.finality.read_proof`), which
        is decoded instead of asking the node. So a block no message can be in costs its body
        alone: no read proof is fetched or checked for it (review RFINAL, M2: the committee's
        delivery blocks, ~1,000 events each, were proven in full only to be thrown away).

        ``fee_account``: the chain's account for delivery fees, if it takes any. Only then are
        ``Balances.Transfer`` events read into :attr:`RemarkSeen.balance_transfers`; one that
        cannot be parsed (a runtime shaping it differently) is logged and pays nothing, and
        never fails the block: the scan must not halt on a payment it cannot read.
        """

        def body(substrate: SubstrateInterface) -> tuple[SubstrateHeader, list[bytes]]:
            block = _result(substrate.rpc_request("chain_getBlock", [to_hex(block_hash)]), "block")
            if not isinstance(block, dict) or not isinstance(block.get("block"), dict):
                raise AdapterError(f"node has no block {to_hex(block_hash)}")
            header = header_from_json(block["block"].get("header"), block_hash)
            extrinsics = block["block"].get("extrinsics")
            if not isinstance(extrinsics, list):
                raise AdapterError(f"block {to_hex(block_hash)} has a malformed body")
            return header, [_hex_bytes(item, "extrinsic") for item in extrinsics]

        what = f"remarks of block {to_hex(block_hash)}"
        header, encoded_all = await self._run(what, body)
        carrying = _carrying_prefix(encoded_all)
        if not carrying:
            return []  # no event read or proven, no call decoded: see _carrying_prefix
        proven_events = None if prove_events is None else await prove_events(header)

        def work(substrate: SubstrateInterface) -> list[RemarkSeen]:
            # decode with this block's runtime
            substrate.init_runtime(block_hash=to_hex(block_hash))
            by_extrinsic: dict[int, list[SubstrateEvent]] = {}
            with_remarks: set[int] = set()
            for event in _events(substrate, block_hash, proven_events):
                if event.extrinsic_index is not None:
                    by_extrinsic.setdefault(event.extrinsic_index, []).append(event)
                if (event.pallet, event.name) == ("System", "Remarked"):
                    if event.extrinsic_index is None:
                        log.warning("block %d: Remarked outside an extrinsic", header.number)
                        continue
                    with_remarks.add(event.extrinsic_index)
            seen: list[RemarkSeen] = []
            for index in sorted(with_remarks):
                if index >= len(encoded_all):
                    raise AdapterError(
                        f"block {header.number} has {len(encoded_all)} extrinsics, "
                        f"an event names extrinsic {index}"
                    )
                if index not in carrying:
                    continue  # no remark of it can be a message: see _carrying_prefix
                encoded = encoded_all[index]
                signer, call = _extrinsic_signer_and_call(substrate, encoded)
                if signer is None:
                    log.warning(
                        "block %d: Remarked from unsigned extrinsic %d", header.number, index
                    )
                    continue
                candidates = _remarks_in_call(substrate, call)
                hashes = [blake2_256(remark) for remark, _ in candidates]
                cursor = 0
                transfers: list[AssetTransfer] = []
                paid: list[BalanceTransfer] = []  # since the previous Remarked event
                for event in by_extrinsic[index]:
                    if (event.pallet, event.name) == ("Assets", "Transferred"):
                        transfers.append(_asset_transfer(event))
                        continue
                    if (event.pallet, event.name) == ("Balances", "Transfer"):
                        fee = fee_transfer(event, fee_account, header.number)
                        if fee is not None:
                            paid.append(fee)
                        continue
                    if (event.pallet, event.name) != ("System", "Remarked"):
                        continue
                    since_last, paid = tuple(paid), []
                    attrs = event.attributes if isinstance(event.attributes, dict) else {}
                    event_hash = _hash_bytes(attrs.get("hash"), "Remarked hash")
                    sender = account_bytes(attrs.get("sender"))
                    match = next(
                        (j for j in range(cursor, len(hashes)) if hashes[j] == event_hash), None
                    )
                    # A remark the multisig dispatched (inside an executed as_multi) is passed
                    # on only if it is meant for Passerelle (the committee's refunds:
                    # validate_remark accepts it from the configured multisig alone); the
                    # committee's deliveries (the message itself, no prefix) are not.
                    as_multisig = (
                        match is not None
                        and candidates[match][1]
                        and candidates[match][0].startswith(REMARK_PREFIX)
                    )
                    if match is None or (sender != signer and not as_multisig):
                        # Expected for remarks dispatched as another account (the committee's
                        # multisig deliveries): nothing an operator must act on.
                        log.debug(
                            "block %d extrinsic %d: Remarked %s by %s is not one of the signer's "
                            "own remark calls; skipped",
                            header.number,
                            index,
                            to_hex(event_hash),
                            to_hex(sender),
                        )
                        continue
                    cursor = match + 1
                    seen.append(
                        RemarkSeen(
                            block_number=header.number,
                            block_hash=block_hash,
                            extrinsic_index=index,
                            signer=signer,
                            remark=candidates[match][0],
                            event_sender=sender,
                            event_hash=event_hash,
                            extrinsic_hash=blake2_256(encoded),
                            transfers=tuple(transfers),
                            balance_transfers=since_last,
                        )
                    )
            return seen

        return await self._run(what, work)

    # calls and extrinsics

    async def compose(
        self, module: str, function: str, params: Mapping[str, Any] | None = None
    ) -> Call:
        """Compose ``module.function(**params)``.

        ``params`` are as substrate-interface takes them: accounts as SS58 or ``0x``-hex strings
        (not bytes), ``Vec<u8>`` as bytes, nested calls as :class:`Call` objects.
        """
        arguments = _to_generic(dict(params or {}))

        def work(substrate: SubstrateInterface) -> Call:
            generic = substrate.compose_call(module, function, arguments)
            data = bytes(generic.data.data)
            return Call(module, function, data, blake2_256(data), generic)

        return await self._run(f"compose {module}.{function}", work)

    async def compose_batch_all(self, calls: Sequence[tuple[str, str, Mapping[str, Any]]]) -> Call:
        """``Utility.batch_all`` of ``calls``, each ``(module, function, params)``.

        When every call is of a shape :class:`~adapters.substrate.encoding.FastCalls` found to
        encode as substrate-interface does in this runtime (the calls a delivery is made of),
        the bytes are written directly — ~4 ms instead of ~0.05 s of CPU for ~1,000 calls on a
        quiet host (~0.2 s loaded);
        otherwise substrate-interface composes it, nested calls handed over as plain dicts
        rather than composed one by one. The same bytes and hash either way; ``generic`` is a
        ``GenericCall`` holding them, for nesting in ``Multisig.as_multi`` or a fee estimate.
        """
        nested = [
            {"call_module": module, "call_function": function, "call_args": dict(params)}
            for module, function, params in calls
        ]
        value = {
            "call_module": "Utility",
            "call_function": "batch_all",
            "call_args": {"calls": nested},
        }

        def work(substrate: SubstrateInterface) -> Call:
            substrate.init_runtime()
            data = self._fast.get(substrate, FastCalls.probe).batch_all(calls)
            if data is None:
                generic = substrate.compose_call("Utility", "batch_all", {"calls": nested})
                data = bytes(generic.data.data)
            else:
                generic = substrate.runtime_config.create_scale_object(
                    "Call", data=ScaleBytes(data), metadata=substrate.metadata
                )
                generic.value = value  # what compose_call leaves there: a fee estimate reads it
            return Call("Utility", "batch_all", data, blake2_256(data), generic)

        return await self._run("compose Utility.batch_all", work)

    async def estimate_fee(self, keypair: Keypair, call: Call) -> Fee:
        """Fee and weight of ``call`` signed by ``keypair`` (``TransactionPaymentApi.query_info``,
        the runtime call behind ``payment_queryInfo``; chopsticks' own ``payment_queryInfo``
        cannot decode this runtime's extrinsics)."""

        def work(substrate: SubstrateInterface) -> Fee:
            extrinsic = self._fee_extrinsics.for_call(substrate, keypair, call)
            if extrinsic is None:
                info = substrate.get_payment_info(call.generic, keypair)
            else:
                length = substrate.runtime_config.create_scale_object("u32")
                length.encode(len(extrinsic.data))
                answer = substrate.runtime_call(
                    "TransactionPaymentApi", "query_info", [extrinsic, length]
                )
                info = answer.value
            partial = info.get("partialFee") if isinstance(info, dict) else None
            if not isinstance(partial, int):
                raise AdapterError(f"malformed fee estimate {one_line(repr(info))}")
            ref_time, proof_size = _weight(info.get("weight"))
            return Fee(partial_fee=partial, weight=ref_time, proof_size=proof_size)

        return await self._run(f"fee of {call.module}.{call.function}", work)

    def weight_arg(self, ref_time: int, proof_size: int = 0) -> int | dict[str, int]:
        """A ``Weight`` call argument for this runtime: a u64 (weights v1, like our devnet's
        runtime) or ``{ref_time, proof_size}`` (weights v2)."""
        substrate = self._substrate
        if substrate is not None and substrate.config.get("is_weight_v2"):
            return {"ref_time": ref_time, "proof_size": proof_size}
        return ref_time

    async def account_next_index(self, account: bytes) -> int:
        """``system_accountNextIndex``: the next nonce, transactions in the pool included."""
        result = await self.rpc("system_accountNextIndex", [to_hex(account)])
        if not isinstance(result, int) or isinstance(result, bool) or result < 0:
            raise AdapterError(
                f"system_accountNextIndex on {redact_url(self.url)}: malformed {result!r}"
            )
        return result

    async def on_chain_nonce(self, account: bytes) -> int:
        """``account``'s nonce in ``System.Account`` at the best block: its included
        extrinsics, pool left out. A storage read (``state_getStorage``), not a runtime call:
        on chopsticks the main thread answers it without the executor that builds blocks."""
        result = await self.rpc("state_getStorage", [to_hex(system_account_key(account))])
        return account_nonce(None if result is None else _hex_bytes(result, "System.Account"))

    async def _next_nonce(self, signer: bytes) -> tuple[int, bool]:
        """The nonce for ``signer``'s next extrinsic, and whether the node's pool agrees with
        this client's count (see :meth:`submit_call`, which alone calls this, under the lock).

        Three cases, cheapest last:
        - no count: ``system_accountNextIndex``;
        - a count the node has not confirmed yet (from the second submission after a
          forgetting on, until it agrees): the larger of the count and
          ``system_accountNextIndex``. The node agrees when its answer is not
          above the count (the nonce signed): its pool then holds nothing of this key our
          next nonces would collide with. After a gap, a real node promotes our own older
          extrinsics from its future queue once the gap is filled, and until then counts them
          nowhere; so the first submission after a forgetting cannot agree, the second can;
        - a confirmed count: the larger of the count and the on-chain nonce (a storage read).
          Someone else's extrinsic signed with our key and already included shows there; one
          still in a pool does not (docs/substrate.md: an attester's key signs nothing else).
          A chain ahead of the count withdraws the confirmation and asks the node at once;
          the jump is believed only as far as the pool shows it (the pool counts from the
          chain's nonce up: a pool answer below the storage read means a lie or another
          block's read, review RINTA L3). Storage so caught ahead of the pool is remembered
          per signer (:attr:`_storage_ahead`, one warning): until storage is no longer
          ahead of the pool, the second case reads storage too and trusts only then.

        What no rule here sees: our own extrinsics in a real node's future queue behind k
        evicted holes are counted nowhere until the last hole is filled, so the count may be
        confirmed while one of them holds the next nonce; :meth:`submit_call` meets that as
        a refusal at a trusted count and retries once with the node asked (review RINTA L1).
        """
        counted = self._next_nonces.get(signer)
        if counted is None:
            return await self.account_next_index(signer), False
        if signer in self._nonces_trusted:
            on_chain = await self.on_chain_nonce(signer)
            if on_chain <= counted:
                return counted, True
            self._nonces_trusted.discard(signer)
            pooled = await self.account_next_index(signer)
            if pooled < on_chain:
                # The pool counts from the chain's nonce up, so an honest node never answers
                # below its own storage: the jump is a lie or a read of another block (review
                # RINTA L3). Signed at what the pool and our count say, and not trusted: a
                # lie trusted would make every extrinsic future until a wait failed.
                self._note_storage_ahead(signer, on_chain, pooled)
                return max(pooled, counted), False
            log.warning(
                "nonce of %s on %s: the chain counts %d, this client %d (the key signed "
                "elsewhere); the node's pool says %d",
                to_hex(signer),
                redact_url(self.url),
                on_chain,
                counted,
                pooled,
            )
            return pooled, pooled == on_chain
        pooled = await self.account_next_index(signer)
        agrees = pooled <= counted
        if agrees and signer in self._storage_ahead:
            # Storage was caught ahead of this pool: believed again only once it is not, or
            # the next trusted submission reads the same lie and distrusts again. Not
            # "equal": an honest storage read is below the pool while ours are pooled.
            on_chain = await self.on_chain_nonce(signer)
            if on_chain > pooled:
                return max(pooled, counted), False
            self._storage_ahead.discard(signer)
        return max(pooled, counted), agrees

    def _note_storage_ahead(self, signer: bytes, on_chain: int, pooled: int) -> None:
        """Remember that ``signer``'s on-chain nonce read ``on_chain`` while the node's pool
        said ``pooled`` (below it), and say so once until they agree again."""
        if signer in self._storage_ahead:
            return
        self._storage_ahead.add(signer)
        log.warning(
            "nonce of %s on %s: the node's storage answer (%d) is ahead of its own pool (%d): "
            "not believed; the count is trusted again once storage is not ahead of the pool",
            to_hex(signer),
            redact_url(self.url),
            on_chain,
            pooled,
        )

    @overload
    async def submit(
        self,
        keypair: Keypair,
        call_module: str,
        call_function: str,
        params: Mapping[str, Any] | None = ...,
        *,
        wait_for_inclusion: Literal[True] = ...,
        timeout: float = ...,
    ) -> Included: ...

    @overload
    async def submit(
        self,
        keypair: Keypair,
        call_module: str,
        call_function: str,
        params: Mapping[str, Any] | None = ...,
        *,
        wait_for_inclusion: Literal[False],
        timeout: float = ...,
    ) -> Submitted: ...

    async def submit(
        self,
        keypair: Keypair,
        call_module: str,
        call_function: str,
        params: Mapping[str, Any] | None = None,
        *,
        wait_for_inclusion: bool = True,
        timeout: float = INCLUSION_TIMEOUT,
    ) -> Included | Submitted:
        """Compose, sign with ``keypair``, submit; by default wait until it is in a block."""
        call = await self.compose(call_module, call_function, params)
        if wait_for_inclusion:
            return await self.submit_call(keypair, call, timeout=timeout)
        return await self.submit_call(keypair, call, wait_for_inclusion=False)

    @overload
    async def submit_call(
        self,
        keypair: Keypair,
        call: Call,
        *,
        wait_for_inclusion: Literal[True] = ...,
        timeout: float = ...,
    ) -> Included: ...

    @overload
    async def submit_call(
        self,
        keypair: Keypair,
        call: Call,
        *,
        wait_for_inclusion: Literal[False],
        timeout: float = ...,
    ) -> Submitted: ...

    async def submit_call(
        self,
        keypair: Keypair,
        call: Call,
        *,
        wait_for_inclusion: bool = True,
        timeout: float = INCLUSION_TIMEOUT,
    ) -> Included | Submitted:
        """Sign ``call`` with ``keypair`` (mortal, :data:`MORTALITY_PERIOD`) and submit it.

        Nonces: never below what the node or the chain already counts for the signer. The
        client keeps a count (the one after its last accepted submission); the count only
        advances when the node accepted the extrinsic into its pool (a refused one consumed
        nothing); any failure to submit, or to see the extrinsic included, forgets it so the
        next submission asks the node again (also when it happens while a submission is under
        way: that one does not set the value back). An extrinsic included with a failed
        dispatch consumed its nonce like any other. Submissions of one client are serialised
        by a lock, so two tasks never sign with the same nonce.

        Asking the node (``system_accountNextIndex``, pool included) is a runtime call
        (``AccountNonceApi``), which chopsticks runs on the one executor that also builds its
        blocks (0.07 s of its CPU each, two per delivery batch; docs/performance.md, session 8).
        So it is asked only until it has confirmed the count; after that each submission reads
        the on-chain nonce from storage instead (:meth:`_next_nonce` says when and why). What
        that cannot see: someone else's extrinsic with our key still in a pool; ours may then
        replace it or be refused (a failure, which forgets the count). An attester's key must
        sign nothing else while it runs (docs/substrate.md).

        A runtime upgrade seen between generating the signature payload and encoding the
        extrinsic (the signer may take :data:`~adapters.signing.SIGN_TIMEOUT` in between) is
        an AdapterError before anything is submitted: the signature covers the old version.
        """
        signer = bytes(keypair.public_key)
        # Any forgetting of this signer's count from here on (another extrinsic's wait failed)
        # means the nonce this one gets may be taken: see below.
        forgotten = self._nonces_forgotten.get(signer, 0)
        async with self._nonce_lock:
            since = await self.best_number()
            # The era starts at the finalized head: its block hash (signed into the extrinsic)
            # cannot be reorged away.
            era_start = await self._number_of(
                _hash_bytes(await self.rpc("chain_getFinalizedHead"), "finalized head")
            )
            era = {"period": MORTALITY_PERIOD, "current": era_start}
            nonce, agreed = await self._next_nonce(signer)
            # Whether the nonce is the client's trusted count, read against storage only
            # (_next_nonce's third case): then the node's pool was not asked.
            trusted = signer in self._nonces_trusted
            try:
                extrinsic_hash = await self._sign_and_submit(keypair, call, nonce, era, forgotten)
            except AdapterError as exc:
                if not (trusted and _nonce_refused(exc)):
                    raise
                # Refused at a trusted count (review RINTA L1): the pool holds an extrinsic
                # of ours at that nonce the storage read cannot see (k evicted holes in a
                # real node's queue: the node counted our future ones nowhere until the last
                # hole was filled, and the count was confirmed in between), or the chain
                # moved past it. The failed submission forgot the count; ask the node now,
                # still under the lock, and sign once more: nothing of ours was accepted at
                # the refused nonce, so no extrinsic of ours is replaced, and the attester's
                # pipeline does not halt for it. A second refusal is raised.
                log.warning(
                    "nonce %d of %s refused by %s (%s); asking the node and signing once more",
                    nonce,
                    to_hex(signer),
                    redact_url(self.url),
                    exc,
                )
                forgotten = self._nonces_forgotten.get(signer, 0)
                nonce, agreed = await self._next_nonce(signer)
                extrinsic_hash = await self._sign_and_submit(keypair, call, nonce, era, forgotten)
            if self._nonces_forgotten.get(signer, 0) == forgotten:
                self._next_nonces[signer] = nonce + 1
                if agreed:
                    self._nonces_trusted.add(signer)
            # Else a wait of an earlier extrinsic failed while this one was being signed or
            # submitted: the count it was numbered from is not to be trusted, and setting it
            # again here would undo the forgetting (the next nonce asks the node).
        submitted = Submitted(
            extrinsic_hash, signer, nonce, since, era_start + MORTALITY_PERIOD - 1
        )
        if not wait_for_inclusion:
            return submitted
        return await self.wait_included(submitted, timeout=timeout)

    async def _sign_and_submit(
        self,
        keypair: Keypair,
        call: Call,
        nonce: int,
        era: dict[str, int],
        forgotten: int,
    ) -> bytes:
        """Sign ``call`` at ``nonce`` and ``era`` and submit it; its extrinsic hash. Part of
        :meth:`submit_call`, under its lock: ``forgotten`` is the signer's forgetting count
        the nonce was numbered under (a forgetting since refuses before submitting), and a
        failed submission forgets the count."""
        signer = bytes(keypair.public_key)

        def payload_of(substrate: SubstrateInterface) -> tuple[bytes, tuple[object, object]]:
            # substrate-interface signs CheckGenesis with whatever chain_getBlockHash(0) says
            # now. chopsticks, asked for any block hash it does not know, answers with its
            # genesis header and from then on reports that hash as block 0's: every
            # signature would be refused as badProof. Say so instead.
            genesis = _hash_bytes(substrate.get_block_hash(0), "genesis hash")
            if genesis != self._genesis:
                raise AdapterError(
                    f"the node's genesis hash changed from {to_hex(self._genesis)} to "
                    f"{to_hex(genesis)} (chopsticks does this after a query for an unknown "
                    "block hash; restart it)"
                )
            payload = substrate.generate_signature_payload(
                call=call.generic, era=dict(era), nonce=nonce
            )
            return bytes(payload.data), _runtime_of(substrate)

        def assemble(substrate: SubstrateInterface) -> tuple[bytes, bytes]:
            # With a signature given, substrate-interface only encodes: it never calls
            # keypair.sign here, inside the worker slot.
            extrinsic = substrate.create_signed_extrinsic(
                call=call.generic,
                keypair=keypair,
                nonce=nonce,
                era=dict(era),
                signature=signature,
            )
            # create_signed_extrinsic reads the runtime version again (generating the
            # payload did not), and the signer may have taken SIGN_TIMEOUT in between: a
            # runtime upgrade there gives a signature over the old spec_version encoded with
            # the new metadata, which the chain refuses (badProof). Refused here instead,
            # before a nonce or a round trip is spent; the next attempt signs the new one.
            runtime = _runtime_of(substrate)
            if runtime != signed_runtime:
                raise AdapterError(
                    f"the runtime changed from {_show_runtime(signed_runtime)} to "
                    f"{_show_runtime(runtime)} while the extrinsic was being signed: "
                    "not submitted (signed again at the next attempt)"
                )
            return bytes(extrinsic.data.data), bytes(extrinsic.extrinsic_hash)

        what = f"sign {call.module}.{call.function}"
        payload, signed_runtime = await self._run(what, payload_of)
        # The signature is asked between the two slot-holding steps, bounded in time and
        # checked (adapters.substrate.signing.sign_sr25519): a signer that hangs holds its own
        # threads, not SUBSTRATE_LIMITER, which every Substrate call of the process waits
        # for; one that lies is refused before a nonce is spent.
        signature = await sign_sr25519(
            signer, keypair.sign, payload, in_process=_signs_in_process(keypair)
        )
        encoded, extrinsic_hash = await self._run(what, assemble)
        if self._nonces_forgotten.get(signer, 0) != forgotten:
            # An earlier extrinsic's wait failed while this one was being prepared (its
            # count dropped, maybe after this nonce was read from the node, which leaves
            # out our extrinsics in a block being built): this nonce may be one of theirs,
            # and a reused one holds the extrinsic until the inclusion timeout.
            raise AdapterError(
                f"{what} on {redact_url(self.url)}: an earlier extrinsic of this account "
                "failed while this one was being signed; not submitted (nonce unsure)"
            )
        try:
            answer = await self.rpc("author_submitExtrinsic", [to_hex(encoded)])
        except AdapterError:
            self._forget_nonce(signer)
            raise
        if _hash_bytes(answer, "extrinsic hash") != extrinsic_hash:
            self._forget_nonce(signer)
            raise AdapterError(f"{redact_url(self.url)} accepted an extrinsic with another hash")
        return extrinsic_hash

    def _forget_nonce(self, signer: bytes) -> None:
        """Drop ``signer``'s nonce count (the next submission asks the node), also for a
        submission of it under way (:meth:`submit_call` does not set a count it took before)."""
        self._next_nonces.pop(signer, None)
        self._nonces_trusted.discard(signer)
        self._nonces_forgotten[signer] = self._nonces_forgotten.get(signer, 0) + 1

    async def wait_included(
        self,
        submitted: Submitted,
        *,
        timeout: float = INCLUSION_TIMEOUT,
        on_block: Callable[[], None] | None = None,
        kinds: Collection[tuple[str, str]] | None = None,
    ) -> Included:
        """Poll new blocks until ``submitted`` is in one; AdapterError on timeout or expiry.

        Waits in trio between polls (the worker slot is free meanwhile). Blocks are followed by
        number on the node's canonical chain; a reorg after inclusion is the finality policy's
        business, not this method's. ``on_block`` is called once the extrinsic is found in a
        block, before that block's events are read and decoded (a block of 500 mints has
        ~1,500 events: a few tenths of a second on a loaded host that a caller can use).

        ``kinds``: the ``(pallet, name)`` of the events the caller reads; only those (and
        ``System.ExtrinsicSuccess`` / ``ExtrinsicFailed``, the outcome) are decoded and kept
        in :attr:`Included.events`. An execution of a delivery batch has ~2,500 events of its
        own (each message's mint and remark); its executor reads three. None: all of them.
        """
        scanned = submitted.since_block
        with trio.move_on_after(timeout):
            while True:
                best = await self.best_number()
                while scanned < best:
                    number = scanned + 1
                    block_hash = await self.block_hash(number)
                    if block_hash is None:
                        break
                    found = await self._find_extrinsic(block_hash, submitted.extrinsic_hash)
                    if found is not None:
                        if on_block is not None:
                            on_block()
                        return await self._included(submitted, block_hash, number, found, kinds)
                    scanned = number
                if scanned >= submitted.valid_until:
                    self._forget_nonce(submitted.signer)
                    raise AdapterError(
                        f"extrinsic {to_hex(submitted.extrinsic_hash)} (nonce {submitted.nonce}) "
                        f"expired on {redact_url(self.url)} without being included"
                    )
                await trio.sleep(POLL_INTERVAL)
        self._forget_nonce(submitted.signer)
        raise AdapterError(
            f"extrinsic {to_hex(submitted.extrinsic_hash)} (nonce {submitted.nonce}) not included "
            f"on {redact_url(self.url)} within {timeout:g} s"
        )

    async def _find_extrinsic(self, block_hash: bytes, extrinsic_hash: bytes) -> int | None:
        hashes = self._block_extrinsics.get(block_hash)
        if hashes is None:
            # Waits looking at the same new block fetch it once; a slow fetch of one block
            # holds up no wait on another (review REVIEW1 F7).
            lock = self._block_fetches.setdefault(block_hash, trio.Lock())
            try:
                async with lock:
                    hashes = await self._extrinsic_hashes(block_hash)
            finally:
                if not lock.locked() and lock.statistics().tasks_waiting == 0:
                    self._block_fetches.pop(block_hash, None)
        return hashes.index(extrinsic_hash) if extrinsic_hash in hashes else None

    async def _extrinsic_hashes(self, block_hash: bytes) -> list[bytes]:
        hashes = self._block_extrinsics.get(block_hash)
        if hashes is None:
            block = await self.rpc("chain_getBlock", [to_hex(block_hash)])
            body = block.get("block") if isinstance(block, dict) else None
            extrinsics = body.get("extrinsics") if isinstance(body, dict) else None
            if not isinstance(extrinsics, list):
                raise AdapterError(
                    f"chain_getBlock on {redact_url(self.url)}: malformed block "
                    f"{to_hex(block_hash)}"
                )
            hashes = [blake2_256(_hex_bytes(encoded, "extrinsic")) for encoded in extrinsics]
            # Every wait of this client looks at each new block (an attester has several
            # extrinsics in flight in a burst); a block of a delivery batch is ~100 KB of JSON
            # the node serves on the thread its block builder reads storage through.
            self._block_extrinsics[block_hash] = hashes
            while len(self._block_extrinsics) > BLOCKS_REMEMBERED:
                del self._block_extrinsics[next(iter(self._block_extrinsics))]
        return hashes

    async def _included(
        self,
        submitted: Submitted,
        block_hash: bytes,
        number: int,
        index: int,
        kinds: Collection[tuple[str, str]] | None = None,
    ) -> Included:
        wanted = None if kinds is None else {*kinds, *_OUTCOME_EVENTS}
        events = tuple(
            await self._run(
                "events",
                lambda s: _extrinsic_events(s, block_hash, index, self._event_walker, wanted),
            )
        )
        outcome = [e for e in events if e.pallet == "System" and e.name.startswith("Extrinsic")]
        success = any(e.name == "ExtrinsicSuccess" for e in outcome)
        failed = next((e for e in outcome if e.name == "ExtrinsicFailed"), None)
        if not success and failed is None:
            raise AdapterError(
                f"extrinsic {to_hex(submitted.extrinsic_hash)} in block {number} "
                "has no outcome event"
            )
        return Included(
            block_hash=block_hash,
            block_number=number,
            extrinsic_index=index,
            extrinsic_hash=submitted.extrinsic_hash,
            nonce=submitted.nonce,
            success=success,
            error=None if success or failed is None else failed.error,
            events=events,
        )
