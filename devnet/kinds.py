"""What differs between the devnet's kinds of chain process, in one table: :data:`KINDS`.

A ``devnet.json`` entry names its chain's ``kind`` (``"evm"``: anvil, ``"substrate"``:
chopsticks running Asset Hub, ``"pos"``: the proof-of-stake chain's execution client,
``"beacon"``: its beacon node; entries written before there was a kind are anvil's). Everything
the devnet asks a running chain goes through the entry of that kind, never through a
comparison with the kind's name:

- ``answers(entry)``: is the node on the recorded endpoint the recorded chain? anvil must
  answer ``eth_chainId`` with the recorded chain id; chopsticks ``system_chain`` with Asset
  Hub's name and block 0 with the genesis hash recorded by ``up`` (after a query for an unknown
  block hash chopsticks reports another one and refuses every signature,
  ``docs/substrate-devnet.md``); the PoS chain's execution client must answer ``eth_chainId``
  with the recorded chain id AND its beacon node (``beacon_api``) the recorded genesis
  validators root: a restarted pair on the same ports is another chain, on which the
  config's checkpoint and contracts mean nothing; the beacon node itself must answer that
  genesis;
- ``block_number(rpc)``: its latest block number (the beacon node: its head slot), for
  ``devnet status``.

Both return False / None when the node does not answer or answers something malformed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from adapters.jsonrpc import RpcError, call_sync
from devnet.chopsticks import CHAIN_NAME
from devnet.pos import PosChainError, beacon_get
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_loose_uint, parse_quantity

__all__ = ["DEFAULT_KIND", "KINDS", "ChainKind", "kind_of"]

_TIMEOUT = 2.0  # a local node that takes longer is not healthy
_MAX_BLOCK_BYTES = 8


@dataclass(frozen=True)
class ChainKind:
    """How to ask one kind of devnet chain whether it is the recorded one, and how far it is."""

    answers: Callable[[dict[str, Any]], bool]
    block_number: Callable[[str], int | None]


def _http_url(rpc: str) -> str:
    """chopsticks serves plain HTTP JSON-RPC on its WebSocket port."""
    return "http://" + rpc.removeprefix("ws://") if rpc.startswith("ws://") else rpc


def _anvil_answers(entry: dict[str, Any]) -> bool:
    try:
        answer = call_sync(str(entry.get("rpc")), "eth_chainId", timeout=_TIMEOUT)
        return parse_quantity(answer, "eth_chainId", 32) == entry.get("chain_id")
    except (RpcError, DecodeError):
        return False


def _anvil_block(rpc: str) -> int | None:
    try:
        answer = call_sync(rpc, "eth_blockNumber", timeout=_TIMEOUT)
        return parse_quantity(answer, "eth_blockNumber", _MAX_BLOCK_BYTES)
    except (RpcError, DecodeError):
        return None


def _chopsticks_answers(entry: dict[str, Any]) -> bool:
    url = _http_url(str(entry.get("rpc")))
    try:
        return bool(
            call_sync(url, "system_chain", timeout=_TIMEOUT) == CHAIN_NAME
            and call_sync(url, "chain_getBlockHash", [0], timeout=_TIMEOUT)
            == entry.get("genesis_hash")
        )
    except RpcError:
        return False


def _chopsticks_block(rpc: str) -> int | None:
    try:
        header = call_sync(_http_url(rpc), "chain_getHeader", timeout=_TIMEOUT)
        number = header.get("number") if isinstance(header, dict) else None
        # chopsticks writes the number zero-padded ("0x00000003"), not as a QUANTITY.
        return parse_loose_uint(number, "header number", _MAX_BLOCK_BYTES)
    except (RpcError, DecodeError):
        return None


def _beacon_genesis_is(api: object, genesis_validators_root: object) -> bool:
    """The beacon node at ``api`` answers with the recorded genesis validators root."""
    if not isinstance(api, str) or not isinstance(genesis_validators_root, str):
        return False
    try:
        genesis = beacon_get(api, "/eth/v1/beacon/genesis", timeout=_TIMEOUT)
    except PosChainError:
        return False
    return (
        isinstance(genesis, dict)
        and str(genesis.get("genesis_validators_root", "")).lower()
        == genesis_validators_root.lower()
    )


def _pos_answers(entry: dict[str, Any]) -> bool:
    return _anvil_answers(entry) and _beacon_genesis_is(
        entry.get("beacon_api"), entry.get("genesis_validators_root")
    )


def _beacon_answers(entry: dict[str, Any]) -> bool:
    return _beacon_genesis_is(entry.get("rpc"), entry.get("genesis_validators_root"))


def _beacon_slot(api: str) -> int | None:
    try:
        header = beacon_get(api, "/eth/v1/beacon/headers/head", timeout=_TIMEOUT)
        slot = header["header"]["message"]["slot"] if isinstance(header, dict) else None
    except (PosChainError, KeyError, TypeError):
        return None
    return int(slot) if isinstance(slot, str) and slot.isdigit() and len(slot) <= 20 else None


KINDS: Final[dict[str, ChainKind]] = {
    "evm": ChainKind(_anvil_answers, _anvil_block),  # anvil
    "substrate": ChainKind(_chopsticks_answers, _chopsticks_block),  # chopsticks (Asset Hub)
    "pos": ChainKind(_pos_answers, _anvil_block),  # the PoS chain's EthereumJS client
    "beacon": ChainKind(_beacon_answers, _beacon_slot),  # the PoS chain's Lodestar
}

DEFAULT_KIND: Final = "evm"
"""The kind of an entry that names none (records written before Asset Hub joined)."""


def kind_of(entry: dict[str, Any] | None) -> ChainKind | None:
    """The :class:`ChainKind` of a ``devnet.json`` entry; None for no entry or an unknown kind."""
    if entry is None:
        return None
    return KINDS.get(str(entry.get("kind", DEFAULT_KIND)))
