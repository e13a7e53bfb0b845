"""Opening a configured EVM chain: its endpoints identified by chain id, one adapter for every
task and command (:class:`adapters.evm.chain.EvmChain`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from adapters.beacon import BeaconApi
from adapters.evm.beacon_finality import BeaconFollower, BeaconSettings
from adapters.evm.chain import MAX_LOG_RANGE, EvmChain
from adapters.rpc import (
    LOGS_ANSWER_BYTES,
    MIB,
    Identity,
    JsonRpcClient,
    WrongChainError,
    logs_caps,
)
from adapters.text import quoted
from relayer.config import ChainConfig, ConfigError


def _chain_id_check(chain: ChainConfig, expected: int) -> Identity:
    """The identity check of ``chain``'s endpoints: ``eth_chainId`` must be ``expected``."""

    def check(result: object) -> str | None:
        if not isinstance(result, str) or not result.startswith("0x"):
            return f"eth_chainId answered {quoted(result)}, not a chain id"
        try:
            actual = int(result, 16)
        except ValueError:
            return f"eth_chainId answered {quoted(result)}, not a chain id"
        if actual != expected:
            return (
                f"serves chain id {actual}, but chain {chain.name!r} has chain_id {expected} "
                "(another network or a fork): endpoint refused"
            )
        return None

    return ("eth_chainId", check)


def logs_answer_bytes(chain: ChainConfig) -> int:
    """The most bytes one ``eth_getLogs`` answer may have on ``chain``: its
    ``max_logs_answer_mib`` key, else :data:`adapters.rpc.LOGS_ANSWER_BYTES`."""
    mib = chain.options.get("max_logs_answer_mib")
    return LOGS_ANSWER_BYTES if mib is None else mib * MIB


@asynccontextmanager
async def open_evm(
    chain: ChainConfig, *, max_log_range: int | None = None, role: str | None = None
) -> AsyncIterator[EvmChain]:
    """An :class:`EvmChain` for ``chain``, its RPC connections closed on exit.

    Every endpoint must report the configured chain id before it is used: one pointing at
    another chain (or a fork with a new id) would otherwise be trusted with the wrong state
    (T8). ``max_log_range`` caps the blocks of one ``eth_getLogs`` (None: the adapter's
    default). Endpoints that answer now are checked here, and a wrong one is a
    :class:`ConfigError` (the process refuses to start); one that is down now is checked
    before its first use and, if wrong then, never used (the others carry on).

    With ``finality = "beacon"`` the chain's final block comes from a beacon light client
    (:class:`adapters.evm.beacon_finality.BeaconFollower`) over the ``[chains.beacon]`` API
    endpoints; ``role`` names the process, whose light-client state is kept in the table's
    ``store`` directory (None: in memory only, bootstrapped from the checkpoint each time).
    """
    if chain.chain_id is None:
        raise ConfigError(f"chain {chain.name!r}: chain_id is required for an EVM chain")
    async with AsyncExitStack() as stack:
        rpc = await stack.enter_async_context(
            JsonRpcClient(
                chain.rpc,
                identity=_chain_id_check(chain, chain.chain_id),
                answer_caps=logs_caps(logs_answer_bytes(chain)),  # receipts carry logs too
            )
        )
        try:
            await rpc.identify_all()
        except WrongChainError as exc:
            raise ConfigError(str(exc)) from None
        beacon = None
        if isinstance(chain.family_settings, BeaconSettings):
            settings = chain.family_settings
            api = await stack.enter_async_context(BeaconApi(settings.api))
            beacon = BeaconFollower(settings, api, chain=chain.name, role=role)
        yield EvmChain(
            rpc,
            domain=chain.domain,
            finality=chain.finality.name,
            depth=chain.finality.depth,
            rpc_quorum=chain.rpc_quorum,
            max_log_range=MAX_LOG_RANGE if max_log_range is None else max_log_range,
            beacon=beacon,
        )
