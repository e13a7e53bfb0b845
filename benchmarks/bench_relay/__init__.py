"""Relaying end to end on the devnet: throughput, latency, gas and memory, EVM → EVM (issue #3)
and between Asset Hub and EVM (issue #4).

Run with ``.venv/bin/python -m benchmarks.bench_relay [--legs all|evm|assethub]`` (``--help``
for the sizes). On a fresh devnet in a temporary state directory (``devnet up``: the anvil
chains alpha and beta, 1-second blocks, finality ``confirmations:3``, and Asset Hub under
chopsticks, one block per extrinsic, finality ``devnet-instant``) it starts three ``passerelle
attest`` processes, which run throughout, and ``passerelle relay`` processes, as
``devnet/demo.py`` does.

EVM → EVM (alpha → beta), one relayer per phase:

1. **pipelined** (the relayer's defaults, ``relayer.config``): N messages (default 2,000)
   dispatched at once — pre-signed ``Outbox.dispatch`` transactions with consecutive nonces,
   broadcast in JSON-RPC batches, so they land in 2-4 blocks (sending speed is not what is
   measured) — then measured until every one has its ``Delivered`` on beta;
2. **paced**: 1,000 messages at 100 per second (the target rate), for the latency the relayer
   adds when it is not draining a backlog;
3. **baseline**: the same N with ``--max-inflight 1`` (no pipelining), the in-run baseline;
4. **unbatched** (``--batch-size 1``): 5 messages, one per delivery transaction.

Every number comes from the chains: latency is the delivery block's timestamp minus the
Dispatch block's (whole seconds, as block timestamps are), minus the finality wait (3 blocks ×
1 s), and also raw; it is repeated with each block placed at the moment it really appeared
(``block_offsets``), which removes the up-to-1-second skew between the two chains' clocks. The
rate runs from the first to the last delivery block; gas is ``gasUsed`` of the delivery
receipts; the ceiling is the beta block gas limit / batched gas per message / block time. The
relayer's peak memory is ``VmHWM`` from ``/proc/<pid>/status`` at the end of its phase. Where
the latency goes comes from the relayer's own ledger (``status_events``, wall clock):
dispatch block → final → attested → submitted → delivery block.

Asset Hub legs, all with one relayer of default settings:

- **floor**: a few plain ``System.remark`` extrinsics (no event, so no message) submitted one
  after the other: what one block costs chopsticks right now;
- per shape — a **burst** of ``--hub-messages`` (default 100) and a **paced** run of
  ``--hub-paced-messages`` (default 5), one every ``--hub-interval`` (default 6) seconds — first
  the EVM → EVM baseline of that shape (alpha → beta), then **Asset Hub → alpha** (the client's
  ``PSRL`` remarks as ``passerelle send`` makes them: one ``Utility.batch_all`` for the burst,
  one ``remark_with_event`` per paced message, composed before the clock starts) and **alpha →
  Asset Hub** (pre-signed dispatches to the client's Substrate account; delivered when the
  committee's multisig has minted the message's ``Uniques`` replay-guard item).

Each leg reports messages/s from the first submission to the moment the last delivery block
appeared, and p50/p95 latency from the source block being final (Asset Hub: the moment its
block was announced, ``devnet-instant``; alpha: the Dispatch block's appearance + 3 s) to the
delivery block's appearance (alpha: timestamp + measured offset; Asset Hub: announced on
``chain_subscribeNewHeads``, :class:`~benchmarks.bench_relay.hub_chain.HeadWatcher` —
chopsticks' chain time runs 12 s per block and cannot be used), each next to the same-shape
EVM → EVM baseline and their ratio. The evidence of what limits a leg is printed with it: the
steps (ledger, proposal files, attesters' logs), every Asset Hub block built and what each
extrinsic in it did (from its events: approvals, executions, failures), and the CPU seconds of
the relayer, the attesters, chopsticks, the anvils and this process during the leg.

The devnet, the attesters and the relayer are always torn down (``finally``); the temporary
state directory is removed unless ``--keep`` is given or something failed (its path is printed,
with every process's log in ``logs/``).

The modules, in the order a run uses them:

- ``cli``: the options, the devnet and the attesters up and down, the legs in turn;
- ``chains``: what the numbers assume of the devnet (checked), the benchmark's JSON-RPC view of
  an anvil chain, when its blocks really appear;
- ``load``: the messages sent — pre-signed dispatches, broadcast at once or paced; remarks;
- ``evm_legs`` / ``hub_legs`` (with ``hub_section``, ``hub_model``, ``hub_chain``,
  ``hub_evidence``): the measured legs and what they record;
- ``host`` and ``ledger``: CPU, memory and load of the processes; the relayer's ledger, read only;
- ``evm_report`` / ``hub_report`` (with ``stats``): the printed results, each next to its in-run
  baseline, then the raw numbers.

The processes themselves (devnet, attesters, relayers, waiting) are ``benchmarks/harness.py``,
shared with the end-to-end tests.
"""

from benchmarks.bench_relay.cli import main

__all__ = ["main"]
