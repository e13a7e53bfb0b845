"""Asset Hub (chopsticks) as the benchmark watches it: when each block appeared
(:class:`HeadWatcher`) and what each user extrinsic in a block did, from its events
(:func:`read_block`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.errors import AdapterError
from adapters.jsonrpc import request
from adapters.substrate.client import SubstrateClient

FIRST_USER_EXTRINSIC = 2  # 0 and 1 are set_validation_data and Timestamp.set


class HeadWatcher:
    """When each Asset Hub block appeared, by the wall clock (``chain_subscribeNewHeads``).

    chopsticks' own ``Timestamp.Now`` advances 12 s per block whatever the wall clock does, so
    chain time cannot place a block; this thread records the moment each new head is announced
    (the first one announced is the head at subscription time).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.error: str | None = None
        self._appeared: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="assethub-heads", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def at(self, number: int) -> float | None:
        """Wall time block ``number`` was announced, None if it was not seen."""
        with self._lock:
            return self._appeared.get(number)

    def _run(self) -> None:
        import websocket  # noqa: PLC0415 (websocket-client, substrate-interface's transport)

        subscribe = json.dumps(request("chain_subscribeNewHeads"))
        while not self._stop.is_set():
            try:
                ws = websocket.create_connection(self.url, timeout=0.5)
            except Exception as exc:  # retried; reported if it never works
                self.error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(0.5)
                continue
            try:
                ws.send(subscribe)
                while not self._stop.is_set():
                    try:
                        text = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    now = time.time()
                    note = json.loads(text)
                    if note.get("method") != "chain_newHead":
                        continue
                    number = int(note["params"]["result"]["number"], 16)
                    with self._lock:
                        self._appeared.setdefault(number, now)
            except Exception as exc:  # reconnect
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                ws.close()


@dataclass
class HubBlock:
    """An Asset Hub block built during a phase: what each user extrinsic in it did."""

    number: int
    appeared: float | None
    extrinsics: list[str]  # one label per user extrinsic (index >= 2)
    issued: list[tuple[int, int]]  # (collection, item) of every Uniques.Issued
    build: float | None = None  # seconds chopsticks spent building it (its log)


def classify(events: Sequence[Any]) -> str:
    """One label for the events of one extrinsic: what each multisig call in it did, joined
    with " + " when an attester sent several together (``Utility.batch``)."""
    names = [(e.pallet, e.name) for e in events]
    failed = next((e for e in events if (e.pallet, e.name) == ("System", "ExtrinsicFailed")), None)
    if failed is not None:
        return f"failed: {failed.error or '?'}"
    labels = []
    for event in events:
        if (event.pallet, event.name) == ("Multisig", "MultisigExecuted"):
            attributes = event.attributes if isinstance(event.attributes, dict) else {}
            result = attributes.get("result")
            ok = isinstance(result, dict) and "Ok" in result
            issued = names.count(("Uniques", "Issued"))
            labels.append(
                f"as_multi: executed, {issued} delivered" if ok else "as_multi: executed, Err"
            )
        elif (event.pallet, event.name) == ("Multisig", "NewMultisig"):
            labels.append("approve_as_multi: opened")
        elif (event.pallet, event.name) == ("Multisig", "MultisigApproval"):
            labels.append("approve_as_multi: joined")
        elif (event.pallet, event.name) == ("Utility", "BatchInterrupted"):
            labels.append(f"failed: {event.error or '?'}")
    if labels:
        # Executions first: the report finds an executing block by its label's start.
        return " + ".join(sorted(labels, key=lambda label: not label.startswith("as_multi")))
    remarks = names.count(("System", "Remarked"))
    if remarks:
        return f"remarks: {remarks}"
    return "other"


async def read_block(sub: SubstrateClient, number: int, appeared: float | None) -> HubBlock:
    """Block ``number``'s user extrinsics, labelled by :func:`classify`, and its mints."""
    block_hash = await sub.block_hash(number)
    if block_hash is None:
        raise AdapterError(f"assethub has no block {number}")
    by_extrinsic: dict[int, list[Any]] = {}
    issued = []
    for event in await sub.events(block_hash):
        if event.extrinsic_index is None or event.extrinsic_index < FIRST_USER_EXTRINSIC:
            continue
        by_extrinsic.setdefault(event.extrinsic_index, []).append(event)
        if (event.pallet, event.name) == ("Uniques", "Issued"):
            attrs = event.attributes if isinstance(event.attributes, dict) else {}
            collection = attrs.get("collection", attrs.get("class"))
            item = attrs.get("item", attrs.get("instance"))
            if isinstance(collection, int) and isinstance(item, int):
                issued.append((collection, item))
    labels = [classify(events) for _, events in sorted(by_extrinsic.items())]
    return HubBlock(number, appeared, labels, issued)
