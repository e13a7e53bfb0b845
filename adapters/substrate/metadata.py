"""One decode of a runtime's metadata per process, shared by every connection serving it.

substrate-interface decodes the runtime metadata (``state_getMetadata``, ~0.6 MB of SCALE for
Asset Hub) in pure Python each time a :class:`SubstrateInterface` initialises its runtime:
1.5-3 CPU s, holding :data:`adapters.substrate.client.SUBSTRATE_LIMITER` (every other
Substrate call of the process waits) on each connect and each reconnect after a failover.
Its own cache is per instance and keyed by spec version only, so it cannot be shared: two
chains, or a lying node, may serve different metadata under the same spec version.

:class:`SharedMetadataInterface` still fetches the metadata on every connect (one RPC, cheap),
and reuses a decode only for the very same bytes: the cache key is the answer itself, so a
connection works with the decode of what its own node served, never another node's or another
runtime's. A hostile node can only make the process decode what it sends, as before.

Memory: a decode is tens to hundreds of MB of Python objects. One is kept for the process (the
most recent, for a reconnect); any other lives only while some connection holds it, as
without the cache: a node that serves blob after blob pins no more than it did.

Each decode owns a private type registry (scalecodec's ``RuntimeConfigurationObject`` with the
core types a fresh interface decodes metadata with — no chain preset: V14 metadata carries
its own types — then given the metadata's own portable registry), which no connection
touches: the metadata's own lookups (a pallet's calls, events,
errors and storage types, which ``compose_call`` and error decoding use) resolve there, so a
connection that follows a runtime upgrade and rebuilds its own registry changes nothing
another connection resolves. The decode is not frozen, though: scalecodec writes each call
argument it decodes into the metadata's field definitions (``adapters.substrate.client``
reads them back only as a hint it checks). All of it runs under the process's one
``SUBSTRATE_LIMITER`` slot, the only guard scalecodec's process-wide classes have.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Final

from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset
from substrateinterface import SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException

__all__ = ["SharedMetadataInterface", "decoded_metadata"]

_decoded: Final[weakref.WeakValueDictionary[str, Any]] = weakref.WeakValueDictionary()
"""Decodes by the hex answer they were decoded from, while something holds them."""
_latest: list[Any] = []
"""The most recent decode, held for the process (a reconnect finds it)."""
_lock = threading.Lock()


def _decode(raw: str) -> Any:
    """``raw`` decoded against a registry of its own (see the module docstring)."""
    # implements_scale_info None, as a fresh interface's registry has it before its first
    # metadata (SubstrateInterface.reload_type_registry with no metadata yet).
    config = RuntimeConfigurationObject(implements_scale_info=None)
    config.update_type_registry(load_type_registry_preset(name="core"))
    metadata = config.create_scale_object("MetadataVersioned", data=ScaleBytes(raw))
    metadata.decode()
    try:
        registry = metadata.portable_registry  # V14 and later: the types travel inside
    except AttributeError:  # an older version: its types are named, in the presets
        registry = None
    if registry is not None:
        config.implements_scale_info = True
        config.add_portable_registry(metadata)
    return metadata


def decoded_metadata(raw: str) -> Any:
    """The decoded ``MetadataVersioned`` of ``raw`` (the hex ``state_getMetadata`` answers),
    decoded once per process for the same bytes while a decode of them is held. Raises what
    scalecodec raises on bytes that are not metadata (nothing is kept then)."""
    with _lock:
        metadata = _decoded.get(raw)
    if metadata is None:
        # Decoded outside the lock: several threads may decode the same bytes at once (equal
        # results; the last one is kept), but none waits behind another's decode.
        metadata = _decode(raw)
    with _lock:
        _decoded[raw] = metadata
        _latest[:] = [metadata]
    return metadata


class SharedMetadataInterface(SubstrateInterface):  # type: ignore[misc]
    """A :class:`SubstrateInterface` whose metadata decode is shared (module docstring), and
    which forgets the runtime it was switching to when that switch fails."""

    def get_block_metadata(self, block_hash: str | None = None, decode: bool = True) -> Any:
        response = super().get_block_metadata(block_hash=block_hash, decode=False)
        if not decode:
            return response
        raw = response.get("result") if isinstance(response, dict) else None
        if not isinstance(raw, str) or not raw:
            raise SubstrateRequestException(
                f"state_getMetadata answered {type(raw).__name__}, not metadata"
            )
        return decoded_metadata(raw)

    def init_runtime(self, block_hash: str | None = None, block_id: int | None = None) -> None:
        """substrate-interface's, except that a failure leaves no half-switched runtime.

        It records the new block and spec version before it fetches and decodes the new
        metadata; if that fails (a node that errs or lies at an upgrade), it kept the old
        metadata under the new spec version, and its next call for that version returned at
        once: calls composed with the old runtime's layout, signed for the new one. Here the
        block and versions are forgotten on any failure, so the next call starts over."""
        try:
            super().init_runtime(block_hash=block_hash, block_id=block_id)
        except BaseException:
            self.block_hash = self.block_id = None
            self.runtime_version = self.transaction_version = None
            raise
