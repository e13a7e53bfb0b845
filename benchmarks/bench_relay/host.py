"""The machine the benchmark shares with its chains and processes: CPU seconds and memory of
a process (``/proc``), per group of processes, the load average, the anvil version."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from devnet.anvil import anvil_binary


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS (kB) of ``pid`` from /proc (empty where there is no /proc)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far per group of processes, and of this process (``bench``)."""
    out = {
        group: sum(cpu_seconds(pid) or 0.0 for pid in members) for group, members in pids.items()
    }
    out["bench"] = time.process_time()
    return out


def cpu_delta(pids: dict[str, list[int]], before: dict[str, float]) -> dict[str, float]:
    """CPU seconds per group since the snapshot ``before``."""
    after = cpu_snapshot(pids)
    return {group: after[group] - before.get(group, 0.0) for group in after}


def cpu_line(cpu: dict[str, float], wall: float) -> str:
    shares = ", ".join(
        f"{group} {seconds:.1f} s ({seconds / wall:.0%})" for group, seconds in cpu.items()
    )
    return f"CPU ({wall:.1f} s wall; 2 cores = 200 %): {shares}"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def anvil_version() -> str:
    try:
        shown = subprocess.run(
            [str(anvil_binary()), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return "anvil ?"
    return shown.stdout.strip().splitlines()[0] if shown.stdout.strip() else "anvil ?"
