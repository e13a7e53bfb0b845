"""Where each event record of a block lies in its ``System.Events`` value, without decoding it.

To tell whether ITS extrinsic ran, a client reads the events of the block it landed in. A block
executing a delivery batch of ~500 messages holds ~2,500 events, and substrate-interface decodes
every one into Python objects (~0.3 s of CPU, the largest item of an attester's CPU in a
6,000-message burst: every opener whose extrinsic shared that block paid it too).
:func:`record_spans` walks the SCALE bytes instead, guided by the runtime's own type registry —
sizes only: a fixed-size type is stepped over at once, a variant by its index byte, a vector by
its length — and returns each record's extrinsic index and byte range; the caller then has
substrate-interface decode only the records of one extrinsic.

Nothing is assumed about a runtime's types beyond its registry; a type this cannot step over (a
bit sequence) or bytes that do not end exactly where the vector does raise
:class:`~light_clients.errors.DecodeError`, and the caller decodes the whole value the usual way.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from light_clients.errors import DecodeError
from light_clients.substrate.scale import ScaleReader

_PRIMITIVE_SIZES: Final[Mapping[str, int]] = {
    "bool": 1,
    "u8": 1,
    "i8": 1,
    "u16": 2,
    "i16": 2,
    "char": 4,
    "u32": 4,
    "i32": 4,
    "u64": 8,
    "i64": 8,
    "u128": 16,
    "i128": 16,
    "u256": 32,
    "i256": 32,
}


class RecordSpan(NamedTuple):
    """One event record: the extrinsic it belongs to (None: initialization or finalization),
    its event's pallet and name (the registry's variant names: what substrate-interface calls
    ``module_id`` and ``event_id``) and its bytes, ``data[start:end]``."""

    extrinsic_index: int | None
    pallet: str
    name: str
    start: int
    end: int


class TypeWalker:
    """Steps over SCALE values of a runtime's registry types (``PortableRegistry``'s ``types``:
    ``{"id": n, "type": {"def": {...}}}`` as substrate-interface reads them)."""

    def __init__(self, types: Sequence[Mapping[str, Any]]) -> None:
        """Index the registry; nothing is computed until a type is met."""
        self._defs: dict[int, Mapping[str, Any]] = {
            int(entry["id"]): entry["type"]["def"] for entry in types
        }
        self._fixed: dict[int, int | None] = {}
        self._variants: dict[int, dict[int, tuple[str, list[int]]]] = {}

    def definition(self, type_id: int) -> tuple[str, Any]:
        """The type's kind (``composite``, ``variant``, …) and body; DecodeError if unknown."""
        try:
            ((kind, body),) = self._defs[type_id].items()
        except (KeyError, ValueError):
            raise DecodeError(f"type {type_id} is not in the registry") from None
        return kind, body

    def variant(self, type_id: int, index: int) -> tuple[str, list[int]]:
        """Name and field types of variant ``index`` of ``type_id``."""
        table = self._variants.get(type_id)
        if table is None:
            kind, body = self.definition(type_id)
            if kind != "variant":
                raise DecodeError(f"type {type_id} is a {kind}, not a variant")
            table = {
                int(v["index"]): (str(v["name"]), [int(f["type"]) for f in v.get("fields", ())])
                for v in body.get("variants", ())
            }
            self._variants[type_id] = table
        try:
            return table[index]
        except KeyError:
            raise DecodeError(f"type {type_id} has no variant {index}") from None

    def fixed_size(self, type_id: int) -> int | None:
        """The encoded size of every value of ``type_id``, or None when it varies."""
        if type_id in self._fixed:
            return self._fixed[type_id]
        self._fixed[type_id] = None  # a recursive type varies
        kind, body = self.definition(type_id)
        size: int | None = None
        if kind == "primitive":
            size = _PRIMITIVE_SIZES.get(str(body))
        elif kind == "composite":
            size = self._sum(int(f["type"]) for f in body.get("fields", ()))
        elif kind == "tuple":
            size = self._sum(int(t) for t in body)
        elif kind == "array":
            inner = self.fixed_size(int(body["type"]))
            size = None if inner is None else inner * int(body["len"])
        self._fixed[type_id] = size
        return size

    def _sum(self, type_ids: Any) -> int | None:
        total = 0
        for type_id in type_ids:
            size = self.fixed_size(type_id)
            if size is None:
                return None
            total += size
        return total

    def skip(self, type_id: int, reader: ScaleReader) -> None:
        """Step ``reader`` over one value of ``type_id``."""
        size = self.fixed_size(type_id)
        if size is not None:
            reader.fixed(size)
            return
        kind, body = self.definition(type_id)
        if kind == "composite":
            for field in body.get("fields", ()):
                self.skip(int(field["type"]), reader)
        elif kind == "variant":
            for field_type in self.variant(type_id, reader.u8())[1]:
                self.skip(field_type, reader)
        elif kind == "sequence":
            self._repeat(int(body["type"]), reader.compact(), reader)
        elif kind == "array":
            self._repeat(int(body["type"]), int(body["len"]), reader)
        elif kind == "tuple":
            for inner in body:
                self.skip(int(inner), reader)
        elif kind == "compact":
            reader.compact()
        elif kind == "primitive" and body == "str":
            reader.fixed(reader.compact(), "string")
        else:
            raise DecodeError(f"cannot step over a {kind} ({type_id})")

    def _repeat(self, type_id: int, count: int, reader: ScaleReader) -> None:
        size = self.fixed_size(type_id)
        if size is not None:
            reader.fixed(size * count)
            return
        for _ in range(count):
            self.skip(type_id, reader)


def record_spans(walker: TypeWalker, events_type: int, data: bytes) -> list[RecordSpan]:
    """Each record of ``data``, the SCALE ``System.Events`` value whose registry type is
    ``events_type`` (a vector of ``frame_system::EventRecord``: phase, event, topics).

    DecodeError when the value is not such a vector, a type cannot be stepped over, or the
    records do not end exactly where ``data`` does.
    """
    kind, body = walker.definition(events_type)
    if kind != "sequence":
        raise DecodeError(f"System.Events is a {kind}, not a vector")
    record_kind, record = walker.definition(int(body["type"]))
    fields = {str(f.get("name")): int(f["type"]) for f in record.get("fields", ())}
    if record_kind != "composite" or list(fields) != ["phase", "event", "topics"]:
        raise DecodeError("an event record is not (phase, event, topics)")
    phase, event, topics = fields["phase"], fields["event"], fields["topics"]
    reader = ScaleReader(data)
    spans: list[RecordSpan] = []
    for _ in range(reader.compact()):
        start = reader.offset
        name, phase_fields = walker.variant(phase, reader.u8())
        index: int | None = None
        if name == "ApplyExtrinsic" and phase_fields and walker.fixed_size(phase_fields[0]) == 4:
            index = reader.u32()
        else:
            for field_type in phase_fields:
                walker.skip(field_type, reader)
        pallet, pallet_fields = walker.variant(event, reader.u8())
        name = ""
        if len(pallet_fields) == 1 and walker.definition(pallet_fields[0])[0] == "variant":
            name, event_fields = walker.variant(pallet_fields[0], reader.u8())
        else:
            event_fields = pallet_fields
        for field_type in event_fields:
            walker.skip(field_type, reader)
        walker.skip(topics, reader)
        spans.append(RecordSpan(index, pallet, name, start, reader.offset))
    if reader.remaining:
        raise DecodeError(f"{reader.remaining} byte(s) after the last event record")
    return spans
