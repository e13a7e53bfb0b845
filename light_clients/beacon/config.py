"""The chain a beacon light client follows: preset, genesis validators root, fork schedule.

Three things vary between beacon chains and change what the light client checks:

* the **preset** (``mainnet`` or ``minimal``): the committee size (512 or 32 keys, so the
  length of every ``SyncCommittee`` and participation bitvector), slots per epoch and epochs
  per sync-committee period (so which committee signs a slot);
* the **genesis validators root**: half of every signature domain, so a committee of one chain
  can never sign for another;
* the **fork schedule** (name → version, activation epoch): the other half of the domain
  (the spec's ``compute_fork_version`` at the epoch of ``max(signature_slot, 1) - 1``), and
  the shape of every light-client object, which follows the fork of its header's slot:
  Deneb adds two fields to the execution payload header, Electra deepens the finality and
  sync-committee branches (the beacon state grew past 32 fields).

:meth:`BeaconConfig.from_schedule` builds a config from the plain values a TOML table holds
and refuses anything it cannot use with one line (:class:`InvalidBeaconConfig`). Headers
before Capella are not verified: their ``LightClientHeader`` has no execution payload, which
is the only thing an attester wants from this client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from light_clients.errors import DecodeError, FinalityError
from light_clients.hexstr import parse_data

__all__ = [
    "FORK_NAMES",
    "MAINNET",
    "MAINNET_PRESET",
    "MINIMAL_PRESET",
    "PRESETS",
    "SUPPORTED_FORKS",
    "BeaconConfig",
    "Fork",
    "ForkLayout",
    "InvalidBeaconConfig",
    "LightClientError",
    "Preset",
    "UnsupportedFork",
]


class LightClientError(FinalityError):
    """A beacon light-client bootstrap or update is not acceptable."""


class UnsupportedFork(LightClientError):
    """A header or signature slot in a fork this client does not verify (before Capella, a
    fork it does not know the rules of, or before the chain's first scheduled fork)."""


class InvalidBeaconConfig(ValueError):
    """A preset name, genesis validators root or fork schedule that cannot describe a chain."""


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """The constants of a consensus-spec preset that the light client depends on."""

    name: str
    sync_committee_size: int
    slots_per_epoch: int
    epochs_per_sync_committee_period: int

    @property
    def slots_per_period(self) -> int:
        """Slots in one sync-committee period (8192 on mainnet, 64 on minimal)."""
        return self.slots_per_epoch * self.epochs_per_sync_committee_period


MAINNET_PRESET = Preset("mainnet", 512, 32, 256)
MINIMAL_PRESET = Preset("minimal", 32, 8, 8)
PRESETS: Mapping[str, Preset] = {preset.name: preset for preset in (MAINNET_PRESET, MINIMAL_PRESET)}


# --------------------------------------------------------------------------- forks


@dataclass(frozen=True)
class ForkLayout:
    """The light-client container shapes of one fork.

    A generalized index names a node of the state (or body) tree: its depth is
    ``floorlog2(gindex)`` (the branch length) and its index at that depth ``gindex - 2**depth``.
    """

    name: str
    blob_gas: bool  # the execution payload header has blob_gas_used, excess_blob_gas (Deneb)
    finalized_root_gindex: int
    current_sync_committee_gindex: int
    next_sync_committee_gindex: int
    execution_payload_gindex: int = 25  # unchanged since Capella: the body kept its shape there

    @staticmethod
    def depth(gindex: int) -> int:
        """The branch length of a generalized index."""
        return gindex.bit_length() - 1

    @staticmethod
    def index(gindex: int) -> int:
        """The position of a generalized index among the nodes at its depth."""
        return gindex - (1 << (gindex.bit_length() - 1))


_LAYOUTS = {
    layout.name: layout
    for layout in (
        ForkLayout("capella", blob_gas=False, finalized_root_gindex=105,
                   current_sync_committee_gindex=54, next_sync_committee_gindex=55),
        ForkLayout("deneb", blob_gas=True, finalized_root_gindex=105,
                   current_sync_committee_gindex=54, next_sync_committee_gindex=55),
        ForkLayout("electra", blob_gas=True, finalized_root_gindex=169,
                   current_sync_committee_gindex=86, next_sync_committee_gindex=87),
        # Fulu changed no light-client container: the spec has no fulu/light-client, and the
        # state's one new field (proposer_lookahead, the 38th) leaves it within 64 leaves, so
        # every generalized index stays Electra's (the spec's later sync-protocol lists them
        # per fork: Electra's from ELECTRA until GLOAS). Only the fork version differs.
        ForkLayout("fulu", blob_gas=True, finalized_root_gindex=169,
                   current_sync_committee_gindex=86, next_sync_committee_gindex=87),
    )
}  # fmt: skip

FORK_NAMES = ("altair", "bellatrix", "capella", "deneb", "electra", "fulu", "gloas")
"""Every fork a schedule may name, in activation order. ``gloas`` may be scheduled (so that its
headers are refused as :class:`UnsupportedFork` rather than checked under Fulu's version): its
light-client containers change (the execution payload leaves the block body), and its rules
are not implemented here."""

SUPPORTED_FORKS = tuple(_LAYOUTS)
"""The forks whose headers this client verifies: Capella, Deneb, Electra, Fulu."""


@dataclass(frozen=True)
class Fork:
    """One scheduled fork: its name, 4-byte version and activation epoch."""

    name: str
    version: bytes
    epoch: int


def _hex(value: object, what: str, size: int) -> bytes:
    """Bytes of exactly ``size``, given as bytes or as ``0x`` hex text."""
    if isinstance(value, bytes):
        if len(value) != size:
            raise InvalidBeaconConfig(f"{what} must be {size} bytes, got {len(value)}")
        return value
    try:
        return parse_data(value, what, size)
    except DecodeError as error:
        raise InvalidBeaconConfig(str(error)) from None


def _fork(name: object, entry: object) -> Fork:
    if not isinstance(name, str) or name not in FORK_NAMES:
        raise InvalidBeaconConfig(f"unknown fork {name!r:.40} (known: {', '.join(FORK_NAMES)})")
    if isinstance(entry, Fork):
        version, epoch = entry.version, entry.epoch
    elif isinstance(entry, Sequence) and not isinstance(entry, str | bytes) and len(entry) == 2:
        version, epoch = entry
    else:
        raise InvalidBeaconConfig(f"fork {name} must be [version, epoch], got {entry!r:.80}")
    # bool is an int in Python; `altair = ["0x01000000", true]` is a typo, not epoch 1.
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**64:
        raise InvalidBeaconConfig(f"fork {name} epoch must be an integer >= 0, got {epoch!r:.40}")
    return Fork(name, _hex(version, f"fork {name} version", 4), epoch)


@dataclass(frozen=True)
class BeaconConfig:
    """A beacon chain as the light client sees it; built by :meth:`from_schedule` (or directly,
    with the same checks). ``forks`` is in activation order and starts at most at Capella."""

    genesis_validators_root: bytes
    forks: tuple[Fork, ...]
    preset: Preset = MAINNET_PRESET

    def __post_init__(self) -> None:
        """Check the schedule: known names, in order without gaps, through Capella, epochs
        non-decreasing, distinct 4-byte versions; a 32-byte genesis validators root."""
        if self.preset not in PRESETS.values():
            raise InvalidBeaconConfig(f"preset {self.preset.name!r} is not mainnet or minimal")
        _hex(self.genesis_validators_root, "genesis_validators_root", 32)
        names = [fork.name for fork in self.forks]
        for fork in self.forks:
            _fork(fork.name, fork)
        if "capella" not in names:
            raise InvalidBeaconConfig("the fork schedule must include capella (first one verified)")
        # Consecutive from the first named: a later fork cannot come without the ones before
        # it (and, capella being present, the schedule reaches at least that far).
        start = FORK_NAMES.index(names[0])
        if names != list(FORK_NAMES[start : start + len(names)]):
            raise InvalidBeaconConfig(
                f"forks {names} are not consecutive forks in the order {', '.join(FORK_NAMES)}"
            )
        for before, after in zip(self.forks, self.forks[1:], strict=False):
            if after.epoch < before.epoch:
                raise InvalidBeaconConfig(
                    f"fork {after.name} (epoch {after.epoch}) before {before.name} ({before.epoch})"
                )
        if len({fork.version for fork in self.forks}) != len(self.forks):
            raise InvalidBeaconConfig("two forks share a version: their signatures would mix")

    @classmethod
    def from_schedule(
        cls, preset: object, genesis_validators_root: object, forks: object
    ) -> BeaconConfig:
        """Build a config from plain values (a TOML table): ``preset`` ``"mainnet"`` or
        ``"minimal"``, ``genesis_validators_root`` ``"0x…"`` (32 bytes), ``forks`` a table
        ``{name: [version "0x…" (4 bytes), activation epoch]}`` of consecutive forks that
        reaches Capella, e.g. ``{"altair": ["0x01000001", 0], …, "capella": ["0x03000001",
        0]}``. Table order does not matter; anything unusable is :class:`InvalidBeaconConfig`.
        """
        if not isinstance(preset, str) or preset not in PRESETS:
            raise InvalidBeaconConfig(f"unknown preset {preset!r:.40} (known: mainnet, minimal)")
        if not isinstance(forks, Mapping) or not forks:
            raise InvalidBeaconConfig("forks must be a non-empty table {name: [version, epoch]}")
        parsed = [_fork(name, entry) for name, entry in forks.items()]
        parsed.sort(key=lambda fork: FORK_NAMES.index(fork.name))
        return cls(
            genesis_validators_root=_hex(genesis_validators_root, "genesis_validators_root", 32),
            forks=tuple(parsed),
            preset=PRESETS[preset],
        )

    # ----------------------------------------------------------------- slot arithmetic

    def epoch(self, slot: int) -> int:
        """``compute_epoch_at_slot``."""
        return slot // self.preset.slots_per_epoch

    def period(self, slot: int) -> int:
        """``compute_sync_committee_period_at_slot``."""
        return slot // self.preset.slots_per_period

    def fork_at_slot(self, slot: int) -> Fork | None:
        """The fork active at ``slot`` (the last one whose epoch has come), or None before
        the first scheduled fork."""
        epoch = self.epoch(slot)
        active = None
        for fork in self.forks:
            if fork.epoch > epoch:
                break
            active = fork
        return active

    def fork_version_at_slot(self, slot: int, what: str) -> bytes:
        """``compute_fork_version(compute_epoch_at_slot(slot))``; before the first scheduled
        fork the version is not in the config: :class:`UnsupportedFork`."""
        fork = self.fork_at_slot(slot)
        if fork is None:
            raise UnsupportedFork(f"{what} slot {slot} is before the first scheduled fork")
        return fork.version

    def layout_at_slot(self, slot: int, what: str) -> ForkLayout:
        """The container shapes of a header at ``slot``; :class:`UnsupportedFork` if its fork
        is before Capella or not implemented (Fulu)."""
        fork = self.fork_at_slot(slot)
        name = "phase0" if fork is None else fork.name
        layout = _LAYOUTS.get(name)
        if layout is None:
            raise UnsupportedFork(
                f"{what} slot {slot} is in fork {name}; supported: {', '.join(SUPPORTED_FORKS)}"
            )
        return layout

    def fork_covers(self, slot: int) -> bool:
        """Whether a header at ``slot`` is in a fork this client verifies."""
        fork = self.fork_at_slot(slot)
        return fork is not None and fork.name in _LAYOUTS


MAINNET = BeaconConfig(
    genesis_validators_root=bytes.fromhex(
        "4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"
    ),
    forks=(
        Fork("altair", bytes.fromhex("01000000"), 74240),
        Fork("bellatrix", bytes.fromhex("02000000"), 144896),
        Fork("capella", bytes.fromhex("03000000"), 194048),
        Fork("deneb", bytes.fromhex("04000000"), 269568),
        Fork("electra", bytes.fromhex("05000000"), 364032),
        Fork("fulu", bytes.fromhex("06000000"), 411392),
    ),
    preset=MAINNET_PRESET,
)
"""Ethereum mainnet (the consensus-specs ``configs/mainnet.yaml`` schedule)."""
