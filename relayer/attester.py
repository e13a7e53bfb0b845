"""The attester: signs an origin's outbox checkpoints once the light clients accept them.

For every configured EVM origin, in a loop:

1. take the newest block the chain's finality policy accepts, its header hash recomputed by the
   Ethereum light client;
2. prove the outbox's 33 storage slots with ``eth_getProof`` against that header's state root
   and recompute the root from them (``adapters.evm.chain.EvmChain.outbox_state``);
3. if the count grew, sign ``(origin, outbox, root, count - 1)`` and publish it to the
   checkpoint store.

Nothing here trusts a ``root()`` call, a log or the relayer. An attester never signs two roots
for the same index (the store refuses, and the attester halts: that is a reorg below the
finality policy, anchors.md T21 — an operator must look).
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from adapters.errors import AdapterError
from adapters.rpc import RpcError
from light_clients.committee import Checkpoint, address_of, sign_checkpoint
from relayer.checkpoints import CheckpointStore, SignedCheckpoint
from relayer.config import ATTESTER_POLL, ChainConfig, Config, ConfigError
from relayer.endpoints import bytes32, open_evm

log = logging.getLogger("passerelle.attester")


class AttesterState:
    """Counters an operator watches (exported by ``passerelle attest --json`` on exit)."""

    def __init__(self) -> None:
        self.signed: dict[int, int] = {}  # origin → newest signed index
        self.errors = 0


async def attest_origin(
    chain: ChainConfig,
    key: bytes,
    store: CheckpointStore,
    state: AttesterState,
    *,
    poll: float = ATTESTER_POLL,
) -> None:
    """Follow one origin forever, signing each new final outbox state."""
    signer = address_of(key)
    outbox = bytes32(chain.contract("outbox"))
    previous = store.latest_own(chain.domain, outbox, signer)
    last_index = -1 if previous is None else previous.checkpoint.index
    proven = b""  # hash of the last final header whose outbox state was proven
    async with open_evm(chain) as evm:
        while True:
            try:
                header = await evm.final_header()
                if header.hash == proven:  # nothing new is final: no proof to fetch
                    await trio.sleep(poll)
                    continue
                outbox_state = await evm.outbox_state(outbox, header)
                proven = header.hash
            except (RpcError, AdapterError) as exc:
                state.errors += 1
                log.warning("origin %s: %s", chain.name, exc)
                await trio.sleep(poll)
                continue
            index = outbox_state.count - 1
            if index > last_index:
                checkpoint = Checkpoint(
                    origin=chain.domain, outbox=outbox, root=outbox_state.root, index=index
                )
                signed = SignedCheckpoint(
                    checkpoint=checkpoint,
                    signer=signer,
                    signature=sign_checkpoint(key, checkpoint),
                    block_number=header.number,
                    block_hash=header.hash,
                )
                await trio.to_thread.run_sync(store.publish, signed)  # writes and fsyncs
                log.info(
                    "origin %s: signed index %d root 0x%s at block %d",
                    chain.name,
                    index,
                    outbox_state.root.hex(),
                    header.number,
                )
                last_index = index
                state.signed[chain.domain] = index
            await trio.sleep(poll)


async def run_attester(config: Config, index: int, *, poll: float = ATTESTER_POLL) -> None:
    """Run attester ``index`` of the configuration over every EVM origin with an outbox."""
    if not 0 <= index < len(config.attester_keys):
        raise ConfigError(
            f"no attester {index}: the config has {len(config.attester_keys)} attester keys"
        )
    key = config.attester_keys[index].load()
    signer = address_of(key)
    if signer not in config.committee.members:
        raise ConfigError(f"attester {index} (0x{signer.hex()}) is not a committee member")
    store = CheckpointStore(config.checkpoint_store)
    state = AttesterState()
    origins = [c for c in config.chains if c.kind == "evm" and "outbox" in c.contracts]
    async with trio.open_nursery() as nursery:
        for chain in origins:
            nursery.start_soon(partial(attest_origin, chain, key, store, state, poll=poll))
