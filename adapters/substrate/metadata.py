"""One decode of a runtime's metadata per process, shared by every connection serving it.

substrate-interface decodes the runtime metadata (``state_getMetadata``, ~0.6 MB of SCALE for
Asset Hub) in pure Python each time a :class:`SubstrateInterface` initialises its runtime:
1.5-3 CPU s, holding :data:`adapters.substrate.client.SUBSTRATE_LIMITER` (every other
Substrate call of the process waits) on each connect and each reconnect after a failover.
Its own cache is per instance and keyed by spec version only, so it cannot be shared: two
chains, or a lying node, may serve different metadata under the same spec version.

:class:`SharedMetadataInterface` still fetches the metadata on every connect (one RPC, cheap),
and reuses a decode only for the very same bytes: the cache key is the answer itself, so what
a connection works with is always what its node served, never another node's or another
runtime's. A hostile node can only make the process decode what it sends, as before; the
cache holds at most :data:`CACHED_RUNTIMES` decodes (least recently used dropped first).

Each cached decode owns a private type registry (scalecodec's ``RuntimeConfigurationObject``),
built as a fresh interface's is when it decodes metadata, and given the metadata's own
portable registry; nothing mutates it afterwards. The metadata's methods (a pallet's calls,
events, errors) resolve types there, so a connection that later follows a runtime upgrade and
rebuilds its own registry changes nothing another connection sees. Every other decode and
encode goes through the connection's own registry, exactly as without the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Final

from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset
from substrateinterface import SubstrateInterface

__all__ = ["CACHED_RUNTIMES", "SharedMetadataInterface", "decoded_metadata"]

CACHED_RUNTIMES: Final = 4
"""Decodes kept per process: a few chains, or one chain across a runtime upgrade."""

_decoded: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


def _decode(raw: str) -> Any:
    """``raw`` decoded against a registry of its own (see the module docstring)."""
    config = RuntimeConfigurationObject()
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
    decoded once per process for the same bytes. Raises what scalecodec raises on bytes that
    are not metadata (nothing is cached then)."""
    with _lock:
        metadata = _decoded.get(raw)
        if metadata is not None:
            _decoded.move_to_end(raw)
            return metadata
    # Decoded outside the lock: several threads may decode the same bytes at once (the
    # results are equal; the last one stays), but none waits behind another's decode.
    metadata = _decode(raw)
    with _lock:
        _decoded[raw] = metadata
        _decoded.move_to_end(raw)
        while len(_decoded) > CACHED_RUNTIMES:
            _decoded.popitem(last=False)
    return metadata


class SharedMetadataInterface(SubstrateInterface):  # type: ignore[misc]
    """A :class:`SubstrateInterface` whose metadata decode is shared (module docstring)."""

    def get_block_metadata(self, block_hash: str | None = None, decode: bool = True) -> Any:
        response = super().get_block_metadata(block_hash=block_hash, decode=False)
        raw = response.get("result") if isinstance(response, dict) else None
        if not decode or not isinstance(raw, str) or not raw:
            return response  # as substrate-interface answers (it raised on an error answer)
        return decoded_metadata(raw)
