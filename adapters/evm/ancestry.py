"""Hashes of older blocks, proven from a final block by parent hashes.

Under beacon finality the only block an EVM chain's light client vouches for is the final one;
an older block's hash (the attester's last signed block, the relayer's scan cursor) is proven by
walking down from it: each header is fetched from any endpoint and must hash to its child's
``parentHash`` (:class:`ProvenAncestry`, given the fetch that checks a header against an expected
hash). Walking is linear in the distance, so what was proven is kept as *anchors*: block hashes
known to be ancestors of the newest final block seen (``top``).

- When the final block moves, one walk from the new top down to the old one re-proves every
  anchor at once (the old top is their descendant); if that walk meets a different hash at the
  old top's height, the chain finalized a conflicting history: the anchors are dropped, and a
  caller comparing a hash it signed sees the change and halts. A link walk longer than
  :data:`MAX_WALK` just drops the anchors (they are a cache).
- A hash is proven from the nearest anchor above it; the anchor it lands on is kept. A walk
  leaves an anchor every :data:`PROGRESS_EVERY` blocks and stops after :data:`MAX_WALK`
  headers with :class:`AncestryIncomplete`: the next call resumes from the lowest anchor, so a
  long first walk (an attester restarted after days) is spread over polls in bounded time and
  memory, and a failed fetch loses no more than one stretch.
- At most :data:`MAX_ANCHORS` anchors, the least recently used dropped first (the top and a
  hash asked for every poll stay).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from adapters.errors import AdapterError
from light_clients.ethereum.header import EthHeader

__all__ = ["MAX_ANCHORS", "MAX_WALK", "PROGRESS_EVERY", "AncestryIncomplete", "ProvenAncestry"]

MAX_WALK = 8_192
"""Headers fetched by one call at most (about a day of mainnet blocks)."""
PROGRESS_EVERY = 1_024
"""A walk keeps an anchor this often, to resume from."""
MAX_ANCHORS = 1_024

FetchAs = Callable[[int, bytes], Awaitable[EthHeader]]
"""``fetch(number, expected_hash)``: the header of block ``number``, which hashes to
``expected_hash`` (AdapterError if no endpoint serves it)."""


class AncestryIncomplete(AdapterError):
    """The walk down to the asked block needs more than one call's budget; it resumes from
    where it stopped on the next call."""


class ProvenAncestry:
    """Block hashes proven to be ancestors of the newest final block (see the module)."""

    def __init__(self, fetch: FetchAs) -> None:
        self._fetch = fetch
        self._top: tuple[int, bytes] | None = None
        self._anchors: OrderedDict[int, bytes] = OrderedDict()

    async def hash_of(self, top: EthHeader, number: int) -> bytes:
        """The hash of block ``number`` (≤ ``top.number``) on the chain ending in ``top``."""
        if number > top.number:
            raise ValueError(f"block {number} is above the final block {top.number}")
        await self._link(top)
        known = self._anchors.get(number)
        if known is not None:
            self._anchors.move_to_end(number)
            return known
        start = min(height for height in self._anchors if height >= number)
        proven = await self._walk(start, self._anchors[start], number, progress=True)
        if proven is None:
            lowest = min(height for height in self._anchors if height >= number)
            raise AncestryIncomplete(
                f"proving block {number}: walked down to block {lowest} this time "
                f"({MAX_WALK} headers); continuing from there"
            )
        self._keep(number, proven)
        return proven

    async def _link(self, top: EthHeader) -> None:
        """Make ``top`` the top, keeping the anchors if they are its ancestors."""
        old = self._top
        if old == (top.number, top.hash):
            return
        keep = False
        if old is not None and old[0] <= top.number:
            keep = await self._walk(top.number, top.hash, old[0], progress=False) == old[1]
        if not keep:
            self._anchors.clear()
        self._top = (top.number, top.hash)
        self._keep(top.number, top.hash)

    async def _walk(
        self, height: int, expected: bytes, down_to: int, *, progress: bool
    ) -> bytes | None:
        """The hash at ``down_to`` below block ``height`` (whose hash is ``expected``), by
        parent links; None past the budget. With ``progress``, anchors are left on the way
        (``height`` must then be an anchor: all it links to are ancestors of the top)."""
        fetched = 0
        while height > down_to:
            if fetched == MAX_WALK:
                return None
            header = await self._fetch(height, expected)
            fetched += 1
            height, expected = height - 1, header.parent_hash
            if progress and fetched % PROGRESS_EVERY == 0:
                self._keep(height, expected)
        return expected

    def _keep(self, height: int, block_hash: bytes) -> None:
        self._anchors[height] = block_hash
        self._anchors.move_to_end(height)
        while len(self._anchors) > MAX_ANCHORS:
            self._anchors.popitem(last=False)
