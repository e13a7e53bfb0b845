"""Connecting to a Substrate chain and choosing its final head.

Every task that reads a Substrate chain opens it here: the endpoint's genesis hash must be the
configured one (T8), a node that is down is retried, and the final head is the one the chain's
finality policy accepts — with a GRANDPA checkpoint, proven final by the light client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import SubstrateClient
from adapters.substrate.finality import (
    PROVE_FINALITY,
    GrandpaFinality,
    offered,
)
from light_clients.errors import VerificationError
from light_clients.substrate.grandpa import AuthoritySet
from light_clients.substrate.header import SubstrateHeader
from relayer.config import (
    ChainConfig,
    ConfigError,
)

log = logging.getLogger("passerelle.substrate")


async def check_genesis(client: SubstrateClient, chain: ChainConfig) -> None:
    """Refuse an endpoint that serves another chain than the configured one (T8)."""
    actual = await client.genesis_hash()
    if actual != chain.settings().genesis_hash:
        raise ConfigError(
            f"chain {chain.name!r}: endpoint reports genesis 0x{actual.hex()}, "
            f"config says 0x{chain.settings().genesis_hash.hex()}"
        )


@asynccontextmanager
async def connected(chain: ChainConfig, *, retry: float = 2.0) -> AsyncIterator[SubstrateClient]:
    """A client of ``chain``'s first endpoint, its genesis checked; a node that is down (or
    still starting) is retried every ``retry`` seconds instead of stopping the process, while a
    node of another chain is a ConfigError at once."""
    while True:
        client = SubstrateClient(chain.rpc[0])
        try:
            await client.connect()
        except AdapterError as exc:
            log.warning("%s: %s; retrying in %g s", chain.name, exc, retry)
            await trio.sleep(retry)
            continue
        try:
            await check_genesis(client, chain)
            yield client
            return
        finally:
            await client.aclose()


def grandpa_follower(chain: ChainConfig) -> GrandpaFinality | None:
    """The GRANDPA light client of ``chain`` if its config has a checkpoint (one per task)."""
    checkpoint = chain.settings().grandpa
    if checkpoint is None:
        return None
    try:
        authority_set = AuthoritySet(checkpoint.set_id, checkpoint.authorities)
    except VerificationError as exc:
        raise ConfigError(f"chain {chain.name!r}: grandpa checkpoint: {exc}") from None
    return GrandpaFinality(authority_set, checkpoint.block_hash, checkpoint.block_number)


async def final_header(
    client: SubstrateClient, chain: ChainConfig, grandpa: GrandpaFinality | None = None
) -> SubstrateHeader:
    """The newest block ``chain``'s finality policy accepts, its hash checked by the light client.

    ``finalized`` takes the node's finalized head and, with a ``grandpa`` checkpoint, proves it
    final with the node's GRANDPA justification (refusing a node that offers none);
    ``devnet-instant`` is the same head on a chain without a finality gadget (chopsticks: every
    block, which is why the policy has its own name); ``confirmations:N`` the best block minus N.
    """
    policy = chain.finality
    if policy.name in ("finalized", "devnet-instant"):
        head = await client.finalized_head()
        if grandpa is not None:
            if grandpa.head_number == grandpa.checkpoint_number and PROVE_FINALITY not in (
                await offered(client)
            ):  # asked once, before the first proof (not on every poll)
                raise ConfigError(
                    f"chain {chain.name!r}: a grandpa checkpoint is configured but "
                    f"{redact_url(client.url)} does not offer {PROVE_FINALITY}"
                )
            await grandpa.verify_final(client, head)
        return head
    if policy.name == "confirmations":
        number = max(await client.best_number() - policy.depth, 0)
        block_hash = await client.block_hash(number)
        if block_hash is None:
            raise AdapterError(f"{chain.name}: no block {number}")
        return await client.header(block_hash)
    raise ConfigError(f"chain {chain.name!r}: finality {policy} does not apply to Substrate")
