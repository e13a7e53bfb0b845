"""The ``[chains.beacon]`` table: a proof-of-stake EVM chain followed by its beacon light client.

With ``finality = "beacon"`` an EVM chain's final block is what its beacon sync committee
finalized, verified from a trusted checkpoint by :mod:`light_clients.beacon` and followed by
:class:`adapters.evm.beacon_finality.BeaconFollower`; the execution endpoints in ``rpc`` only
supply data that is checked against it. The table says which beacon chain that is::

    [chains.beacon]
    api = ["http://127.0.0.1:9596"]          # beacon node REST endpoints (answers verified)
    checkpoint = "0x…"                        # trusted beacon block root (weak subjectivity)
    preset = "minimal"                        # or "mainnet"
    genesis_validators_root = "0x…"
    genesis_time = 1765040000                 # unix seconds of slot 0
    seconds_per_slot = 1
    forks = { altair = ["0x01000001", 0], capella = ["0x03000001", 0], … }  # name: [version, epoch]
    store = "/var/lib/passerelle/beacon"     # absolute; each process keeps its state there

Everything but ``api`` and ``store`` is the chain's identity and the operator's trust root:
take it from a source you trust, once, like any light client's checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.evm.beacon_finality import BeaconSettings
from light_clients.beacon import BeaconConfig, InvalidBeaconConfig
from relayer.config import need, table
from relayer.jsonfields import FieldError, as_hex, as_int, as_list, as_object

__all__ = ["BEACON_KEYS", "parse_beacon"]

BEACON_KEYS = (
    "api",
    "checkpoint",
    "preset",
    "genesis_validators_root",
    "genesis_time",
    "seconds_per_slot",
    "forks",
    "store",
)

_MAX_SECONDS_PER_SLOT = 3_600


def parse_beacon(obj: Mapping[str, Any], where: str) -> BeaconSettings | None:
    """The beacon settings of the ``[[chains]]`` table ``obj`` (None without a ``beacon``
    table). ``finality = "beacon"`` and the table go together: one without the other is a
    setting silently not applied."""
    beacon = obj.get("beacon")
    wants = obj.get("finality") == "beacon"
    if beacon is None:
        if wants:
            raise FieldError(f'{where}: finality "beacon" needs a [{where}.beacon] table')
        return None
    if not wants:
        raise FieldError(f'{where}.beacon is only used with finality = "beacon"')
    where = f"{where}.beacon"
    section = table(beacon, where, BEACON_KEYS)
    urls = as_list(need(section, where, "api"), f"{where}.api")
    if not urls or not all(
        isinstance(url, str) and url.startswith(("http://", "https://")) for url in urls
    ):
        raise FieldError(f"{where}.api must be a non-empty list of http(s) URLs")
    if len(set(urls)) != len(urls):
        raise FieldError(f"{where}.api repeats an endpoint")
    forks = as_object(need(section, where, "forks"), f"{where}.forks")
    try:
        config = BeaconConfig.from_schedule(
            need(section, where, "preset"),
            need(section, where, "genesis_validators_root"),
            dict(forks),
        )
    except InvalidBeaconConfig as exc:
        raise FieldError(f"{where}: {exc}") from None
    store = section.get("store")
    if store is not None and (not isinstance(store, str) or not Path(store).is_absolute()):
        raise FieldError(f"{where}.store must be an absolute directory path")
    return BeaconSettings(
        api=tuple(urls),
        checkpoint=as_hex(need(section, where, "checkpoint"), f"{where}.checkpoint", size=32),
        config=config,
        genesis_time=as_int(need(section, where, "genesis_time"), f"{where}.genesis_time"),
        seconds_per_slot=as_int(
            need(section, where, "seconds_per_slot"),
            f"{where}.seconds_per_slot",
            lo=1,
            hi=_MAX_SECONDS_PER_SLOT,
        ),
        store=None if store is None else Path(store),
    )
