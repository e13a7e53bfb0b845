"""Turning configured chains into adapter objects (one place, for every command)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.evm.chain import EvmChain
from adapters.rpc import JsonRpcClient
from relayer.config import ChainConfig, ConfigError


def bytes32(address: bytes) -> bytes:
    """An EVM address left-padded to 32 bytes, as messages and checkpoints carry it."""
    return address.rjust(32, b"\0")


@asynccontextmanager
async def open_evm(chain: ChainConfig) -> AsyncIterator[EvmChain]:
    """An :class:`EvmChain` for ``chain``, its RPC connections closed on exit.

    Checks the node's chain id against the configuration first: an endpoint pointing at another
    chain (or a fork with a new id) would otherwise be trusted with the wrong state (T8).
    """
    if chain.kind != "evm":
        raise ConfigError(f"chain {chain.name!r} is {chain.kind}, not evm")
    async with JsonRpcClient(chain.rpc) as rpc:
        evm = EvmChain(
            rpc, domain=chain.domain, finality=chain.finality.name, depth=chain.finality.depth
        )
        if chain.chain_id is not None:
            actual = await evm.chain_id()
            if actual != chain.chain_id:
                raise ConfigError(
                    f"chain {chain.name!r}: endpoint reports chain id {actual}, "
                    f"config says {chain.chain_id}"
                )
        yield evm
