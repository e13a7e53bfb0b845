"""Calling a signer from trio code: bounded in time, off the event loop, one error class.

A signer (:mod:`relayer.signer`: a key in this process today; an HSM, a KMS, ``clef`` or a
signing service tomorrow) is synchronous: its methods block until they have an answer. Chain
code (the transaction engine, the attester) is trio code, and must not let a signer that stalls
stall it: every signature goes through :func:`call_signer` (a family adds its own check of the
answer: ``adapters.evm.tx`` for secp256k1, :func:`adapters.substrate.signing.sign_sr25519` for
an extrinsic's sr25519 signature).

- **Bounded: the signer's answer, not the queue.** A call first takes one of
  :data:`SIGNER_THREADS` slots of its signer (per signer and trio run), then waits ``timeout``
  seconds for the answer; no answer in time is a :class:`SignerError`, and the caller treats
  it as a failed RPC (nothing was sent or published, it tries again later) and never falls
  back to another key.
  Waiting for a slot is not charged to the timeout: a slot held by a call still within its own
  timeout frees within that timeout, so the wait is bounded anyway, and a call that merely
  queued behind slow ones is not blamed on the signer.
- **Off the event loop**, in a worker thread, so a remote signer's network wait does not
  freeze the process's other tasks. A thread cannot be killed: on a timeout (or when the caller
  is cancelled) it is *abandoned* — its late answer is dropped — and keeps its slot until the
  signer returns. Those threads are this module's own (never the pool the ledger's database
  calls run in), so a signer that hangs ties up at most :data:`SIGNER_THREADS` threads.
- **One pool of slots per signer** (keyed by its address: an EVM address, an sr25519 public
  key), so a signer that hangs wedges only its own duty. With one pool per process, an
  attester's remote sr25519 signer that ignored its timeout took all four slots within four
  extrinsics, and then the attester's checkpoint signatures (secp256k1, another signer) were
  refused too: every EVM origin stopped being attested because of one Substrate key (review
  M3). Signers come from the configuration, never from a message, so the number of pools,
  and of threads (:data:`SIGNER_THREADS` each), is bounded by the config.
- **Stuck calls are counted and named.** An abandoned call whose thread has not come back is
  *stuck* (:attr:`SignerHealth.stuck`, exported as ``passerelle_signer_stuck_calls``). When
  every slot is held by a stuck call, a new call fails at once with one line naming them (whose,
  and for how long) instead of "did not answer": the signer was not asked, and only its return
  (or a restart) frees a slot; ``/readyz`` says not ready meanwhile, naming each signer whose
  slots are all stuck (:attr:`SignerHealth.wedged`): that signer's duty has stopped, even if
  the others go on. A stuck call that finally returns frees its slot by itself.
- **Any failure is one line.** On the thread path, an exception that is not a
  :class:`SignerError` (a remote signer's ``ConnectionResetError``, a JSON decoding error: one
  network blip) becomes a :class:`SignerError` carrying only the exception's type name. Its
  message is dropped unread: it may quote a URL with a token, a request, a key. Every
  :class:`SignerError` a call raises is counted (:attr:`SignerHealth.errors`, exported as
  ``passerelle_signing_errors_total``).
- **Except for a signer that signs in this process** (its own class says
  ``signs_in_process = True``, as :class:`relayer.signer.LocalSigner` does): it is a few hundred
  microseconds of CPU with no I/O, cannot hang, and a thread hop would cost more than the
  signature (measured: it doubles an EVM transaction's signing time), so it is called inline as
  before, and its exceptions (our bugs) propagate unchanged.

:class:`SignerError` is an :class:`~adapters.errors.AdapterError` because that is what it is to
its callers: an outside party (the signer) that did not give a usable answer, handled exactly
like a node that did not — one log line, retry at the next round.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

import outcome
import trio

from adapters.errors import AdapterError

__all__ = [
    "SIGNER_THREADS",
    "SIGN_TIMEOUT",
    "SignerError",
    "SignerHealth",
    "call_signer",
    "signer_health",
    "signs_in_process",
]

SIGN_TIMEOUT = 20.0
"""Seconds a caller waits for a signature (read at each call). A remote signer sets its own,
shorter timeout (about 10 s, relayer/signer.py); this one holds when it does not."""

SIGNER_THREADS = 4
"""Calls to one signer in worker threads at once (per signer and trio run): stuck ones
included."""

_T = TypeVar("_T")


class SignerError(AdapterError):
    """A signer that could not or would not sign in time, or answered with something that is
    not the signature asked for by its own key. ``str()`` is one line, without any secret."""


class _Addressed(Protocol):
    """What :func:`call_signer` reads of a signer: the address it names in an error."""

    @property
    def address(self) -> bytes: ...


def signs_in_process(signer: object) -> bool:
    """Whether ``signer``'s own class declares that it signs in this process without I/O (and
    may be called inline): a ``signs_in_process`` attribute that is exactly True, set by the
    class itself. Not inherited on purpose: a subclass of ``LocalSigner`` that adds I/O (an
    audit log on a server, a confirmation prompt) must not run on the event loop, unbounded,
    because its parent could; a subclass that is still pure says so again."""
    return vars(type(signer)).get("signs_in_process") is True


@dataclass
class _Call:
    """One signer call in a worker thread."""

    signer: bytes
    started: float
    abandoned: float | None = None
    """When its caller stopped waiting (timeout or cancellation); None while it waits."""
    running: bool = False
    """Its thread started ``sign`` (set under the pool's lock, from that thread)."""
    dropped: bool = False
    """Abandoned before its thread started: the thread, if trio still starts it, does not
    call the signer, and the call held no slot from then on."""


@dataclass(frozen=True)
class SignerHealth:
    """The signer calls of this trio run, all signers together, for ``/metrics`` and
    ``/readyz``."""

    threads: int
    """Slots: :data:`SIGNER_THREADS` per signer asked in a thread so far (at least one pool's
    worth, before any was)."""
    stuck: int
    """Calls abandoned by their caller whose thread has not come back: each holds a slot."""
    errors: int
    """:class:`SignerError` raised by :func:`call_signer` since the run started: refusals,
    timeouts, wrong answers, stuck slots, any other exception of a signer."""
    wedged: str | None
    """One line when every slot of some signer is held by a stuck call (that signer can sign
    nothing), naming each such signer; else None."""


class _SignerCalls:
    """The slots and counters of one signer in one trio run. The table of calls is touched
    only from the trio thread (a worker thread reports its return with ``run_sync_soon``); the
    one thing a worker sets itself, that it started the signer, is set and read under a
    lock."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.calls: dict[int, _Call] = {}
        # Our slots bound the threads; trio's limiter only keeps them off the default one.
        self.limiter = trio.CapacityLimiter(math.inf)
        self._ids = itertools.count()
        self._changed = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        # Whether a thread started the signer, against an abandonment in between: a call
        # cancelled before its thread ran must not count as stuck for ever.
        self._start_lock = threading.Lock()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def stuck(self) -> list[_Call]:
        return [call for call in self.calls.values() if call.abandoned is not None]

    def wedged(self) -> str | None:
        """One line naming the stuck calls if they hold every slot, else None."""
        stuck = self.stuck()
        if len(stuck) < self.threads:
            return None
        now = trio.current_time()
        named = ", ".join(
            f"0x{call.signer.hex()} for {now - call.started:.0f} s"
            for call in sorted(stuck, key=lambda call: call.started)
        )
        return (
            f"all {self.threads} signer threads are held by calls that never returned "
            f"({named}): the signer ignores its own timeout; a slot frees when it returns, "
            "or restart the process"
        )

    async def enter(self, signer: bytes) -> tuple[int, _Call]:
        """A slot for a call to ``signer`` (waiting while some slot's call may still answer);
        SignerError at once when every slot is held by a stuck call."""
        while len(self.calls) >= self.threads:
            wedged = self.wedged()
            if wedged is not None:
                raise SignerError(f"signer 0x{signer.hex()} not asked: {wedged}")
            await self._changed.wait()
        ident = next(self._ids)
        call = self.calls[ident] = _Call(signer, trio.current_time())
        return ident, call

    def abandon(self, ident: int) -> None:
        call = self.calls.get(ident)
        if call is None:
            return
        with self._start_lock:
            if not call.running:  # the signer was never called: nothing is stuck
                call.dropped = True
                del self.calls[ident]
            else:
                call.abandoned = trio.current_time()
        self._signal()  # a slot freed, or all may be stuck now: waiters look again

    def _returned(self, ident: int) -> None:
        if self.calls.pop(ident, None) is not None:
            self._signal()

    def run(self, ident: int, call: _Call, sign: Callable[[], _T]) -> outcome.Outcome[_T]:
        """In the worker thread: ``sign()``'s outcome; the slot is freed when it returns, even
        long after its caller gave up."""
        try:
            with self._start_lock:
                if call.dropped:
                    return outcome.Error(SignerError("abandoned before it started"))  # unread
                call.running = True
            return outcome.capture(sign)
        finally:
            with contextlib.suppress(trio.RunFinishedError):  # the process is ending: no slot
                self._token.run_sync_soon(self._returned, ident)


class _Pools:
    """Every signer's slots in one trio run (:class:`_SignerCalls`, made at a signer's first
    call in a thread), and the :class:`SignerError` count of all of them, inline ones too."""

    def __init__(self) -> None:
        self.by_signer: dict[bytes, _SignerCalls] = {}
        self.errors = 0

    def of(self, signer: bytes) -> _SignerCalls:
        """``signer``'s own slots."""
        calls = self.by_signer.get(signer)
        if calls is None:
            calls = self.by_signer[signer] = _SignerCalls(SIGNER_THREADS)
        return calls


_POOLS: trio.lowlevel.RunVar[_Pools] = trio.lowlevel.RunVar("signer_pools")


def _pools() -> _Pools:
    try:
        return _POOLS.get()
    except LookupError:
        pools = _Pools()
        _POOLS.set(pools)
        return pools


def signer_health() -> SignerHealth:
    """This trio run's signer calls, every signer's slots summed (call from trio code)."""
    pools = _pools()
    each = list(pools.by_signer.values())
    wedged = [line for line in (calls.wedged() for calls in each) if line is not None]
    return SignerHealth(
        threads=sum(calls.threads for calls in each) or SIGNER_THREADS,
        stuck=sum(len(calls.stuck()) for calls in each),
        errors=pools.errors,
        wedged="; ".join(wedged) or None,
    )


async def call_signer(
    signer: _Addressed, sign: Callable[[], _T], *, timeout: float | None = None
) -> _T:
    """``sign()`` — a call of one of ``signer``'s methods, and any pure check of its answer —
    in a worker thread (inline for a signer that :func:`signs_in_process`), its answer bounded
    by ``timeout`` seconds (default :data:`SIGN_TIMEOUT`, read at each call), on one of the
    slots of ``signer``'s own (so another signer's stuck calls never refuse this one).

    Raises what ``sign`` raises if it is a :class:`SignerError` (a remote signer's refusal, a
    failed check); any other exception of ``sign`` as a :class:`SignerError` naming only its
    type (thread path only); :class:`SignerError` if no answer came in time, or at once if every
    slot of this signer is held by a stuck call. Every :class:`SignerError` is counted
    (:func:`signer_health`).
    """
    pools = _pools()
    try:
        if signs_in_process(signer):
            return sign()
        calls = pools.of(signer.address)
        return await _in_thread(calls, signer, sign, SIGN_TIMEOUT if timeout is None else timeout)
    except SignerError:
        pools.errors += 1
        raise


async def _in_thread(
    calls: _SignerCalls, signer: _Addressed, sign: Callable[[], _T], timeout: float
) -> _T:
    who = f"signer 0x{signer.address.hex()}"
    ident, call = await calls.enter(signer.address)
    answer: outcome.Outcome[_T] | None = None
    try:
        with trio.move_on_after(timeout):
            answer = await trio.to_thread.run_sync(
                partial(calls.run, ident, call, sign), abandon_on_cancel=True, limiter=calls.limiter
            )
    finally:
        if answer is None:  # timed out, or the caller was cancelled: the thread runs on
            calls.abandon(ident)
    if answer is None:
        raise SignerError(f"{who} did not answer within {timeout:g} s")
    try:
        return answer.unwrap()
    except SignerError:
        raise
    except Exception as exc:
        # Its text may quote a URL with a token, a request, a key: only the type is safe.
        raise SignerError(f"{who} failed: {type(exc).__name__}") from None
