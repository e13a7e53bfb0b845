"""End to end on two real anvil chains: attesters and the relayer as separate processes.

Everything goes through the command line, as an operator would run it: `passerelle devnet up`,
three `passerelle attest`, one `passerelle relay`, `passerelle send`, `passerelle status --json`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from devnet import manager
from light_clients.hashing import keccak256
from relayer.client import token_balance
from relayer.config import Config, load_config

pytestmark = pytest.mark.chain

PASSERELLE = str(Path(sys.executable).parent / "passerelle")
DELIVERED_TOPIC = "0x" + keccak256(b"Delivered(bytes32,uint32,uint32)").hex()


class Procs:
    """Long-running passerelle processes, each logging to a file, stopped by PID."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs = config, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [PASSERELLE, *args, "--config", str(self.config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self.running[name] = proc
        return proc

    def start_all(self) -> None:
        for i in range(3):
            self.start(f"attester{i}", "attest", "--index", str(i), "--poll", "0.5")
        self.start("relayer", "relay", "--poll", "0.3")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.running.pop(name)
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=20)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PASSERELLE, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def send(config: Path, origin: str, destination: str, *extra: str) -> list[dict[str, Any]]:
    result = cli(config, "send", "--from", origin, "--to", destination, "--json", *extra)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def statuses(config: Path) -> dict[str, dict[str, Any]]:
    result = cli(config, "status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["id"]: row for row in map(json.loads, result.stdout.splitlines())}


def wait_delivered(config: Path, ids: list[str], procs: Procs, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        rows = statuses(config)
        if all(rows.get(i, {}).get("status") == "delivered" for i in ids):
            assert all(rows[i]["delivered_on_chain"] for i in ids)
            return
        time.sleep(1)
    missing = {
        i: rows.get(i, {}).get("status")
        for i in ids
        if rows.get(i, {}).get("status") != "delivered"
    }
    pytest.fail(f"not delivered: {missing}\nrelayer log:\n{procs.log('relayer')[-3000:]}")


def rpc(url: str, method: str, params: list[Any]) -> Any:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = httpx.post(url, json=request, timeout=10)
    body = response.json()
    assert "error" not in body, body
    return body["result"]


def delivered_events(config: Config, chain: str) -> list[str]:
    """Every message id the chain's Inbox emitted Delivered for (duplicates kept)."""
    target = config.chain(chain)
    logs = rpc(
        target.rpc[0],
        "eth_getLogs",
        [
            {
                "address": "0x" + target.contract("inbox").hex(),
                "fromBlock": "0x0",
                "toBlock": "latest",
                "topics": [DELIVERED_TOPIC],
            }
        ],
    )
    return [entry["topics"][1] for entry in logs]


@pytest.fixture(scope="module")
def devnet_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("devnet")
    path = manager.up(state)
    try:
        yield path
    finally:
        manager.down(state)


@pytest.fixture
def procs(devnet_config: Path, tmp_path: Path) -> Iterator[Procs]:
    running = Procs(devnet_config, tmp_path)
    running.start_all()
    try:
        yield running
    finally:
        running.stop_all()


def test_messages_both_ways(devnet_config: Path, procs: Procs) -> None:
    there = send(devnet_config, "alpha", "beta", "--body", "ping from alpha", "--count", "3")
    back = send(devnet_config, "beta", "alpha", "--body", "ping from beta", "--count", "2")
    assert len(there) == 3 and len(back) == 2
    assert [m["nonce"] for m in there] == sorted(m["nonce"] for m in there)
    wait_delivered(devnet_config, [m["id"] for m in there + back], procs)


def test_token_round_trip(devnet_config: Path, procs: Procs) -> None:
    config = load_config(devnet_config)

    def balance(chain: str) -> int:
        return trio.run(token_balance, config, chain)

    home, wrapped = balance("alpha"), balance("beta")
    out = send(devnet_config, "alpha", "beta", "--token", "1000")
    wait_delivered(devnet_config, [m["id"] for m in out], procs)
    assert balance("alpha") == home - 1000
    assert balance("beta") == wrapped + 1000
    back = send(devnet_config, "beta", "alpha", "--token", "400")
    wait_delivered(devnet_config, [m["id"] for m in back], procs)
    assert balance("alpha") == home - 600
    assert balance("beta") == wrapped + 600


def test_relayer_sigkill_mid_stream_delivers_each_exactly_once(
    devnet_config: Path, procs: Procs
) -> None:
    config = load_config(devnet_config)
    sent = send(devnet_config, "alpha", "beta", "--body", "bulk", "--count", "200")
    ids = [m["id"] for m in sent]
    assert len(set(ids)) == 200
    # Kill the relayer hard as soon as it has delivered something, three times over.
    for _ in range(3):
        deadline = time.monotonic() + 60
        before = len(delivered_events(config, "beta"))
        while time.monotonic() < deadline and len(delivered_events(config, "beta")) == before:
            time.sleep(0.2)
        procs.stop("relayer", signal.SIGKILL)
        procs.start("relayer", "relay", "--poll", "0.3")
    wait_delivered(devnet_config, ids, procs, timeout=180)
    events = delivered_events(config, "beta")
    assert len(events) == len(set(events)), "a message was delivered twice"
    assert set(ids) <= set(events)


def test_relayer_sigterm_is_clean(devnet_config: Path, procs: Procs) -> None:
    deadline = time.monotonic() + 30
    while "relaying: origins" not in procs.log("relayer") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert procs.stop("relayer", signal.SIGTERM) == 0
    assert "Traceback" not in procs.log("relayer")
    procs.start("relayer", "relay", "--poll", "0.3")


def test_reorg_shallower_than_finality_is_never_relayed(devnet_config: Path, procs: Procs) -> None:
    """A message orphaned before the finality depth is never attested nor delivered."""
    config = load_config(devnet_config)
    alpha = config.chain("alpha")
    orphan = send(devnet_config, "alpha", "beta", "--body", "doomed")[0]
    # finality is confirmations:3 with 1 s blocks: reorg the message's block away at once.
    receipt_block = orphan["block"]
    head = int(rpc(alpha.rpc[0], "eth_blockNumber", []), 16)
    depth = head - receipt_block + 1
    assert depth < 3, "too slow to reorg before finality; the test machine is overloaded"
    rpc(alpha.rpc[0], "anvil_reorg", [depth, []])
    survivor = send(devnet_config, "alpha", "beta", "--body", "after the reorg")[0]
    wait_delivered(devnet_config, [survivor["id"]], procs)
    rows = statuses(devnet_config)
    assert orphan["id"] not in rows or rows[orphan["id"]]["status"] != "delivered"
    assert orphan["id"] not in delivered_events(config, "beta")
    assert survivor["nonce"] == orphan["nonce"]  # the orphaned nonce was reused by the survivor
