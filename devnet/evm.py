"""Deploy and link Passerelle's contracts on a local EVM chain (anvil, or the EthereumJS client
of the proof-of-stake chain).

Usage::

    alpha = deploy_evm_chain(url_a, domain=1, deployer_key=key, committee=members, threshold=2,
                             home_token=True, client=client_address)
    beta = deploy_evm_chain(url_b, domain=2, deployer_key=key, committee=members, threshold=2,
                            home_token=False)
    link_evm_chains(EvmDeployment(url_a, 1, alpha), EvmDeployment(url_b, 2, beta),
                    deployer_key=key)

Two phases because linking needs the other chain's addresses: deploying the chains can run in
parallel, linking runs once all are done (``link_evm_chains(a, b, c, …)`` links every pair, in
one block). A Substrate chain (Asset Hub, which has no contracts)
is linked to an EVM chain with :func:`link_substrate_remote` instead.

Speed: every transaction of a phase is signed locally and sent back to back with explicit
nonces, then all receipts are awaited together, so a phase costs one block (one second with
1-second blocks) however many transactions it has. That rules out ``eth_estimateGas`` for
anything that touches a contract deployed earlier in the same batch (it is not on chain yet
when we estimate), so gas limits are computed up front: see :func:`_deploy_gas`. Contract
addresses are predicted from (deployer, nonce) and checked against every receipt, which also
catches anyone else sending from the deployer account meanwhile.

Each chain gets the contracts compiled for the EVM it executes (``evm_version`` of
:func:`deploy_evm_chain`: anvil runs cancun, the proof-of-stake chain shanghai, which has no
transient storage). Nothing here is anvil-specific: only standard ``eth_*`` calls, explicit
EIP-1559 fees from the latest base fee, and receipts polled, so a chain that builds a block
per slot (the PoS chain's EthereumJS client) takes the same path; a phase then costs a slot.

Failures raise :class:`DeployError` with one line naming the chain, the step and the revert
reason decoded from the contracts' ABI when the node gives it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TimeExhausted, Web3Exception
from web3.types import TxParams

from adapters.evm.contracts import (
    DEFAULT_EVM_VERSION,
    ArtifactError,
    artifact_names,
    check_evm_version,
    load_artifact,
)
from light_clients.committee import address_of
from light_clients.errors import DecodeError
from light_clients.ethereum import rlp
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_data, to_hex

__all__ = [
    "DEMO_BALANCE",
    "DeployError",
    "EvmDeployment",
    "deploy_evm_chain",
    "link_evm_chains",
    "link_substrate_remote",
]

DEMO_BALANCE = 1_000_000 * 10**18
"""TestToken minted to the client on the home chain: plenty for demos and benchmarks."""

TOKEN_NAME, TOKEN_SYMBOL, TOKEN_DECIMALS = "Passerelle Test Token", "PTT", 18
WRAPPED_NAME, WRAPPED_SYMBOL = "Wrapped Passerelle Test Token", "wPTT"

# A plain call here (setCommittee with a few members, setOrigin, mint, register…) uses well
# under 300k gas; 1M is a safe ceiling that still lets a whole phase fit one 30M-gas block.
_CALL_GAS = 1_000_000
_PRIORITY_FEE = 10**9  # 1 gwei: anvil orders by tip; any positive tip is mined at once
# anvil mines at once; the proof-of-stake chain includes a transaction in its next 2-second
# slot, and on a loaded 2-core machine (CI, the test workers) its validators can miss many slots
# in a row. A failure only shows after this long, so a generous value costs a healthy run nothing.
_RECEIPT_TIMEOUT = 90.0
_POLL_INTERVAL = 0.05
_RPC_TIMEOUT = 10.0


class DeployError(RuntimeError):
    """A deployment or link transaction failed; ``str()`` is one line saying which and why."""


@dataclass(frozen=True)
class EvmDeployment:
    """A chain whose contracts :func:`deploy_evm_chain` deployed: what linking needs."""

    rpc_url: str
    domain: int
    contracts: Mapping[str, bytes] = field(default_factory=dict)


# --------------------------------------------------------------------------- encoding helpers


def _pad32(address: bytes) -> bytes:
    """An EVM address as a 32-byte Passerelle party / bridge id (left-padded)."""
    return bytes(12) + address


def _create_address(sender: bytes, nonce: int) -> bytes:
    """The address CREATE gives a contract deployed by ``sender`` at ``nonce``."""
    return keccak256(rlp.encode([sender, rlp.encode_uint(nonce)]))[12:]


def _constructor_types(name: str) -> list[str]:
    for item in load_artifact(name).abi:
        if item.get("type") == "constructor":
            return [entry["type"] for entry in item["inputs"]]
    return []


def _deploy_data(name: str, args: Sequence[Any], evm_version: str) -> bytes:
    artifact = load_artifact(name, evm_version)
    if not artifact.bytecode:
        raise DeployError(f"contract {name} has no bytecode (an interface?)")
    return artifact.bytecode + abi_encode(_constructor_types(name), list(args))


def _call_data(contract: str, signature: str, args: Sequence[Any]) -> bytes:
    selector = load_artifact(contract).method_identifiers.get(signature)
    if selector is None:
        raise DeployError(f"{contract} has no function {signature}")
    types = signature[signature.index("(") + 1 : -1]
    # The artifact stores selectors as bare hex ("a9059cbb"), as solc writes them.
    return parse_data("0x" + selector, f"selector of {signature}", 4) + abi_encode(
        _split_types(types), list(args)
    )


def _split_types(types: str) -> list[str]:
    """``"address[],uint8"`` → ``["address[]", "uint8"]`` (no tuples in the calls made here)."""
    return [t for t in types.split(",") if t]


def _address_or_none(value: object) -> bytes | None:
    """A receipt's ``contractAddress`` as 20 bytes, None when it is not one."""
    try:
        return parse_data(value, "contractAddress", 20)
    except DecodeError:
        return None


def _deploy_gas(name: str, data: bytes, evm_version: str) -> int:
    """A gas limit that certainly covers deploying ``name`` with init code ``data``.

    Intrinsic cost (21000 + 32000 for CREATE), calldata at the EIP-7623 floor price of 40 gas
    per byte (an upper bound of every fork's calldata price), 200 gas per byte of stored
    runtime code, and 500k for the constructor's own work (a few storage writes and calls).
    anvil charges gas used, not this limit, so generosity costs nothing but block space.
    """
    runtime = len(load_artifact(name, evm_version).deployed_bytecode)
    return 53_000 + 40 * len(data) + 200 * runtime + 500_000


@cache
def _known_errors() -> dict[bytes, tuple[str, list[str]]]:
    """Custom errors of every contract artifact by 4-byte selector, plus Error(string)."""
    errors: dict[bytes, tuple[str, list[str]]] = {
        keccak256(b"Error(string)")[:4]: ("Error", ["string"])
    }
    for name in artifact_names():
        for item in load_artifact(name).abi:
            if item.get("type") == "error":
                types = [entry["type"] for entry in item["inputs"]]
                signature = f"{item['name']}({','.join(types)})"
                errors[keccak256(signature.encode())[:4]] = (item["name"], types)
    return errors


def _describe_revert(data: bytes) -> str:
    """``NotOwner(0xab…)`` for revert data of our contracts, else the raw hex (shortened)."""
    known = _known_errors().get(data[:4]) if len(data) >= 4 else None
    if known is None:
        return f"revert data {to_hex(data)[:82]}" if data else "no revert data"
    name, types = known
    try:
        values = abi_decode(types, data[4:])
    except Exception:  # malformed arguments: the name alone still says what happened
        return name
    shown = ", ".join(to_hex(v) if isinstance(v, bytes) else str(v) for v in values)
    return f"{name}({shown})"


# --------------------------------------------------------------------------- batch sender


@dataclass
class _Pending:
    label: str
    tx_hash: bytes
    params: dict[str, Any]
    expected_address: bytes | None


class _Batch:
    """Signs and sends transactions from one key back to back, then awaits all receipts.

    Nonces are assigned locally from the account's pending count, so nothing waits for a block
    between transactions; :meth:`wait` checks every receipt in nonce order, so the first failure
    reported is the root cause (later ones usually fail because of it).
    """

    def __init__(
        self,
        rpc_url: str,
        key: bytes,
        *,
        chain_label: str,
        evm_version: str = DEFAULT_EVM_VERSION,
    ) -> None:
        self.chain_label = chain_label
        self.evm_version = evm_version
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": _RPC_TIMEOUT}))
        self.key = key
        self.sender = address_of(key)
        self._sender_checksum = Web3.to_checksum_address(self.sender)
        try:
            self.chain_id = self.w3.eth.chain_id
            self.nonce = int(self.w3.eth.get_transaction_count(self._sender_checksum, "pending"))
            base_fee = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        except (OSError, Web3Exception) as error:
            raise DeployError(f"{chain_label}: {rpc_url} does not answer ({error})") from None
        # Twice the base fee plus the tip survives six full blocks of base-fee growth, far more
        # than a devnet phase needs; anvil's base fee only falls while its blocks are empty.
        self.max_fee = 2 * base_fee + _PRIORITY_FEE
        self.pending: list[_Pending] = []

    def deploy(self, name: str, *args: Any) -> bytes:
        """Send a deployment of ``name``; return the address it will have once mined."""
        data = _deploy_data(name, args, self.evm_version)
        address = _create_address(self.sender, self.nonce)
        gas = _deploy_gas(name, data, self.evm_version)
        self._send(f"deploying {name}", None, data, gas, address)
        return address

    def call(self, contract: str, address: bytes, signature: str, *args: Any) -> None:
        """Send ``contract.signature(*args)`` to ``address``."""
        data = _call_data(contract, signature, args)
        name = signature.split("(", maxsplit=1)[0]
        self._send(f"{contract}.{name}", address, data, _CALL_GAS, None)

    def _send(
        self, label: str, to: bytes | None, data: bytes, gas: int, expected: bytes | None
    ) -> None:
        params: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": self.nonce,
            "gas": gas,
            "maxFeePerGas": self.max_fee,
            "maxPriorityFeePerGas": _PRIORITY_FEE,
            "value": 0,
            "data": data,
        }
        if to is not None:
            params["to"] = Web3.to_checksum_address(to)
        signed = Account.sign_transaction(params, self.key)
        try:
            tx_hash = bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        except (OSError, Web3Exception) as error:
            raise DeployError(
                f"{self.chain_label}: {label} was refused by the node: {error}"
            ) from None
        self.pending.append(_Pending(label, tx_hash, params, expected))
        self.nonce += 1

    def wait(self) -> None:
        """Wait for every receipt sent so far; raise DeployError on the first failure."""
        pending, self.pending = self.pending, []
        for item in pending:
            try:
                receipt = self.w3.eth.wait_for_transaction_receipt(
                    HexBytes(item.tx_hash), timeout=_RECEIPT_TIMEOUT, poll_latency=_POLL_INTERVAL
                )
            except TimeExhausted:
                raise DeployError(
                    f"{self.chain_label}: {item.label}: no receipt for {to_hex(item.tx_hash)} "
                    f"within {_RECEIPT_TIMEOUT:g} s (is the chain mining?)"
                ) from None
            except (OSError, Web3Exception) as error:
                raise DeployError(f"{self.chain_label}: {item.label}: {error}") from None
            if receipt["status"] != 1:
                raise DeployError(
                    f"{self.chain_label}: {item.label} reverted "
                    f"(tx {to_hex(item.tx_hash)}, {self._why(item, receipt)})"
                )
            if item.expected_address is not None:
                got = receipt.get("contractAddress")
                if got is None or _address_or_none(got) != item.expected_address:
                    raise DeployError(
                        f"{self.chain_label}: {item.label} landed at {got}, not at "
                        f"{Web3.to_checksum_address(item.expected_address)}: something else "
                        "is sending from the deployer account"
                    )

    def _why(self, item: _Pending, receipt: Any) -> str:
        """Best-effort reason: out of gas, or the revert data of a replay at that block."""
        if int(receipt["gasUsed"]) >= int(item.params["gas"]):
            return f"out of gas at the {item.params['gas']} limit"
        call: TxParams = {"from": self._sender_checksum, "data": item.params["data"]}
        if "to" in item.params:
            call["to"] = item.params["to"]
        try:
            self.w3.eth.call(call, receipt["blockNumber"])
        except Web3Exception as error:
            data = getattr(error, "data", None)
            try:
                return _describe_revert(parse_data(data, "revert data"))
            except DecodeError:
                pass  # no revert data from this node: its message says what happened
            return str(error).splitlines()[0] if str(error) else type(error).__name__
        except OSError as error:
            return f"could not replay it: {error}"
        return "replaying it now succeeds; the state changed since"


# --------------------------------------------------------------------------- public API


def deploy_evm_chain(
    rpc_url: str,
    *,
    domain: int,
    deployer_key: bytes,
    committee: Sequence[bytes],
    threshold: int,
    home_token: bool,
    client: bytes | None = None,
    demo_balance: int = DEMO_BALANCE,
    evm_version: str = DEFAULT_EVM_VERSION,
    priced_domains: Sequence[int] | None = None,
) -> dict[str, bytes]:
    """Deploy Outbox, Inbox, Ping, TokenBridge, Paymaster and a token on the chain at
    ``rpc_url``.

    The deployer owns the Inbox and the TokenBridge. It also owns the Paymaster, is its oracle
    and its beneficiary, and names it as the Outbox's (``dispatchAndPay``); the Paymaster prices
    delivery to each of ``priced_domains`` (default: every devnet domain but this one) at
    :data:`DEVNET_GAS_PRICE` and :data:`DEVNET_EXCHANGE_RATE`, so ``passerelle send`` pays
    (docs/design.md, "Paid delivery"; the devnet's routes still deliver everything).
    ``committee`` (20-byte addresses, in any order) becomes the Inbox committee, sorted as the
    contract requires, with ``threshold``. With ``home_token`` a TestToken is deployed and
    ``demo_balance`` of it minted to ``client`` (default: the deployer); otherwise a
    WrappedToken whose only minter is this TokenBridge.

    Returns the addresses by config key: ``outbox``, ``inbox``, ``ping``, ``token_bridge``,
    ``paymaster`` and ``token`` or ``wrapped_token``. Nothing is linked to another chain yet: see
    :func:`link_evm_chains`. ``evm_version`` picks the artifacts (one of
    :data:`adapters.evm.contracts.EVM_VERSIONS`): the version the chain executes. Raises
    :class:`DeployError` (one line) if anything fails.
    """
    try:
        check_evm_version(evm_version)
    except ArtifactError as error:
        raise DeployError(str(error)) from None
    members = sorted(bytes(m) for m in committee)
    if not members or any(len(m) != 20 or m == bytes(20) for m in members):
        raise DeployError("committee must be non-empty 20-byte non-zero addresses")
    if len(set(members)) != len(members):
        raise DeployError("committee has a duplicate member")
    if not 0 < threshold <= len(members):
        raise DeployError(f"threshold {threshold} is not in 1..{len(members)}")
    if not 0 <= domain < 2**32:
        raise DeployError(f"domain {domain} is not a u32")

    batch = _Batch(
        rpc_url, deployer_key, chain_label=f"domain {domain} ({rpc_url})", evm_version=evm_version
    )
    owner = batch.sender
    outbox = batch.deploy("Outbox", domain)
    inbox = batch.deploy("Inbox", domain, owner)
    ping = batch.deploy("Ping", inbox)
    bridge = batch.deploy("TokenBridge", outbox, inbox, domain, owner)
    contracts = {"outbox": outbox, "inbox": inbox, "ping": ping, "token_bridge": bridge}
    if home_token:
        token = batch.deploy("TestToken", TOKEN_NAME, TOKEN_SYMBOL, TOKEN_DECIMALS)
        batch.call("TestToken", token, "mint(address,uint256)", client or owner, demo_balance)
        contracts["token"] = token
    else:
        contracts["wrapped_token"] = batch.deploy(
            "WrappedToken", WRAPPED_NAME, WRAPPED_SYMBOL, TOKEN_DECIMALS, bridge
        )
    batch.call("Inbox", inbox, "setCommittee(address[],uint8)", members, threshold)
    contracts["paymaster"] = _deploy_paymaster(batch, outbox, domain, priced_domains)
    batch.wait()
    return contracts


DEVNET_GAS_PRICE = 10**9
"""The devnet Paymaster's destination gas price: 1 gwei per gas."""
DEVNET_EXCHANGE_RATE = 10**10
"""And its exchange rate: one destination unit per origin unit (Paymaster.RATE_SCALE)."""
DEVNET_GAS_OVERHEAD = 650_000
"""The gas every devnet message must buy (``Paymaster.deliveryGas``), plus
:data:`DEVNET_GAS_PER_BYTE` a body byte: relayer.config's default floor (``EVM_MIN_DELIVERY_GAS``
and ``CALLDATA_GAS_PER_BYTE``, tests/test_paymaster_overhead.py checks they agree), so a devnet
relayer with the default policy asks exactly what the chain quotes."""
DEVNET_GAS_PER_BYTE = 40


def _deploy_paymaster(
    batch: _Batch, outbox: bytes, domain: int, priced_domains: Sequence[int] | None
) -> bytes:
    """Deploy a Paymaster owned by the deployer (its oracle and beneficiary too), price every
    one of ``priced_domains`` (default: the devnet's domains) but ``domain`` (rate and the gas a
    message must buy there), and name it as ``outbox``'s Paymaster; its address."""
    from devnet.topology import ASSETHUB_DOMAIN, NAMES  # noqa: PLC0415 - devnet defaults only

    owner = batch.sender
    wanted = (*NAMES, ASSETHUB_DOMAIN) if priced_domains is None else priced_domains
    targets = sorted(set(wanted) - {domain})
    paymaster = batch.deploy("Paymaster", owner, owner)
    batch.call("Paymaster", paymaster, "setOracle(address)", owner)
    batch.call(
        "Paymaster",
        paymaster,
        "setGasRates(uint32[],uint128[],uint128[])",
        targets,
        [DEVNET_GAS_PRICE] * len(targets),
        [DEVNET_EXCHANGE_RATE] * len(targets),
    )
    batch.call(
        "Paymaster",
        paymaster,
        "setDeliveryGas(uint32[],uint64[],uint64[])",
        targets,
        [DEVNET_GAS_OVERHEAD] * len(targets),
        [DEVNET_GAS_PER_BYTE] * len(targets),
    )
    batch.call("Outbox", outbox, "setPaymaster(address)", paymaster)
    return paymaster


def link_evm_chains(
    *deployments: EvmDeployment,
    deployer_key: bytes,
    pairs: Iterable[tuple[int, int]] | None = None,
) -> None:
    """Make every pair of ``deployments`` trust each other (or only ``pairs``, by position);
    all must be deployed by ``deployer_key``.

    For a pair (a, b), on each side: ``Inbox.setOrigin(other domain, other outbox)``,
    ``TokenBridge.setRemote(other domain, other bridge)``; and where one side has a ``token``
    and the other a ``wrapped_token``, the home bridge routes the token to the other domain and
    the remote bridge pairs its wrapped token with it. Each chain's calls, for all its pairs,
    go into one batch, and every chain's batch is sent before any receipt is awaited: linking
    N chains costs one block however large N is (N chains, N·(N-1)/2 pairs, up to 3·(N-1)
    calls of :data:`_CALL_GAS` a chain: 8 chains and gamma fill 24 M of a 30 M-gas block).
    Raises :class:`DeployError` (one line) if anything fails.
    """
    wanted = (
        list(itertools.combinations(range(len(deployments)), 2)) if pairs is None else list(pairs)
    )
    calls: dict[int, list[EvmDeployment]] = {}  # position -> the chains it must learn
    for first, second in wanted:
        a, b = deployments[first], deployments[second]
        if a.domain == b.domain:
            raise DeployError(f"cannot link domain {a.domain} to itself")
        calls.setdefault(first, []).append(b)
        calls.setdefault(second, []).append(a)
    batches: list[_Batch] = []
    for position, remotes in sorted(calls.items()):
        here = deployments[position]
        batch = _Batch(
            here.rpc_url, deployer_key, chain_label=f"domain {here.domain} ({here.rpc_url})"
        )
        for there in remotes:
            _link_calls(batch, here, there)
        batches.append(batch)
    for batch in batches:
        batch.wait()


def _link_calls(batch: _Batch, here: EvmDeployment, there: EvmDeployment) -> None:
    """Queue on ``batch`` (``here``'s chain) what makes ``here`` trust ``there``."""
    try:
        inbox, bridge = here.contracts["inbox"], here.contracts["token_bridge"]
        remote_outbox = there.contracts["outbox"]
        remote_bridge = there.contracts["token_bridge"]
    except KeyError as missing:
        raise DeployError(f"domain {here.domain}/{there.domain}: no {missing} address") from None
    batch.call("Inbox", inbox, "setOrigin(uint32,bytes32)", there.domain, _pad32(remote_outbox))
    batch.call(
        "TokenBridge", bridge, "setRemote(uint32,bytes32)", there.domain, _pad32(remote_bridge)
    )
    home = here.contracts.get("token")
    if home is not None and "wrapped_token" in there.contracts:
        batch.call("TokenBridge", bridge, "registerHomeToken(address,uint32)", home, there.domain)
    wrapped = here.contracts.get("wrapped_token")
    remote_home = there.contracts.get("token")
    if wrapped is not None and remote_home is not None:
        batch.call(
            "TokenBridge",
            bridge,
            "registerWrappedToken(uint32,bytes32,address)",
            there.domain,
            _pad32(remote_home),
            wrapped,
        )


def link_substrate_remote(
    evm: EvmDeployment, *, domain: int, outbox: bytes, bridge_account: bytes, deployer_key: bytes
) -> None:
    """Make ``evm`` trust the Substrate chain of ``domain`` as an escrow remote of its bridge.

    A Substrate chain such as Asset Hub has no contracts: its "outbox" is its 32-byte genesis
    hash ``outbox`` (what the committee signs checkpoints for), and its "bridge" is the escrow
    account ``bridge_account`` (e.g. the committee's multisig) that receives the messages and
    tokens sent there. A token return is the user's own extrinsic (escrow transfer plus message
    remark), so its message sender is the user, never ``bridge_account``: the TokenBridge must
    mark the domain with ``setEscrowRemote`` to accept it, and then accepts only UNLOCKs from
    it, capped by what it locked towards that domain; the attesters sign only escrow-backed
    remarks.

    On ``evm`` (deployed by ``deployer_key``): ``Inbox.setOrigin(domain, outbox)``,
    ``TokenBridge.setRemote(domain, bridge_account)``, ``TokenBridge.setEscrowRemote(domain,
    true)`` and, if it has a home ``token``, ``TokenBridge.registerHomeToken(token, domain)``
    and ``TokenBridge.setRemoteWraps(domain, token, true)`` (the remote's wrapped asset is that
    token: nothing else may be sent there; a wrapped token here cannot be paired: nothing here
    is minted for an escrow remote). All
    are sent before any receipt is awaited. Raises :class:`DeployError` (one line) if anything
    fails.
    """
    if not 0 <= domain < 2**32:
        raise DeployError(f"domain {domain} is not a u32")
    if domain == evm.domain:
        raise DeployError(f"cannot link domain {domain} to itself")
    for label, value in (("outbox", outbox), ("bridge account", bridge_account)):
        if len(value) != 32 or value == bytes(32):
            raise DeployError(f"domain {domain}: {label} must be 32 non-zero bytes")
    try:
        inbox, bridge = evm.contracts["inbox"], evm.contracts["token_bridge"]
    except KeyError as missing:
        raise DeployError(f"domain {evm.domain}: no {missing} address") from None
    batch = _Batch(evm.rpc_url, deployer_key, chain_label=f"domain {evm.domain} ({evm.rpc_url})")
    batch.call("Inbox", inbox, "setOrigin(uint32,bytes32)", domain, bytes(outbox))
    batch.call("TokenBridge", bridge, "setRemote(uint32,bytes32)", domain, bytes(bridge_account))
    batch.call("TokenBridge", bridge, "setEscrowRemote(uint32,bool)", domain, True)
    home = evm.contracts.get("token")
    if home is not None:
        batch.call("TokenBridge", bridge, "registerHomeToken(address,uint32)", home, domain)
        # What the remote wraps: any other token sent there reverts at dispatch.
        batch.call("TokenBridge", bridge, "setRemoteWraps(uint32,address,bool)", domain, home, True)
    batch.wait()
