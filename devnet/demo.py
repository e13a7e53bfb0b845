"""The README demo: ``make demo`` (``python -m devnet.demo``).

Brings up the devnet (two anvil chains with the contracts deployed, and Rococo Asset Hub under
chopsticks with the committee's multisig set up), starts three attesters and the relayer as
separate ``passerelle`` processes, sends messages both ways between the EVM chains and between
alpha and Asset Hub, and a token round trip on each route, waits until the destination chains
show everything delivered, prints ``passerelle status``, and tears everything down — also on
Ctrl-C or failure.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from devnet import manager
from relayer.config import load_config
from relayer.user import token_balance

STATE_DIR = Path(".devnet")
PASSERELLE = str(Path(sys.executable).parent / "passerelle")
DELIVERY_TIMEOUT = 180.0


def step(text: str) -> None:
    """Print a progress line."""
    print(f"==> {text}", flush=True)


def passerelle(config: Path, *args: str) -> str:
    """Run a passerelle command; its stdout, or exit with its one-line error."""
    result = subprocess.run(
        [PASSERELLE, *args, "--config", str(config)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"demo: `passerelle {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def send(config: Path, origin: str, destination: str, *extra: str) -> list[dict[str, Any]]:
    """Send and return the dispatched messages."""
    out = passerelle(config, "send", "--from", origin, "--to", destination, "--json", *extra)
    sent = [json.loads(line) for line in out.splitlines()]
    for message in sent:
        print(f"    sent {message['id'][:18]}… nonce {message['nonce']} {origin} → {destination}")
    return sent


def wait_delivered(config: Path, ids: Sequence[str]) -> None:
    """Poll `passerelle status` until every id is delivered on its destination chain."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        rows = [json.loads(line) for line in passerelle(config, "status", "--json").splitlines()]
        done = {r["id"] for r in rows if r["status"] == "delivered" and r["delivered_on_chain"]}
        print(f"    {len(done & set(ids))}/{len(ids)} delivered", flush=True)
        if set(ids) <= done:
            return
        time.sleep(2)
    raise SystemExit(
        f"demo: not everything was delivered within {DELIVERY_TIMEOUT:.0f} s "
        f"(logs in {STATE_DIR / 'logs'})"
    )


def balances(config: Path) -> str:
    """The client's token balance on every chain (//Alice's on Asset Hub)."""
    loaded = load_config(config)
    alpha = trio.run(token_balance, loaded, "alpha")
    beta = trio.run(token_balance, loaded, "beta")
    hub = trio.run(token_balance, loaded, "assethub")
    return f"alpha TestToken {alpha}, beta wrapped {beta}, assethub wrapped {hub}"


def start_processes(config: Path, logs: Path) -> list[subprocess.Popen[bytes]]:
    """Three attesters and one relayer, each logging to its own file."""
    logs.mkdir(parents=True, exist_ok=True)
    commands = [[f"attester{i}", "attest", "--index", str(i)] for i in range(3)]
    commands.append(["relayer", "relay"])
    processes = []
    for name, *args in commands:
        log = (logs / f"{name}.log").open("ab")
        processes.append(
            subprocess.Popen([PASSERELLE, *args, "--config", str(config)], stdout=log, stderr=log)
        )
    return processes


def main() -> None:
    """Run the demo end to end."""
    # SIGTERM must tear the devnet down too (Ctrl-C already does, through the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    step(
        "starting the devnet: two anvil chains (alpha, beta), Asset Hub (chopsticks), "
        "contracts, a 2-of-3 committee and its multisig"
    )
    config = manager.up(STATE_DIR)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        print(f"    config: {config}")
        step("starting 3 attesters and the relayer")
        processes = start_processes(config, STATE_DIR / "logs")
        step("sending messages both ways: alpha ⇄ beta (EVM), alpha ⇄ assethub (Substrate)")
        sent = send(config, "alpha", "beta", "--body", "hello beta", "--count", "3")
        sent += send(config, "beta", "alpha", "--body", "hello alpha", "--count", "3")
        sent += send(config, "alpha", "assethub", "--body", "hello Asset Hub", "--count", "3")
        sent += send(config, "assethub", "alpha", "--body", "hello from Asset Hub", "--count", "3")
        step(f"token round trips; before: {balances(config)}")
        out = send(config, "alpha", "beta", "--token", "1000")
        out += send(config, "alpha", "assethub", "--token", "700")
        step("waiting for delivery (finality: 3 confirmations of 1-second blocks on alpha, beta)")
        wait_delivered(config, [m["id"] for m in sent + out])
        step(f"tokens arrived; now: {balances(config)}; sending them back")
        back = send(config, "beta", "alpha", "--token", "1000")
        back += send(config, "assethub", "alpha", "--token", "700")
        wait_delivered(config, [m["id"] for m in back])
        step(f"round trips done; after: {balances(config)}")
        step("passerelle status")
        print(passerelle(config, "status"), end="")
    finally:
        step("tearing down")
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for line in manager.down(STATE_DIR):
            print(f"    {line}")


if __name__ == "__main__":
    main()
