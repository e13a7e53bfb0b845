"""Gas per delivered message: Inbox v2 (one multiproof per batch, nonce bitmaps) next to
today's design (Inbox v1: a ``delivered[id]`` slot and a 32-hash branch per message), both
measured in the same run on the same anvil.

Run with ``.venv/bin/python -m benchmarks.bench_delivery_gas``. The baseline is kept verbatim
under ``benchmarks/baseline_contracts/`` (Inbox, MerkleLib, Outbox as of commit c5d2dfb) and
compiled here with the project's pinned solcjs and settings (a few seconds); v2 is the
committed artifact. Each design gets its own Outbox and Ping on one automining anvil (its
default hardfork, so EIP-7623's calldata floor applies), and the exact same traffic:

* **one route**: 100 consecutive 89-byte messages to Ping, delivered in one batch;
* **50/50 interleave**: the origin alternates two destinations; the 100 messages of ours
  (every other nonce) are delivered in one batch — the multiproof then carries the siblings
  the other destination's leaves contribute.

Signatures: 2 of a 3-member committee. What is measured is the receipt's ``gasUsed`` (never
an estimate), divided by the messages delivered; calldata bytes per batch are printed too. The
origin's dispatch gas (``Outbox.dispatch`` of the same messages, steady state) is reported for
both Outboxes: a route's ceiling is the smaller of what the origin can dispatch and what the
destination can deliver per block. Of a single dispatch, the transaction's intrinsic part
(21,000 + calldata, or EIP-7623's floor if higher) is shown apart from execution; and today's
Outbox also dispatches :data:`BATCH` messages in one ``dispatchBatch`` (per message: the 21k
and the cold slots paid once), which the baseline cannot.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from adapters.evm.compile import compile_sources, settings
from adapters.evm.contracts import load_artifact
from devnet.anvil import DEV_ADDRESSES, start_anvil
from light_clients.committee import Checkpoint, address_of, sign_checkpoint
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.multiproof import build_multiproof, pack_messages

HERE = Path(__file__).resolve().parent
BASELINE_DIR = HERE / "baseline_contracts"

ORIGIN = 1000
HERE_DOMAIN = 2000
ELSEWHERE = 3000
BATCH = 100
BODY_SIZE = 12  # a 77-byte header + 12 = the 89-byte messages
KEYS = tuple(sorted((keccak256(b"bench attester %d" % i) for i in range(3)), key=address_of))
THRESHOLD = 2
DEPLOYER = DEV_ADDRESSES[0]
BLOCK_GAS = 30_000_000
TARGET_ONE_ROUTE = 12_000
TARGET_INTERLEAVED = 15_000

Built = tuple[Any, str | bytes]  # a contract's ABI and creation code


@dataclass
class Design:
    """One inbox design deployed with its own outbox and Ping."""

    name: str
    w3: Web3
    outbox: Contract
    inbox: Contract
    ping: Contract
    messages: list[bytes] = field(default_factory=list)
    dispatch_gas: list[int] = field(default_factory=list)
    dispatch_intrinsic: list[int] = field(default_factory=list)

    def dispatch(self, destination: int) -> int:
        """Send one message to Ping (on ``destination``); return its nonce."""
        nonce = len(self.messages)
        recipient = bytes(12) + bytes.fromhex(self.ping.address[2:])
        body = b"m%011d" % nonce
        assert len(body) == BODY_SIZE
        receipt = _send(self.w3, self.outbox.functions.dispatch(destination, recipient, body))
        (event,) = self.outbox.events.Dispatch().process_receipt(receipt, errors=DISCARD)
        self.messages.append(bytes(event["args"]["message"]))
        self.dispatch_gas.append(receipt["gasUsed"])
        tx = self.w3.eth.get_transaction(receipt["transactionHash"])
        self.dispatch_intrinsic.append(intrinsic_gas(bytes(tx["input"])))
        return nonce

    def dispatch_batch(self, destination: int, count: int) -> int:
        """``count`` messages to Ping in one ``dispatchBatch``; gasUsed of the transaction."""
        recipient = bytes(12) + bytes.fromhex(self.ping.address[2:])
        first = len(self.messages)
        bodies = [b"m%011d" % (first + i) for i in range(count)]
        call = self.outbox.functions.dispatchBatch(destination, recipient, bodies)
        receipt = _send(self.w3, call)
        found = self.outbox.events.Dispatch().process_receipt(receipt, errors=DISCARD)
        if len(found) != count:
            raise RuntimeError(f"{self.name}: dispatchBatch logged {len(found)} of {count}")
        self.messages += [bytes(event["args"]["message"]) for event in found]
        return int(receipt["gasUsed"])

    def calldata(self, nonces: Sequence[int]) -> bytes:
        """``process`` calldata delivering ``nonces`` under a checkpoint of every message."""
        tree = IncrementalMerkleTree()
        tree.extend([keccak256(m) for m in self.messages])
        outbox = bytes(12) + bytes.fromhex(self.outbox.address[2:])
        checkpoint = Checkpoint(ORIGIN, outbox, tree.root(), tree.count - 1)
        signatures = b"".join(sign_checkpoint(key, checkpoint) for key in KEYS[:THRESHOLD])
        cp = (checkpoint.origin, checkpoint.outbox, checkpoint.root, checkpoint.index)
        batch = [self.messages[n] for n in nonces]
        if self.name == "v1":
            args: list[Any] = [cp, signatures, batch, [list(tree.proof(n)) for n in nonces]]
            types = ["(uint32,bytes32,bytes32,uint32)", "bytes", "bytes[]", "bytes32[32][]"]
        else:
            proof = list(build_multiproof(tree, nonces))
            args = [cp, signatures, pack_messages(batch), proof]
            types = ["(uint32,bytes32,bytes32,uint32)", "bytes", "bytes", "bytes32[]"]
        selector = keccak256(f"process({','.join(types)})".encode())[:4]
        return selector + abi_encode(types, args)

    def deliver(self, nonces: Sequence[int]) -> tuple[int, int]:
        """Deliver ``nonces`` in one transaction: (gasUsed, calldata bytes)."""
        data = self.calldata(nonces)
        tx = self.w3.eth.send_transaction(
            {"from": DEPLOYER, "to": self.inbox.address, "data": data, "gas": BLOCK_GAS}
        )
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise RuntimeError(f"{self.name}: the delivery of {len(nonces)} messages reverted")
        # Ping's own events are in the receipt too: only the inbox's Delivered count.
        delivered = self.inbox.events.Delivered().process_receipt(receipt, errors=DISCARD)
        if len(delivered) != len(nonces):
            raise RuntimeError(f"{self.name}: {len(delivered)} of {len(nonces)} delivered")
        return int(receipt["gasUsed"]), len(data)


def intrinsic_gas(data: bytes) -> int:
    """What a call with ``data`` costs before any execution: 21,000 and the calldata (4 gas a
    zero byte, 16 otherwise), or EIP-7623's floor (21,000 + 10 per token, a non-zero byte 4
    tokens) when that is higher. The floor only binds when execution is small: it is compared
    with the whole gas used, so this is the intrinsic share, not a lower bound on the total."""
    zeros = data.count(0)
    tokens = zeros + 4 * (len(data) - zeros)
    return 21_000 + 4 * tokens


def _send(w3: Web3, fn: Any) -> TxReceipt:
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": DEPLOYER}))
    if receipt["status"] != 1:
        raise RuntimeError(f"{fn.fn_name} reverted")
    return receipt


def _deploy(w3: Web3, abi: Any, bytecode: str | bytes, *args: object) -> Contract:
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    receipt = _send(w3, factory.constructor(*args))
    address = receipt["contractAddress"]
    if address is None:
        raise RuntimeError("a deployment created no contract")
    return w3.eth.contract(address=address, abi=abi)


def _baseline() -> dict[str, Built]:
    """ABI and creation code of the baseline Inbox and Outbox, compiled now."""
    sources = {
        path.name: {"content": path.read_text(encoding="utf-8")}
        for path in sorted(BASELINE_DIR.glob("*.sol"))
    }
    compiler_input = {"language": "Solidity", "sources": sources, "settings": settings("cancun")}
    _, output = compile_sources(compiler_input)
    return {
        name: (
            output["contracts"][f"{name}.sol"][name]["abi"],
            output["contracts"][f"{name}.sol"][name]["evm"]["bytecode"]["object"],
        )
        for name in ("Inbox", "Outbox")
    }


def _design(w3: Web3, name: str, inbox: Built, outbox: Built) -> Design:
    ping = load_artifact("Ping")
    deployed_outbox = _deploy(w3, *outbox, ORIGIN)
    deployed_inbox = _deploy(w3, *inbox, HERE_DOMAIN, DEPLOYER)
    deployed_ping = _deploy(w3, ping.abi, ping.bytecode, deployed_inbox.address)
    members = sorted(Web3.to_checksum_address(address_of(key)) for key in KEYS)
    _send(w3, deployed_inbox.functions.setCommittee(members, THRESHOLD))
    outbox_id = bytes(12) + bytes.fromhex(deployed_outbox.address[2:])
    _send(w3, deployed_inbox.functions.setOrigin(ORIGIN, outbox_id))
    return Design(name, w3, deployed_outbox, deployed_inbox, deployed_ping)


def measure() -> dict[str, dict[str, float]]:
    """Every row of the benchmark, by design: gas per message (one route, interleaved),
    calldata per batch, dispatch gas."""
    baseline = _baseline()
    v2_inbox, v2_outbox = load_artifact("Inbox"), load_artifact("Outbox")
    results: dict[str, dict[str, float]] = {}
    with start_anvil(chain_id=31_999, block_time=None) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 60}))
        designs = [
            _design(w3, "v1", baseline["Inbox"], baseline["Outbox"]),
            _design(
                w3, "v2", (v2_inbox.abi, v2_inbox.bytecode), (v2_outbox.abi, v2_outbox.bytecode)
            ),
        ]
        for design in designs:
            # A warm-up message and delivery: the first ever replay slot, Ping's counter and
            # the outbox's low branch slots are paid once per contract, not per batch.
            design.deliver([design.dispatch(HERE_DOMAIN)])
            single = [design.dispatch(HERE_DOMAIN) for _ in range(BATCH)]
            one_route, one_route_bytes = design.deliver(single)
            ours = []
            for _ in range(BATCH):
                ours.append(design.dispatch(HERE_DOMAIN))
                design.dispatch(ELSEWHERE)
            interleaved, interleaved_bytes = design.deliver(ours)
            steady = design.dispatch_gas[1:]
            intrinsic = design.dispatch_intrinsic[1:]
            batched = (
                design.dispatch_batch(HERE_DOMAIN, BATCH) / BATCH
                if any(f.get("name") == "dispatchBatch" for f in design.outbox.abi)
                else float("nan")
            )
            results[design.name] = {
                "dispatch_intrinsic": statistics.mean(intrinsic),
                "dispatch_batched": batched,
                "one_route": one_route / BATCH,
                "one_route_bytes": one_route_bytes,
                "interleaved": interleaved / BATCH,
                "interleaved_bytes": interleaved_bytes,
                "dispatch_mean": statistics.mean(steady),
                "dispatch_max": max(steady),
            }
    return results


def main() -> None:
    """Print the rows (gas per message, ratios, raw numbers)."""
    results = measure()
    old, new = results["v1"], results["v2"]
    print(f"  batches of {BATCH} messages of {77 + BODY_SIZE} bytes to Ping, 2-of-3 signatures")
    for key, label, target in (
        ("one_route", "one route", TARGET_ONE_ROUTE),
        ("interleaved", "50/50 interleaved", TARGET_INTERLEAVED),
    ):
        verdict = "meets" if new[key] <= target else "MISSES"
        print(
            f"  {label:<20} v2 {new[key]:9,.0f} gas/msg | v1 (today) {old[key]:9,.0f} gas/msg "
            f"| ratio {old[key] / new[key]:5.2f}x | target <= {target:,}: {verdict}"
        )
        print(
            f"    raw: calldata per batch v2 {new[key + '_bytes']:,.0f} B, "
            f"v1 {old[key + '_bytes']:,.0f} B; per-message ceiling of a 30M-gas block: "
            f"v2 {BLOCK_GAS // new[key]:,.0f}, v1 {BLOCK_GAS // old[key]:,.0f}"
        )
    print(
        f"  Outbox.dispatch      v2 {new['dispatch_mean']:9,.0f} gas "
        f"(max {new['dispatch_max']:,.0f}) | v1 {old['dispatch_mean']:9,.0f} gas "
        f"(max {old['dispatch_max']:,.0f}); "
        f"dispatches per 30M-gas block: v2 {BLOCK_GAS // new['dispatch_mean']:,.0f}, "
        f"v1 {BLOCK_GAS // old['dispatch_mean']:,.0f}"
    )
    print(
        f"    of which intrinsic (21k + calldata): v2 {new['dispatch_intrinsic']:,.0f}, "
        f"v1 {old['dispatch_intrinsic']:,.0f}; execution v2 "
        f"{new['dispatch_mean'] - new['dispatch_intrinsic']:,.0f}, v1 "
        f"{old['dispatch_mean'] - old['dispatch_intrinsic']:,.0f}"
    )
    print(
        f"  Outbox.dispatchBatch v2 {new['dispatch_batched']:9,.0f} gas/msg ({BATCH} a "
        f"transaction; v1 has none); dispatches per 30M-gas block: "
        f"{BLOCK_GAS // new['dispatch_batched']:,.0f}"
    )


if __name__ == "__main__":
    main()
