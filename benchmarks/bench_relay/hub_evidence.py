"""What limits an Asset Hub leg, from outside the chains: chopsticks' log (how long it took to
build each block), the attesters' logs (when each signed, opened a multisig operation, lost a
race) and the relayer's proposal files (when it proposed each batch)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path

from benchmarks.bench_relay.hub_model import Batch, HubContext, HubResult

_BUILD_LINE = re.compile(
    r"^\[(\d\d):(\d\d):(\d\d)\.(\d{3})\] \w+ \(block-builder\): .*(building|new head) #(\d+)"
)
_PROPOSAL_LINE = re.compile(
    r"^(\S+ \S+) passerelle\.attester \w+ proposal (\d+)-(\d+)-(\d+)-(\d+)\.json: (.*)$"
)
_SIGNED_LINE = re.compile(
    r"^(\S+ \S+) passerelle\.attester \w+ origin (\S+): signed index (\d+) root"
)
_DELIVERED_IN = re.compile(r"delivered (\d+) message\(s\) in block (\d+)")
_PROPOSAL_NAME = re.compile(r"^\d+-(\d+)-(\d+)-\d+$")


def chopsticks_builds(path: Path | None, near: float) -> dict[int, float]:
    """Block number → seconds from chopsticks' "building #N" to its "new head #N" (its log,
    pino-pretty's ``[HH:MM:SS.mmm]`` in UTC; ``near`` gives the day)."""
    if path is None:
        return {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    day = datetime.fromtimestamp(near, UTC).date()
    started: dict[int, float] = {}
    built: dict[int, float] = {}
    for line in text.splitlines():
        found = _BUILD_LINE.match(line)
        if found is None:
            continue
        hour, minute, second, milli = (int(found.group(k)) for k in range(1, 5))
        at = datetime.combine(
            day, clock_time(hour, minute, second, milli * 1000), tzinfo=UTC
        ).timestamp()
        if at > near + 43_200:  # the log line is from the day before ``near``
            at -= 86_400
        elif at < near - 43_200:
            at += 86_400
        number = int(found.group(6))
        if found.group(5) == "building":
            started[number] = at
        elif number in started:
            built[number] = at - started[number]
    return built


def attach_builds(ctx: HubContext, result: HubResult) -> None:
    """Each block of the leg gets its build time from chopsticks' log."""
    builds = chopsticks_builds(ctx.chopsticks_log, result.started_at)
    for block in result.blocks:
        block.build = builds.get(block.number)


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def read_attester_logs(ctx: HubContext, result: HubResult, origin: str, since: float) -> None:
    """The attesters' own account of the phase: when each signed the origin's checkpoints,
    when each batch was opened, and what else they said about the proposals (the races they
    lost, above all)."""
    for path in sorted(ctx.logs.glob("attester*.log")):
        for line in path.read_text(errors="replace").splitlines():
            signed = _SIGNED_LINE.match(line)
            if signed is not None:
                at = _log_time(signed.group(1))
                if at >= since and signed.group(2) == origin:
                    result.signed.setdefault(int(signed.group(3)), []).append(at)
                continue
            found = _PROPOSAL_LINE.match(line)
            if found is None:
                continue
            at = _log_time(found.group(1))
            if at < since:
                continue
            name = "-".join(found.group(k) for k in (2, 3, 4, 5))
            batch = result.batches.setdefault(
                name, Batch(name, int(found.group(3)), int(found.group(4)))
            )
            text = found.group(6)
            if text.startswith("opened the multisig operation"):
                batch.opened = at if batch.opened is None else min(batch.opened, at)
            elif _DELIVERED_IN.search(text) is not None:
                continue  # the execution: read from the chain (Uniques.Issued), not the log
            elif "another signatory was first" in text:
                reason = re.search(r"failed: (\S+?)\)?$", text)
                result.races[f"approval lost ({reason.group(1) if reason else '?'})"] += 1
            elif "another signatory executed it first" in text:
                result.races["execution lost"] += 1
            else:
                result.races[text[:60]] += 1


def snapshot_proposals(ctx: HubContext, result: HubResult) -> None:
    """Record the proposal files the relayer has written (they vanish once delivered); the
    store's ``.tmp-*.json`` files, written and renamed by ``atomic_write``, are not proposals."""
    try:
        paths = list(ctx.proposals.iterdir())
    except OSError:
        return
    for path in paths:
        name = path.name.removesuffix(".json")
        found = _PROPOSAL_NAME.match(name)
        if found is None or not path.name.endswith(".json"):
            continue
        if name in result.batches and result.batches[name].created is not None:
            continue
        try:
            created = float(json.loads(path.read_text()).get("created", 0.0))
        except (OSError, ValueError, AttributeError):
            continue
        batch = result.batches.setdefault(
            name, Batch(name, int(found.group(1)), int(found.group(2)))
        )
        batch.created = created
