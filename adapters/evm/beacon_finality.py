"""Finality of an Ethereum proof-of-stake chain without trusting any RPC: a beacon follower.

An execution node can say anything about which block is final, and a header it serves is only
self-consistent (its hash recomputed), not true. :class:`BeaconFollower` instead follows the
beacon chain's sync committee with the light client of :mod:`light_clients.beacon`, from a
weak-subjectivity checkpoint (a trusted beacon block root), through a beacon node's
light-client API (:class:`adapters.beacon.BeaconApi`), whose every answer the light client
verifies. What it yields is the finalized execution payload header — block number, block hash
and state root — which :class:`adapters.evm.chain.EvmChain` then uses instead of any node's
``finalized`` tag: an execution header is accepted only if it hashes to that block hash, and
every storage proof is checked against its state root.

One poll (:meth:`BeaconFollower.finalized`):

1. the store: the one persisted by this process's role if it exists and was bootstrapped from
   the configured checkpoint on the same chain, else a bootstrap from the checkpoint;
2. committee updates, one period at a time, while the store lacks the next committee or lags
   the wall clock's period (``updates?start_period=…``);
3. the newest finality update;
4. persist the store if it moved (written to a temporary file, fsynced and renamed, owner-only).

Nothing is forced: without a supermajority-signed finality update the follower waits (safety
over liveness, docs/decisions.md). An answer the light client refuses is logged, its endpoint
rests (:meth:`adapters.beacon.BeaconApi.blame`), and the follower keeps what it had.

The persisted file holds the sync committees the follower has accepted, which cannot be
re-proven when it is read back (the spec's store keeps no branch for them): whoever can write
the file can choose the committee. So it lives where the attester's keys live: a file, or a
directory, that is not this user's or that group or others can write is refused.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from adapters.beacon import BeaconApi
from adapters.errors import AdapterError
from adapters.rpc import EndpointHealth, RpcError
from light_clients.beacon import (
    BeaconConfig,
    InsufficientParticipation,
    IrrelevantUpdate,
    LightClientStore,
    UpdateOutcome,
    bootstrap,
    parse_bootstrap,
    parse_finality_update,
    parse_update,
    process_finality_update,
    process_update,
    store_from_json,
    store_to_json,
)
from light_clients.errors import VerificationError
from light_clients.hexstr import to_hex

__all__ = [
    "BeaconFollower",
    "BeaconSettings",
    "BeaconStateError",
    "BootstrapUnavailable",
    "FinalizedExecution",
]

log = logging.getLogger("passerelle.beacon")

STATE_VERSION = 1
MAX_STATE_BYTES = 1 << 20
"""A persisted store is about 60 KB on mainnet (two 512-key committees); larger is not ours."""

MAX_PERIODS_PER_POLL = 64
"""Committee periods caught up in one poll at most (the rest at the next ones), so a follower
far behind still answers in bounded time."""


class BootstrapUnavailable(AdapterError):
    """No beacon endpoint serves a bootstrap of the checkpoint that the light client accepts
    (not there yet, pruned, or refused): nothing to follow yet."""


class BeaconStateError(AdapterError):
    """The persisted light-client state cannot be used (unreadable, or writable by others)."""


@dataclass(frozen=True)
class BeaconSettings:
    """A chain's beacon light-client settings (``[chains.beacon]`` in the config)."""

    api: tuple[str, ...]
    """Beacon node REST endpoints, tried in order (their answers are verified, not trusted)."""
    checkpoint: bytes
    """The trusted beacon block root the light client starts from (weak subjectivity)."""
    config: BeaconConfig
    genesis_time: int
    """Unix time of slot 0: with ``seconds_per_slot`` the wall clock's slot, which bounds the
    signature slots an update may claim and tells which period to catch up to."""
    seconds_per_slot: int
    store: Path | None
    """Where each process keeps its light-client state (a directory), None: in memory only."""


@dataclass(frozen=True)
class FinalizedExecution:
    """The execution block the light client holds final, and the beacon slot it came with."""

    number: int
    hash: bytes
    state_root: bytes
    beacon_slot: int


class BeaconFollower:
    """Follows one chain's sync committee from its checkpoint; see the module docstring.

    ``role`` names the process and task (``attester-0x…``, ``relayer-scan``,
    ``relayer-deliver``): each keeps its own state file under ``settings.store``, so no
    follower resumes from what another one verified.
    ``clock`` is the wall clock (seconds since the epoch), a parameter for tests."""

    def __init__(
        self,
        settings: BeaconSettings,
        api: BeaconApi,
        *,
        chain: str,
        role: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.api = api
        self.chain = chain
        self.clock = clock
        self.state_file = (
            None
            if settings.store is None or role is None
            else settings.store / f"{chain}.{_safe(role)}.json"
        )
        self._store: LightClientStore | None = None
        self.refused = 0
        """Answers the light client refused since start (a lying or broken beacon node)."""

    @property
    def store(self) -> LightClientStore | None:
        """The light client's current store (None before the first successful poll)."""
        return self._store

    def current_slot(self) -> int:
        """The wall clock's slot (0 before genesis)."""
        elapsed = int(self.clock()) - self.settings.genesis_time
        return max(0, elapsed // self.settings.seconds_per_slot)

    async def finalized(self) -> FinalizedExecution:
        """Bring the light client up to date; the execution block it now holds final.

        Raises :class:`AdapterError` only (:class:`BootstrapUnavailable` while no endpoint
        serves an acceptable bootstrap of the checkpoint, :class:`BeaconStateError` for an
        unusable state file): a hostile beacon node cannot make a caller crash, only wait. A
        refused answer is logged, counted and its endpoint rests; the previous state is kept.
        """
        store = self._store or self._load() or await self._bootstrap()
        before = store
        store = await self._catch_up(store)
        store = await self._finality(store)
        self._store = store
        if store is not before:
            self._persist(store)
        execution = store.finalized_header.execution
        return FinalizedExecution(
            number=execution.block_number,
            hash=execution.block_hash,
            state_root=execution.state_root,
            beacon_slot=store.finalized_header.beacon.slot,
        )

    # ------------------------------------------------------------------ the light client

    async def _bootstrap(self) -> LightClientStore:
        """The store from the checkpoint's bootstrap, from the first endpoint whose bootstrap the
        light client accepts; :class:`BootstrapUnavailable` (an AdapterError: retried at the
        next poll, like an outage) if none does now."""
        config, checkpoint = self.settings.config, self.settings.checkpoint
        problems: list[str] = []
        for endpoint in self.api.ordered():
            try:
                data = await self.api.bootstrap_on(endpoint, checkpoint)
                store = bootstrap(parse_bootstrap(data, config), checkpoint, config)
            except RpcError as exc:
                problems.append(str(exc))
                continue
            except VerificationError as exc:  # a malformed, mismatched or invalid bootstrap
                self._refuse(endpoint, "bootstrap", exc)
                problems.append(f"{endpoint.url}: refused: {exc}")
                continue
            break
        else:
            raise BootstrapUnavailable(
                f"{self.chain}: no beacon endpoint serves an acceptable bootstrap for checkpoint "
                f"{to_hex(checkpoint)}: " + "; ".join(problems)
            )
        log.info(
            "%s: light client bootstrapped from checkpoint %s (slot %d)",
            self.chain,
            to_hex(self.settings.checkpoint),
            store.finalized_header.beacon.slot,
        )
        self._persist(store)
        return store

    async def _catch_up(self, store: LightClientStore) -> LightClientStore:
        """Committee updates while the next committee is unknown or the store lags the clock."""
        config = self.settings.config
        current_slot = self.current_slot()
        target = config.period(current_slot)
        for _ in range(MAX_PERIODS_PER_POLL):
            wanted = store.period if store.next_sync_committee is None else store.period + 1
            if wanted > target:
                break
            advanced = await self._first_advancing(
                store,
                f"update of period {wanted}",
                partial(self._update, period=wanted),
                self._apply_update,
            )
            if advanced is None:
                break  # no endpoint has that period's update (yet), or none newer than ours
            store = advanced
        return store

    async def _update(self, endpoint: EndpointHealth, *, period: int) -> object | None:
        updates = await self.api.updates_on(endpoint, period, 1)
        return updates[0] if updates else None

    def _apply_update(self, store: LightClientStore, data: object) -> UpdateOutcome:
        update = parse_update(data, self.settings.config)
        return process_update(store, update, current_slot=self.current_slot())

    async def _finality(self, store: LightClientStore) -> LightClientStore:
        advanced = await self._first_advancing(
            store, "finality update", self.api.finality_update_on, self._apply_finality
        )
        return store if advanced is None else advanced

    def _apply_finality(self, store: LightClientStore, data: object) -> UpdateOutcome:
        update = parse_finality_update(data, self.settings.config)
        return process_finality_update(store, update, current_slot=self.current_slot())

    async def _first_advancing(
        self,
        store: LightClientStore,
        what: str,
        fetch: Callable[[EndpointHealth], Awaitable[object | None]],
        apply: Callable[[LightClientStore, object], UpdateOutcome],
    ) -> LightClientStore | None:
        """The store after the first endpoint's answer that moves it; None if none does.

        Every endpoint is asked in turn until one does: an answer that is not there yet, an
        outage, a refused lie, or a valid but stale answer all mean "ask the next one", so a
        lagging or replaying node listed first cannot hold the follower back while another
        serves progress (when all agree that nothing is new, a poll costs one request each)."""
        for endpoint in self.api.ordered():
            try:
                data = await fetch(endpoint)
            except RpcError:  # NotServed too: not there (yet) on this node
                continue
            if data is None:
                continue
            try:
                outcome = apply(store, data)
            except IrrelevantUpdate:
                continue  # valid, and not newer than what the store has
            except InsufficientParticipation as exc:
                # Genuine perhaps, but signed by too few to finalize: not a lie (a chain whose
                # validators miss their sync duties produces these), so nothing is blamed.
                log.debug("%s: %s from %s not used: %s", self.chain, what, endpoint.url, exc)
                continue
            except VerificationError as exc:  # malformed or invalid: MalformedBeaconData too
                self._refuse(endpoint, what, exc)
                continue
            if outcome.store != store:
                if outcome.sync_committee_rotated:
                    log.info(
                        "%s: sync committee rotated to period %d", self.chain, outcome.store.period
                    )
                return outcome.store
        return None

    def _refuse(self, endpoint: EndpointHealth, what: str, exc: Exception) -> None:
        self.refused += 1
        self.api.blame(endpoint, f"{what}: {exc}")
        log.error("%s: light client refused the %s: %s", self.chain, what, exc)

    # ------------------------------------------------------------------ persistence

    def _load(self) -> LightClientStore | None:
        """The persisted store of this role, if it exists and belongs to the configured chain
        and checkpoint; None to bootstrap instead. A file others may write is an error."""
        path = self.state_file
        if path is None:
            return None
        if path.parent.exists():
            _check_private(path.parent, "directory")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BeaconStateError(f"{path}: cannot open the light-client state ({exc})") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BeaconStateError(f"{path}: the light-client state is not a regular file")
            _check_owner(path, info, "file")
            raw = handle.read(MAX_STATE_BYTES + 1)
        try:
            obj = json.loads(raw) if len(raw) <= MAX_STATE_BYTES else None
            if (
                not isinstance(obj, dict)
                or obj.get("version") != STATE_VERSION
                or obj.get("chain") != self.chain
            ):
                raise ValueError("not a light-client state of this chain")
            if obj.get("checkpoint") != to_hex(self.settings.checkpoint):
                log.warning(
                    "%s: %s was bootstrapped from another checkpoint; starting from the "
                    "configured one",
                    self.chain,
                    path,
                )
                return None
            store = store_from_json(obj.get("store"), self.settings.config)
        except (ValueError, VerificationError) as exc:
            raise BeaconStateError(f"{path}: unusable light-client state: {exc}") from None
        log.info(
            "%s: light client resumed at slot %d (period %d) from %s",
            self.chain,
            store.finalized_header.beacon.slot,
            store.period,
            path,
        )
        return store

    def _persist(self, store: LightClientStore) -> None:
        path = self.state_file
        if path is None:
            return
        text = json.dumps(
            {
                "version": STATE_VERSION,
                "chain": self.chain,
                "checkpoint": to_hex(self.settings.checkpoint),
                "store": store_to_json(store),
            },
            separators=(",", ":"),
        )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(path.parent, "directory")  # or another user could swap the file
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _check_private(path: Path, what: str) -> None:
    """:class:`BeaconStateError` unless ``path`` is this user's and only this user can write
    it."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise BeaconStateError(
            f"{path}: cannot check the light-client state {what} ({exc})"
        ) from None
    _check_owner(path, info, what)


def _check_owner(path: Path, info: os.stat_result, what: str) -> None:
    # The state names the sync committee the attester trusts and cannot be re-proven: whoever
    # can write it (its owner, its group or others with write bits, or whoever owns or can
    # write the directory, by renaming another file in) chooses what this process will sign.
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise BeaconStateError(
            f"{path}: the light-client state {what} must belong to this user (uid "
            f"{os.geteuid()}) and be writable by it alone (it decides which sync committee is "
            f"trusted; owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o})"
        )


def _safe(role: str) -> str:
    """``role`` as a file name part (letters, digits, ``-`` and ``_`` kept)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in role)
