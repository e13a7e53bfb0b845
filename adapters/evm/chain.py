"""Reading an EVM chain: final head, headers, Dispatch events and the outbox state.

Everything a node returns that Passerelle acts on passes a light client first: a header's hash
is recomputed from its fields (``light_clients.ethereum.header``), the outbox's 33 storage
slots are proven with ``eth_getProof`` against that header's state root
(``light_clients.ethereum.state``) and the root is recomputed from them
(``light_clients.merkle.root_from_branch``); the proof must be *of the outbox's account* (a
genuine proof of another contract under the genuine state root would otherwise pass); a Dispatch
log must carry a message that decodes, comes from this domain and hashes to the logged id. A node
that lies is caught here, with an :class:`AdapterError` naming what did not hold.

What no light client can check is the final header itself: a node that lies can invent a block
whose hash matches its own fields, state root included. With ``rpc_quorum`` k > 1 the final
block is only accepted once k distinct endpoints report it final with the same hash
(:meth:`EvmChain.final_header`), so one lying or compromised endpoint cannot make an attester
sign a state it made up.

On a proof-of-stake chain with ``finality = "beacon"`` nothing of this rests on RPC endpoints:
the final block is the one the beacon light client holds final
(:class:`adapters.evm.beacon_finality.BeaconFollower`), a header is accepted only if it hashes to
that block's hash, and an older block's hash is proven by walking parent hashes down from it
(:meth:`EvmChain.agreed_block_hash`): endpoints only supply data, each piece checked by hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.errors import AdapterError
from adapters.evm.ancestry import ProvenAncestry
from adapters.evm.tx import parse_quantity
from adapters.rpc import AnswerTooLarge, EndpointHealth, JsonRpcClient, RequestTooWide, RpcError
from adapters.text import quoted
from light_clients.errors import DecodeError, VerificationError
from light_clients.ethereum.header import EthHeader, header_rlp_from_json, verify_header_hash
from light_clients.ethereum.state import parse_get_proof, verify_get_proof
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_data, to_hex
from light_clients.merkle import TREE_DEPTH, root_from_branch
from light_clients.message import HEADER_SIZE, Message, decode_message

if TYPE_CHECKING:
    from adapters.evm.beacon_finality import BeaconFollower

DISPATCH_TOPIC = keccak256(b"Dispatch(bytes32,uint32,bytes)")
"""Topic of ``Outbox.Dispatch(bytes32 indexed id, uint32 indexed destination, bytes message)``."""
# Outbox storage layout (adapters/evm/contracts/Outbox.sol): branch[32] in slots 0..31, count 32.
OUTBOX_COUNT_SLOT = TREE_DEPTH
_log = logging.getLogger("passerelle.evm")
MAX_LOG_RANGE = 2_000  # blocks per eth_getLogs request: public nodes cap ranges around here


@dataclass(frozen=True)
class LogAnswer:
    """Who answered one ``eth_getLogs`` window of :meth:`EvmChain.logs`: the query's
    (address, topic), the window, the endpoint that gave its logs, and each endpoint (with
    its reason) whose claim that the window could not be answered that answer overruled.
    Whether the answerer or the claimants lied is known only once a proof covers the logs."""

    query: tuple[bytes, bytes]
    first: int
    last: int
    endpoint: EndpointHealth
    overruled: tuple[tuple[EndpointHealth, str], ...] = ()


@dataclass(frozen=True)
class BlockRef:
    """A block by number and hash (the hash is what reorg detection compares)."""

    number: int
    hash: bytes


def dispatch_message(data: bytes) -> bytes:
    """The message of a ``Dispatch`` log's ``data``: the ABI encoding of one ``bytes`` and
    nothing else (offset 32, length, the bytes zero-padded to a word). The one parser of that
    event's data (the relayer's scan, ``passerelle send``, the benchmarks): the nonce is the
    message's ``[1:5]``, the id its keccak256, so nothing else in the log can disagree with
    it. AdapterError, one line, for any other shape (extra words, dirty padding, a length
    past the end): an endpoint or contract that logs that is not the Outbox.
    """
    if len(data) < 64 or int.from_bytes(data[:32], "big") != 32:
        raise AdapterError("Dispatch log data is not one ABI-encoded bytes value")
    size = int.from_bytes(data[32:64], "big")
    padded = -(-size // 32) * 32
    if len(data) != 64 + padded:
        raise AdapterError(
            f"Dispatch log data is {len(data)} bytes, not the {64 + padded} a {size}-byte "
            "message takes"
        )
    if any(data[64 + size :]):
        raise AdapterError("Dispatch log data has non-zero padding")
    if size < HEADER_SIZE:
        raise AdapterError(f"Dispatch log message is {size} bytes, shorter than its header")
    return data[64 : 64 + size]


@dataclass(frozen=True)
class DispatchEvent:
    """A message dispatched by an outbox, where it was logged."""

    message: Message
    raw: bytes
    block: BlockRef
    tx_hash: bytes
    log_index: int

    @property
    def id(self) -> bytes:
        """keccak256 of the canonical message bytes."""
        return self.message.id


@dataclass(frozen=True)
class OutboxState:
    """The outbox's count and root at a block, proven under that block's state root."""

    header: EthHeader
    count: int
    root: bytes


def quantity(value: int) -> str:
    """A JSON-RPC quantity."""
    return hex(value)


def _bytes(value: Any, what: str) -> bytes:
    """``0x``-hex bytes from the node, strictly parsed (:func:`light_clients.hexstr.parse_data`);
    :class:`AdapterError` naming ``what`` if not."""
    try:
        return parse_data(value, what)
    except DecodeError:
        # Bounded and printable (adapters.text): the value is the node's, of any size or shape.
        raise AdapterError(f"node returned a malformed {what}: {quoted(value)}") from None


class EvmChain:
    """Read access to one EVM chain through a :class:`JsonRpcClient`."""

    def __init__(
        self,
        rpc: JsonRpcClient,
        *,
        domain: int,
        finality: str,
        depth: int = 0,
        rpc_quorum: int = 1,
        max_log_range: int = MAX_LOG_RANGE,
        beacon: BeaconFollower | None = None,
    ) -> None:
        """``finality`` is ``finalized``, ``safe``, ``confirmations`` (with ``depth``),
        ``devnet-instant`` or ``beacon`` (with ``beacon``, the light client that decides; see
        :class:`relayer.config.FinalityPolicy`); ``rpc_quorum`` is how
        many distinct endpoints must agree on the final block (1: the first that answers);
        ``max_log_range`` is the most blocks one ``eth_getLogs`` request may span (public RPCs
        cap it, often at 500 or 2,000): a longer scan is split into requests of at most that
        many blocks."""
        if isinstance(max_log_range, bool) or not isinstance(max_log_range, int):
            raise TypeError(f"max_log_range must be an int, not {type(max_log_range).__name__}")
        if max_log_range < 1:
            raise ValueError(f"max_log_range {max_log_range} is not a positive number of blocks")
        # The same URL listed twice is one node: it must not vote twice.
        distinct = len({e.target for e in rpc.endpoints})
        if not 1 <= rpc_quorum <= distinct:
            raise ValueError(
                f"rpc_quorum {rpc_quorum} is not in 1..{distinct} (distinct endpoints)"
            )
        if (finality == "beacon") != (beacon is not None):
            raise ValueError('finality "beacon" and a beacon follower go together')
        self.rpc = rpc
        self.domain = domain
        self.beacon = beacon
        self.finality = finality
        self.depth = depth
        self.rpc_quorum = rpc_quorum
        self.max_log_range = max_log_range
        self._log_windows: dict[tuple[bytes, bytes], int] = {}
        """Blocks of the next ``eth_getLogs`` per (address, topic): ``max_log_range`` at
        first, halved while answers are too large (:meth:`logs`). Per query, not per chain:
        the Paymaster's sparse GasPayment logs answering well must not widen the window of a
        busy outbox's Dispatch scan (each widening costs a refused, over-cap request)."""
        self._log_disputes: dict[tuple[bytes, bytes], dict[tuple[int, int], int]] = {}
        """Per (address, topic), (first, last) → width: a window whose "cannot answer"
        claim another endpoint's answer overruled, and that a proof then refuted
        (:meth:`refuted`). The claim is taken as right: those blocks are asked at most
        ``width`` (half the window) at a time, however wide the window has grown elsewhere,
        until a proof backs a scan of them (:meth:`proven`)."""
        # The endpoints that vouched for the last agreed final block: they have its state, so
        # its proofs are asked of them first (an outvoted endpoint may not even have the block).
        self._vouched: tuple[bytes, list[EndpointHealth]] = (b"", [])
        # Beacon finality: the newest header proven final, and hashes proven below it.
        self._beacon_head: EthHeader | None = None
        self._ancestry = ProvenAncestry(self._header_as)

    async def chain_id(self) -> int:
        """``eth_chainId``."""
        return parse_quantity(await self.rpc.call("eth_chainId"), "chain id")

    async def latest_number(self) -> int:
        """The number of the latest block."""
        return parse_quantity(await self.rpc.call("eth_blockNumber"), "block number")

    async def _call(self, endpoint: EndpointHealth | None, method: str, params: list[Any]) -> Any:
        """``method`` on ``endpoint``, or on the first endpoint that answers if None."""
        if endpoint is None:
            return await self.rpc.call(method, params)
        return await self.rpc.call_on(endpoint, method, params)

    async def header(
        self, block: int | str, *, endpoint: EndpointHealth | None = None
    ) -> EthHeader:
        """The header of ``block`` (a number or a tag), its hash recomputed by the light client;
        from ``endpoint`` only, if given."""
        tag = quantity(block) if isinstance(block, int) else block
        obj = await self._call(endpoint, "eth_getBlockByNumber", [tag, False])
        if not isinstance(obj, dict):
            raise AdapterError(f"node has no block {tag}")
        try:
            rlp = header_rlp_from_json(obj)
            return verify_header_hash(rlp, _bytes(obj.get("hash"), "block hash"))
        except VerificationError as exc:
            raise AdapterError(f"block {tag}: {exc}") from None

    async def _final_on(self, endpoint: EndpointHealth | None) -> EthHeader:
        """The newest block the finality policy accepts, by one endpoint's word."""
        if self.beacon is not None:  # never an endpoint's word: see final_header
            raise AdapterError("beacon finality: the final block comes from the light client")
        if self.finality in ("finalized", "safe"):
            return await self.header(self.finality, endpoint=endpoint)
        latest = parse_quantity(await self._call(endpoint, "eth_blockNumber", []), "block number")
        if self.finality == "devnet-instant":
            return await self.header(latest, endpoint=endpoint)
        return await self.header(max(0, latest - self.depth), endpoint=endpoint)

    def _distinct_endpoints(self) -> list[EndpointHealth]:
        """One endpoint per distinct URL: a URL listed twice is one node, with one vote."""
        first: dict[str, EndpointHealth] = {}
        for endpoint in self.rpc.endpoints:
            first.setdefault(endpoint.target, endpoint)
        return list(first.values())

    async def final_header(self) -> EthHeader:
        """The newest block the finality policy accepts — on ``rpc_quorum`` endpoints.

        With a quorum of 1 this is the first answering endpoint's final block. Otherwise every
        endpoint is asked for its final block; the newest block number that at least k of them
        call final is tried first, then older ones: a block is accepted once k endpoints that
        call it final (or something newer) return the same header hash for it. Endpoints that
        disagree, lag behind or fail just do not count; if no block gathers k votes an
        :class:`AdapterError` says so (nothing is signed from it).

        With beacon finality: the block the beacon light client holds final, its header taken
        from the first endpoint that serves exactly that block hash (quorum not needed: the
        hash decides).
        """
        if self.beacon is not None:
            return await self._beacon_final()
        if self.rpc_quorum == 1:
            return await self._final_on(None)
        finals: list[tuple[EndpointHealth, EthHeader]] = []
        problems: list[str] = []
        for endpoint in self._distinct_endpoints():
            try:
                finals.append((endpoint, await self._final_on(endpoint)))
            except (RpcError, AdapterError) as exc:
                problems.append(f"{endpoint.url}: {exc}")
        numbers = sorted({h.number for _, h in finals}, reverse=True)
        for number in numbers:
            voters = [(e, h) for e, h in finals if h.number >= number]
            if len(voters) < self.rpc_quorum:
                continue  # fewer than k endpoints call this block final yet
            votes: dict[bytes, list[tuple[EndpointHealth, EthHeader]]] = {}
            for endpoint, final in voters:
                try:
                    seen = (
                        final
                        if final.number == number
                        else await self.header(number, endpoint=endpoint)
                    )
                except (RpcError, AdapterError) as exc:
                    problems.append(f"{endpoint.url}: {exc}")
                    continue
                votes.setdefault(seen.hash, []).append((endpoint, seen))
            for agreed, ballots in votes.items():
                if len(ballots) >= self.rpc_quorum:
                    self._vouched = (agreed, [endpoint for endpoint, _ in ballots])
                    return ballots[0][1]
            problems.append(
                f"block {number}: "
                + ", ".join(f"0x{h.hex()[:16]}… ×{len(v)}" for h, v in votes.items())
            )
        raise AdapterError(
            f"rpc_quorum {self.rpc_quorum} of {len(self.rpc.endpoints)} endpoints not reached on "
            f"the final block ({'; '.join(problems) or 'no endpoint answered'})"
        )

    async def _from_vouchers(self, header: EthHeader, method: str, params: list[Any]) -> Any:
        """``method`` asked first of the endpoints that vouched for ``header`` in the quorum
        (an outvoted endpoint may be on another chain and lack the block), then of any. The
        answer is verified by the caller either way: this is about liveness, not trust."""
        agreed, vouchers = self._vouched
        if agreed == header.hash:
            for endpoint in vouchers:
                try:
                    return await self.rpc.call_on(endpoint, method, params)
                except RpcError:
                    continue
        return await self.rpc.call(method, params)

    async def agreed_block_hash(self, number: int) -> bytes | None:
        """The hash of block ``number`` on which ``rpc_quorum`` endpoints agree (None if they
        agree that there is no such block); :class:`AdapterError` if they do not agree.

        With beacon finality: proven by parent hashes from the beacon-final block (None if
        ``number`` is above it), whatever the endpoints say."""
        if self.beacon is not None:
            return await self._proven_hash(number)
        if self.rpc_quorum == 1:
            return await self.block_hash(number)
        votes: dict[bytes | None, int] = {}
        for endpoint in self._distinct_endpoints():
            try:
                answer = await self.rpc.call_on(
                    endpoint, "eth_getBlockByNumber", [quantity(number), False]
                )
                if answer is not None and not isinstance(answer, dict):
                    raise AdapterError(f"malformed block {number}")
                seen = None if answer is None else _bytes(answer.get("hash"), "block hash")
            except (RpcError, AdapterError):
                continue  # a failing or babbling endpoint just does not vote
            votes[seen] = votes.get(seen, 0) + 1
            if votes[seen] >= self.rpc_quorum:
                return seen
        raise AdapterError(
            f"rpc_quorum {self.rpc_quorum}: the endpoints do not agree on block {number}"
        )

    async def dispatches(
        self,
        outbox: bytes,
        from_block: int,
        to_block: int,
        *,
        answered: list[LogAnswer] | None = None,
    ) -> list[DispatchEvent]:
        """Every Dispatch event of ``outbox`` in ``[from_block, to_block]``, in chain order: one
        ``eth_getLogs`` per window of at most ``max_log_range`` blocks (:meth:`logs`, which
        appends to ``answered`` who gave each window).

        Each endpoint's answer is decoded as its check: a list of objects that are not
        Dispatch logs of ``outbox`` (``[{}]``, another emitter, a garbled topic) strikes that
        endpoint and the next is asked in the same read. Decoded after the read, it failed the
        scan at every poll, and the endpoint that sent it was never blamed."""
        decoded: dict[int, DispatchEvent] = {}  # by id() of a log the accepted answer holds

        def check(result: Any) -> str | None:  # asked once _not_logs passed (_logs_and)
            try:
                for log in result:
                    if not log.get("removed"):
                        decoded[id(log)] = self._dispatch(log, outbox)
            except AdapterError as exc:
                return str(exc)
            return None

        logs = await self.logs(
            outbox, DISPATCH_TOPIC, from_block, to_block, answered=answered, check=check
        )
        # Each returned log passed ``check`` and lives on in ``logs``, so its id() is its own
        # (an entry from a refused answer under a reused id was overwritten by its check).
        return [decoded[id(log)] for log in logs]

    async def logs(
        self,
        address: bytes,
        topic: bytes,
        from_block: int,
        to_block: int,
        *,
        answered: list[LogAnswer] | None = None,
        check: Callable[[Any], str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """The logs of ``address`` whose first topic is ``topic`` in ``[from_block,
        to_block]``, as the node gives them (the caller decodes and checks each), in chain
        order, without ones marked ``removed``: one ``eth_getLogs`` per window of at most
        ``max_log_range`` blocks (:func:`log_ranges`), fewer where the answers are large.
        ``answered``, if given, gets a :class:`LogAnswer` per window (who gave its logs, and
        whose claims that it could not be answered were overruled), for a caller that proves
        the logs: it then calls :meth:`proven` (the overruled claimants are struck) or
        :meth:`refuted` (the answerers are struck, the overruled windows narrowed). Without
        ``answered`` nothing proves the logs, and an overruled claimant is struck at once.

        An endpoint whose answer ``check`` refuses (by default: not a list of objects) is
        struck and the next one asked (:meth:`adapters.rpc.JsonRpcClient.call_from`). An
        endpoint that does not answer (an error object, a hang, a trickle, at any width) only
        claims the read cannot be answered: the next is asked the same. RpcError (the first
        node error, if any) only if no endpoint gave logs for a one-block window.

        A window that no endpoint answered, and at least one found over the ``eth_getLogs``
        cap, too slow (not begun, or not whole, within the deadline) or refused with a
        JSON-RPC error (a hosted provider's "more than 10000 results":
        :class:`adapters.rpc.RequestTooWide`, raised only once every usable endpoint was
        asked), is halved and asked again, down to one block, and the window (kept per
        address and topic) doubles again after each answer: with a fixed window, one busy
        stretch of blocks (honest traffic, or anyone paying for ~30,000 Dispatch logs in a few
        blocks) failed the same request at every poll and stopped the origin's scan for good.
        An endpoint that claimed "too wide" for a window another endpoint answered takes a
        strike (at once, or once the proof holds: see ``answered``): later windows ask it
        after the others, whatever else it answers meanwhile. Blocks where a claim was
        overruled by an answer a proof then refuted (:meth:`refuted`) are asked in narrower
        windows of their own. A
        single block over the cap on every endpoint cannot be split:
        AdapterError naming the setting that raises the cap (a hostile endpoint alone claiming
        so rests, the next is asked)."""
        found: list[dict[str, Any]] = []
        key = (bytes(address[-20:]), bytes(topic))
        start = from_block
        disputes = self._log_disputes.get(key, {})
        while start <= to_block:
            end = min(to_block, start + self._log_windows.get(key, self.max_log_range) - 1)
            # Refuted blocks are asked at most ``width`` at a time, in windows of their own.
            for (first, last), width in disputes.items():
                if start < first <= end:
                    end = first - 1  # stop short: the disputed blocks start a window
                elif first <= start <= last:
                    end = min(end, start + width - 1)
            query = {
                "address": to_hex(address[-20:]),
                "fromBlock": quantity(start),
                "toBlock": quantity(end),
                "topics": [to_hex(topic)],
            }
            overruled: list[tuple[EndpointHealth, str]] = []
            try:
                logs, source = await self.rpc.call_from(
                    "eth_getLogs",
                    [query],
                    narrowable=end > start,
                    check=_not_logs if check is None else _logs_and(check),
                    overruled=None if answered is None else overruled,
                )
            except RequestTooWide as exc:
                window = self._log_windows[key] = (end - start + 1) // 2  # >= 1: 2+ blocks
                _log.info("%s; asking %d blocks at a time", exc, window)
                continue
            except AnswerTooLarge as exc:
                cap = self.rpc.cap_of("eth_getLogs")
                raise AdapterError(
                    f"the logs of block {start} are over the eth_getLogs cap of {cap} bytes on "
                    f"every endpoint: raise the chain's max_logs_answer_mib ({exc})"
                ) from None
            if answered is not None:
                answered.append(LogAnswer(key, start, end, source, tuple(overruled)))
            found += [log for log in logs if not log.get("removed")]
            start = end + 1
            window = self._log_windows.get(key, self.max_log_range)
            self._log_windows[key] = min(self.max_log_range, 2 * window)
        return found

    def proven(self, answers: Sequence[LogAnswer]) -> None:
        """A proof backed the logs of ``answers``: each endpoint whose claim that a window
        could not be answered was overruled by them is struck (once, however many windows),
        and those blocks' disputes end. Striking a claimant before the proof struck an honest
        endpoint that could not answer a busy window whenever a liar answered it short."""
        blamed = {id(c): (c, r) for a in answers for c, r in a.overruled}
        for claimant, reason in blamed.values():
            self.rpc.strike(claimant, reason)
        for answer in answers:
            disputes = self._log_disputes.get(answer.query, {})
            for window in [w for w in disputes if answer.first <= w[0] <= answer.last]:
                del disputes[window]

    def refuted(self, answers: Sequence[LogAnswer], reason: str) -> None:
        """A proof refuted the logs of ``answers`` (``reason``: one line): each endpoint that
        gave some is struck once (which window was wrong is not known, so an honest answerer
        is struck too), no claimant is, and each window whose claim was overruled is asked at
        half its width from now on (the claim taken as right): an honest endpoint that cannot
        answer a busy window at one width is asked a width it can answer on the rescan, down
        to one block, where its answer no longer needs anyone's claim overruled."""
        for endpoint in {id(a.endpoint): a.endpoint for a in answers}.values():
            self.rpc.strike(endpoint, f"{endpoint.url}: {reason}")
        for answer in answers:
            if answer.overruled:
                width = max(1, (answer.last - answer.first + 1) // 2)
                disputes = self._log_disputes.setdefault(answer.query, {})
                window = (answer.first, answer.last)  # one entry per window: bounded
                disputes[window] = min(width, disputes.get(window, width))

    def _dispatch(self, log: dict[str, Any], outbox: bytes) -> DispatchEvent:
        """Decode one Dispatch log and check it is what it says (T14: right emitter)."""
        emitter = _bytes(log.get("address"), "log address")
        if emitter != outbox[-20:]:
            raise AdapterError(f"log from {to_hex(emitter)}, not the outbox")
        # An endpoint's JSON, not ours: ``"topics": null`` (or a dict, a string, a number)
        # must end as AdapterError like any other bad log, never as a TypeError that the scan
        # loop does not catch and that would end the relayer's nursery (review RC2 M1).
        raw_topics = log.get("topics")
        if not isinstance(raw_topics, list) or len(raw_topics) != 3:
            raise AdapterError("malformed Dispatch log topics")
        topics = [_bytes(t, "topic") for t in raw_topics]
        if topics[0] != DISPATCH_TOPIC or any(len(t) != 32 for t in topics):
            raise AdapterError("malformed Dispatch log topics")
        try:
            raw = dispatch_message(_bytes(log.get("data"), "log data"))
            message = decode_message(raw)
        except VerificationError as exc:
            raise AdapterError(f"Dispatch log carries an invalid message: {exc}") from None
        # The destination topic is checked too: the relayer's routes and a scan filtering by
        # it must see the message's own destination, not a look-alike's.
        destination = int.from_bytes(topics[2], "big")
        if (
            message.id != topics[1]
            or message.destination != destination
            or message.origin != self.domain
        ):
            raise AdapterError(f"Dispatch log {to_hex(topics[1])} does not match its message")
        return DispatchEvent(
            message=message,
            raw=bytes(raw),
            block=BlockRef(
                parse_quantity(log.get("blockNumber"), "block number"),
                _bytes(log.get("blockHash"), "block hash"),
            ),
            tx_hash=_bytes(log.get("transactionHash"), "transaction hash"),
            log_index=parse_quantity(log.get("logIndex"), "log index"),
        )

    async def proven_slots(
        self,
        contract: bytes,
        header: EthHeader,
        slots: Sequence[int],
        what: str,
        *,
        may_be_absent: bool = False,
    ) -> dict[int, int]:
        """The values of ``slots`` of ``contract`` at ``header``, proven by ``eth_getProof``
        under the header's state root — and proven *for ``contract``*: a genuine proof of
        another account (one whose slots hold chosen values) passes the light client, which
        binds a proof to the address it names, so that address is compared here.
        AdapterError (naming ``what``) for anything that does not hold or is missing — an
        account proven absent included, unless ``may_be_absent`` (then its slots read 0)."""
        params = [
            to_hex(contract[-20:]),
            [to_hex(slot.to_bytes(32, "big")) for slot in slots],
            quantity(header.number),
        ]
        result = await self._from_vouchers(header, "eth_getProof", params)
        try:
            verdict = verify_get_proof(header.state_root, parse_get_proof(result))
        except VerificationError as exc:
            raise AdapterError(f"{what} proof at block {header.number}: {exc}") from None
        if verdict.address != contract[-20:]:
            raise AdapterError(
                f"{what} proof at block {header.number} is of account {to_hex(verdict.address)}, "
                f"not of {to_hex(contract[-20:])}"
            )
        values = {int.from_bytes(slot.key, "big"): slot.value for slot in verdict.storage}
        if (verdict.account is None and not may_be_absent) or set(values) != set(slots):
            raise AdapterError(f"{what} proof at block {header.number} is incomplete")
        return values

    async def outbox_state(
        self, outbox: bytes, header: EthHeader, *, may_be_absent: bool = False
    ) -> OutboxState:
        """The outbox's count and root at ``header``, proven by ``eth_getProof``.

        The root is not read from ``root()``: the 32 frontier slots and the count slot are
        proven under the header's state root (:meth:`proven_slots`) and the root is recomputed
        from them. With ``may_be_absent``, an outbox not deployed yet at ``header`` (proven
        absent) is the empty outbox: a relayer's scan may start before its deployment.
        """
        values = await self.proven_slots(
            outbox,
            header,
            range(OUTBOX_COUNT_SLOT + 1),
            "outbox state",
            may_be_absent=may_be_absent,
        )
        count = values[OUTBOX_COUNT_SLOT]
        frontier = [values[i].to_bytes(32, "big") for i in range(TREE_DEPTH)]
        try:
            root = root_from_branch(frontier, count)
        except VerificationError as exc:
            raise AdapterError(f"outbox state at block {header.number}: {exc}") from None
        return OutboxState(header=header, count=count, root=root)

    async def call(self, to: bytes, data: bytes, block: int | str = "latest") -> bytes:
        """``eth_call`` at ``block``; raises :class:`adapters.rpc.RpcCallError` on revert."""
        tag = quantity(block) if isinstance(block, int) else block
        result = await self.rpc.call(
            "eth_call", [{"to": to_hex(to[-20:]), "data": to_hex(data)}, tag]
        )
        return _bytes(result, "call result")

    async def call_many(
        self, to: bytes, datas: Sequence[bytes], block: int | str = "latest"
    ) -> list[bytes]:
        """Several ``eth_call`` to one contract in a single JSON-RPC batch (one round trip)."""
        tag = quantity(block) if isinstance(block, int) else block
        target = to_hex(to[-20:])
        results = await self.rpc.call_batch(
            [("eth_call", [{"to": target, "data": to_hex(data)}, tag]) for data in datas]
        )
        return [_bytes(result, "call result") for result in results]

    async def block_hash(self, number: int) -> bytes | None:
        """The canonical hash at ``number`` now (None if the node has no such block)."""
        obj = await self.rpc.call("eth_getBlockByNumber", [quantity(number), False])
        if obj is not None and not isinstance(obj, dict):
            raise AdapterError(f"node returned a malformed block {number}")
        return None if obj is None else _bytes(obj.get("hash"), "block hash")

    async def agreed_header(self, number: int) -> EthHeader:
        """The header of block ``number`` whose hash ``rpc_quorum`` endpoints agree on
        (:meth:`agreed_block_hash`), its fields from an endpoint that serves exactly that hash
        (the light client recomputes the hash from them). With a quorum of 1: :meth:`header`.

        What the relayer's scanner records as the hash of the last block it scanned must not
        be one endpoint's word: the next resume compares it with the quorum's hash, and a
        made-up one would read as a reorg below finality and halt the relayer. With beacon
        finality the hash is proven instead (:meth:`agreed_block_hash`)."""
        if self.beacon is not None:
            proven = await self._proven_hash(number)
            if proven is None:
                raise AdapterError(f"block {number} is not final under the beacon light client")
            return await self._header_as(number, proven)
        if self.rpc_quorum == 1:
            return await self.header(number)
        agreed = await self.agreed_block_hash(number)
        if agreed is None:
            raise AdapterError(f"rpc_quorum {self.rpc_quorum}: no block {number} yet")
        for endpoint in self._distinct_endpoints():
            try:
                header = await self.header(number, endpoint=endpoint)
            except (RpcError, AdapterError):
                continue
            if header.hash == agreed:
                return header
        raise AdapterError(
            f"rpc_quorum {self.rpc_quorum}: no endpoint serves block {number} as agreed "
            f"(0x{agreed.hex()[:16]}…)"
        )

    # ------------------------------------------------------------------ beacon finality

    async def _beacon_final(self) -> EthHeader:
        """The header of the block the beacon light client holds final."""
        assert self.beacon is not None
        final = await self.beacon.finalized()
        header = await self._header_as(final.number, final.hash)
        if header.state_root != final.state_root:  # the hash covers it: a keccak collision
            raise AdapterError(f"block {final.number}: state root differs from the beacon's")
        self._beacon_head = header
        return header

    async def _header_as(self, number: int, expected: bytes) -> EthHeader:
        """The header of block ``number`` from the first endpoint that serves one hashing to
        ``expected`` (a proven hash); :class:`AdapterError` if none does — each endpoint either
        lacks the block, is on another chain, or lies."""
        problems: list[str] = []
        for endpoint in self._distinct_endpoints():
            try:
                header = await self.header(number, endpoint=endpoint)
            except (RpcError, AdapterError) as exc:
                problems.append(f"{endpoint.url}: {exc}")
                continue
            if header.hash == expected:
                return header
            problems.append(f"{endpoint.url}: block {number} is 0x{header.hash.hex()[:16]}…")
        raise AdapterError(
            f"no endpoint serves block {number} as proven (0x{expected.hex()[:16]}…): "
            + "; ".join(problems)
        )

    async def _proven_hash(self, number: int) -> bytes | None:
        """Block ``number``'s hash proven from the beacon-final block by parent hashes
        (:class:`adapters.evm.ancestry.ProvenAncestry`: what was proven before is reused, a
        conflicting finalized history shows as a changed hash); None if ``number`` is above the
        final block."""
        top = self._beacon_head
        if top is None or number > top.number:
            top = await self._beacon_final()
        if number > top.number:
            return None
        return await self._ancestry.hash_of(top, number)


def log_ranges(from_block: int, to_block: int, span: int) -> list[tuple[int, int]]:
    """``[from_block, to_block]`` cut into consecutive inclusive ``(start, end)`` windows of at
    most ``span`` blocks, in order (none if ``from_block > to_block``): the ``eth_getLogs``
    requests of one scan."""
    if span < 1:
        raise ValueError(f"a log range spans at least one block, not {span}")
    return [
        (start, min(to_block, start + span - 1)) for start in range(from_block, to_block + 1, span)
    ]


def mapping_slot(key: bytes, slot: int) -> int:
    """The storage slot of ``mapping[key]`` for a mapping declared at ``slot`` (a 32-byte key:
    ``keccak256(key . slot)``, Solidity's layout)."""
    return int.from_bytes(keccak256(key.rjust(32, b"\0") + slot.to_bytes(32, "big")), "big")


def selector(signature: str) -> bytes:
    """The 4-byte function selector of ``signature``, e.g. ``isDelivered(uint32,uint32)``."""
    return keccak256(signature.encode())[:4]


def topics_of(events: Sequence[str]) -> dict[bytes, str]:
    """topic0 → event signature, for decoding receipts."""
    return {keccak256(e.encode()): e for e in events}


def _not_logs(result: Any) -> str | None:
    """Why an ``eth_getLogs`` result is not a list of log objects (None if it is): the check
    :meth:`EvmChain.logs` asks of each endpoint's answer."""
    if isinstance(result, list) and all(isinstance(log, dict) for log in result):
        return None
    return "eth_getLogs returned something else than a list of logs"


def _logs_and(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    """A caller's ``check`` of an ``eth_getLogs`` answer, asked only once :func:`_not_logs`
    passed: it adds to the list-of-logs check, never replaces it."""

    def both(result: Any) -> str | None:
        return _not_logs(result) or check(result)

    return both
