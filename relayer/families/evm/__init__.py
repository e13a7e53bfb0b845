"""The EVM family: Ethereum-compatible chains with Passerelle's contracts (Outbox, Inbox,
TokenBridge) deployed, read and written through JSON-RPC.

As an origin its messages are the Outbox's ``Dispatch`` logs, reconciled with the Outbox's
storage proven under a final header; as a destination the relayer sends ``Inbox.process``
transactions and reads delivery from the Inbox's proven storage. Modules: :mod:`.connection`
(endpoints identified by chain id), :mod:`.origin`, :mod:`.delivery`, :mod:`.user` (send,
balances). :class:`EvmFamily` is parameterised by how transactions pay for gas and how far one
``eth_getLogs`` may reach, so EVM profiles (:mod:`relayer.families.evm_legacy`) reuse it whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from adapters.evm.beacon_finality import BeaconSettings
from adapters.evm.tx import FeeModel
from relayer.config import U64_MAX, ChainConfig, Config, need
from relayer.family import ChainFamily, ChainFields, Delivery, Origin
from relayer.jsonfields import as_hex, as_int

if TYPE_CHECKING:
    from light_clients.merkle import IncrementalMerkleTree
    from relayer.attester import AttesterContext
    from relayer.checkpoints import CheckpointStore
    from relayer.family import Reproven
    from relayer.ledger import MessageRecord
    from relayer.payments import GasRate, OriginPayments
    from relayer.relay import Relayer
    from relayer.user import Sent

EVM_CONTRACTS = (
    "outbox",
    "inbox",
    "token_bridge",
    "ping",
    "token",
    "wrapped_token",
    "paymaster",
)
"""The contract addresses an EVM chain section may name (20 bytes each). ``paymaster``: where
senders pay for delivery (docs/design.md, "Paid delivery"), needed by a paid route from here."""
RECIPIENT_CONTRACTS = ("token_bridge", "ping")
"""The EVM contracts that handle messages: what a Substrate origin may address by default.
``inbox``/``outbox`` are the bridge itself and ``token``/``wrapped_token`` are ERC-20s, which
no message has any business calling."""


class EvmFamily:
    """:class:`relayer.family.ChainFamily` for EVM chains.

    ``fee_model`` is how delivery and send transactions pay (``eip1559`` or ``legacy``
    ``gasPrice``); ``max_log_range`` caps the blocks of one ``eth_getLogs`` request (None: the
    adapter's default; a chain's ``max_log_range`` key overrides either)."""

    account_size = 20
    delivered_evidence = "the Inbox's replay guard proven under the final header (eth_getProof)"

    def __init__(
        self,
        kind: str = "evm",
        *,
        fee_model: FeeModel = "eip1559",
        max_log_range: int | None = None,
    ) -> None:
        self.kind = kind
        self.fee_model = fee_model
        self.max_log_range = max_log_range
        self.config_keys = frozenset(
            {
                "rpc_quorum",
                "chain_id",
                "max_log_range",
                "max_logs_answer_mib",
                "beacon",
                *EVM_CONTRACTS,
            }
        )

    def chain_fields(self, obj: Mapping[str, Any], where: str, allow_weak: bool) -> ChainFields:
        from relayer.families.evm.beacon import parse_beacon  # noqa: PLC0415

        # Identified by its chain id: without one, an endpoint serving a fork or another
        # network would be believed.
        return ChainFields(
            family_settings=parse_beacon(obj, where),
            chain_id=as_int(need(obj, where, "chain_id"), f"{where}.chain_id", lo=1, hi=U64_MAX),
            contracts={
                key: as_hex(obj[key], f"{where}.{key}", size=20)
                for key in EVM_CONTRACTS
                if key in obj
            },
            # max_logs_answer_mib: the most MiB one eth_getLogs answer may have (the JSON-RPC
            # client's cap; a window over it is halved, a single block over it is an error
            # naming this key). Up to 1 GiB: above that one answer's parse alone could take
            # tens of GB (adapters.rpc.MAX_ANSWER_BYTES).
            options={
                key: as_int(obj[key], f"{where}.{key}", lo=1, hi=hi)
                for key, hi in (("max_log_range", 1_000_000), ("max_logs_answer_mib", 1024))
                if key in obj
            },
        )

    def log_range(self, chain: ChainConfig) -> int | None:
        """The most blocks one ``eth_getLogs`` may span on ``chain``: its ``max_log_range``
        key, else the family's default."""
        return chain.options.get("max_log_range", self.max_log_range)

    def check_config(self, chains: Sequence[ChainConfig]) -> None:
        return None  # nothing across chains

    def is_origin(self, chain: ChainConfig) -> bool:
        return "outbox" in chain.contracts

    def is_destination(self, chain: ChainConfig) -> bool:
        return "inbox" in chain.contracts

    def outbox_id(self, chain: ChainConfig) -> bytes:
        return chain.contract("outbox").rjust(32, b"\0")

    def finality_text(self, chain: ChainConfig) -> str:
        beacon = chain.family_settings
        if isinstance(beacon, BeaconSettings):
            return (
                f"beacon (sync-committee light client, {beacon.config.preset.name} preset, "
                f"from checkpoint 0x{beacon.checkpoint.hex()[:16]}…)"
            )
        return str(chain.finality)

    def rpc_policy(self, chain: ChainConfig) -> str:
        if chain.family_settings is not None:
            # Beacon finality: endpoints supply data, every piece checked by hash or proof.
            return (
                f"no RPC trusted: {len(chain.rpc)} execution endpoint(s) checked against the "
                "beacon light client"
            )
        return f"rpc quorum {chain.rpc_quorum} of {len(chain.rpc)}"

    def default_recipients(self, config: Config, chain: ChainConfig) -> frozenset[bytes]:
        return frozenset(
            chain.contracts[name].rjust(32, b"\0")
            for name in RECIPIENT_CONTRACTS
            if name in chain.contracts
        )

    def open_origin(
        self, config: Config, chain: ChainConfig, *, role: str | None = None
    ) -> AbstractAsyncContextManager[Origin]:
        return self._open_origin(chain, role)

    @asynccontextmanager
    async def _open_origin(self, chain: ChainConfig, role: str | None) -> AsyncIterator[Origin]:
        from relayer.families.evm.connection import open_evm  # noqa: PLC0415
        from relayer.families.evm.origin import EvmOrigin  # noqa: PLC0415

        async with open_evm(chain, max_log_range=self.log_range(chain), role=role) as evm:
            yield EvmOrigin(chain, evm)

    def delivery(self, chain: ChainConfig, relayer: Relayer) -> Delivery:
        from relayer.families.evm.delivery import EvmDelivery  # noqa: PLC0415

        return EvmDelivery(chain, relayer, fee_model=self.fee_model)

    def attester_duties(
        self, chain: ChainConfig, context: AttesterContext
    ) -> Sequence[Callable[[], Awaitable[None]]]:
        return ()

    async def delivered(
        self, config: Config, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[bool]:
        from relayer.families.evm.user import delivered  # noqa: PLC0415

        return await delivered(chain, messages)

    async def final_delivered(
        self,
        config: Config,
        chain: ChainConfig,
        messages: Sequence[bytes],
        outboxes: Mapping[int, bytes],
    ) -> list[bool]:
        # As EvmDelivery records delivery: proven storage at the final block, never the
        # endpoint's eth_call answer that `delivered` (status) is.
        from light_clients.hashing import keccak256  # noqa: PLC0415
        from relayer.families.evm.connection import open_evm  # noqa: PLC0415
        from relayer.families.evm.delivery import inbox_delivery_state  # noqa: PLC0415

        if not messages:
            return []
        async with open_evm(chain) as evm:
            final = await evm.final_header()
            inbox = chain.contract("inbox")
            state = await inbox_delivery_state(evm, inbox, final, messages, outboxes)
        return [state[keccak256(message)][0] for message in messages]

    async def reprove(
        self,
        config: Config,
        chain: ChainConfig,
        record: MessageRecord,
        *,
        outbox: bytes,
        store: Callable[[], CheckpointStore],
        tree: Callable[[], IncrementalMerkleTree],
    ) -> Reproven:
        # Inbox.retryProven from the [client] key (a running relayer owns its own key's
        # nonces): relayer/families/evm/reproof.py says what is checked before and after.
        from relayer.families.evm.connection import open_evm  # noqa: PLC0415
        from relayer.families.evm.reproof import reprove  # noqa: PLC0415
        from relayer.families.evm.user import client_signer  # noqa: PLC0415

        signer = client_signer(config)
        async with open_evm(chain) as evm:
            return await reprove(
                evm,
                chain,
                signer,
                store=store,
                tree=tree,
                record=record,
                outbox=outbox,
                fee_model=self.fee_model,
            )

    async def read_payments(
        self,
        chain: ChainConfig,
        origin: Origin,
        records: Sequence[MessageRecord],
        destinations: Collection[int],
    ) -> OriginPayments:
        from relayer.families.evm.payments import read_payments  # noqa: PLC0415

        return await read_payments(chain, origin, records, destinations)

    async def paid_since(
        self, chain: ChainConfig, origin: Origin, after: int | None
    ) -> tuple[int, set[str]] | None:
        from relayer.families.evm.payments import paid_since  # noqa: PLC0415

        return await paid_since(chain, origin, after)

    async def current_rate(self, chain: ChainConfig, destination: ChainConfig) -> GasRate | None:
        from relayer.families.evm.connection import open_evm  # noqa: PLC0415
        from relayer.families.evm.payments import rates_at  # noqa: PLC0415

        async with open_evm(chain) as evm:
            rates = await rates_at(evm, chain.contract("paymaster"), [destination.domain], "latest")
        return rates[destination.domain]

    async def send_messages(
        self,
        config: Config,
        source: ChainConfig,
        destination: ChainConfig,
        *,
        recipient: bytes,
        body: bytes,
        count: int,
        pay_gas: int | None = None,
    ) -> list[Sent]:
        from relayer.families.evm.user import send_messages  # noqa: PLC0415

        return await send_messages(
            config,
            source,
            destination,
            recipient=recipient,
            body=body,
            count=count,
            pay_gas=pay_gas,
            fee_model=self.fee_model,
        )

    async def send_tokens(
        self,
        config: Config,
        source: ChainConfig,
        destination: ChainConfig,
        *,
        amount: int,
        recipient: bytes,
        pay_gas: int | None = None,
    ) -> list[Sent]:
        from relayer.families.evm.user import send_tokens  # noqa: PLC0415

        return await send_tokens(
            config,
            source,
            destination,
            amount=amount,
            recipient=recipient,
            pay_gas=pay_gas,
            fee_model=self.fee_model,
        )

    async def token_balance(self, config: Config, chain: ChainConfig, owner: bytes | None) -> int:
        from relayer.families.evm.user import token_balance  # noqa: PLC0415

        return await token_balance(config, chain, owner)

    def client_account(self, config: Config) -> bytes:
        from relayer.families.evm.user import client_address  # noqa: PLC0415

        return client_address(config)

    def default_message_recipient(self, config: Config, chain: ChainConfig) -> bytes:
        return chain.contract("ping").rjust(32, b"\0")


FAMILY: ChainFamily = EvmFamily()
