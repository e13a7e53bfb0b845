"""The Substrate family: a chain of the Polkadot SDK (Asset Hub) as origin and destination.

As an origin its messages are ``PSRL`` remarks of final blocks (GRANDPA-proven with a
checkpoint); as a destination the committee's ``pallet_multisig`` account executes batches the
relayer proposes and the attesters verify. Modules: :mod:`.settings` (its config section),
:mod:`.connection` (genesis check, final head), :mod:`.scan` (origin), :mod:`.calls` (the
runtime calls of a delivery), :mod:`.proposals` (the proposal store), :mod:`.delivery` (the
relayer's side), :mod:`.approval` (the attesters' side), :mod:`.user` (send, balances).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from relayer.config import ChainConfig, Config
from relayer.family import ChainFamily, ChainFields, Delivery, Origin, ReproofRefused

if TYPE_CHECKING:
    from light_clients.merkle import IncrementalMerkleTree
    from relayer.attester import AttesterContext
    from relayer.checkpoints import CheckpointStore
    from relayer.family import Reproven
    from relayer.ledger import MessageRecord
    from relayer.payments import GasRate, OriginPayments
    from relayer.relay import Relayer
    from relayer.user import Sent


class SubstrateFamily:
    """:class:`relayer.family.ChainFamily` for Substrate chains."""

    kind = "substrate"
    account_size = 32
    delivered_evidence = (
        "the replay-guard item at the final head, proven by state_getReadProof (required with a "
        "GRANDPA checkpoint, used wherever the node offers it; the node's word under "
        "devnet-instant, and a parachain's final head is too)"
    )

    @property
    def config_keys(self) -> frozenset[str]:
        from relayer.families.substrate.settings import SUBSTRATE_KEYS  # noqa: PLC0415

        return SUBSTRATE_KEYS

    def chain_fields(self, obj: Mapping[str, Any], where: str, allow_weak: bool) -> ChainFields:
        from relayer.families.substrate.settings import substrate_settings  # noqa: PLC0415

        return ChainFields(substrate=substrate_settings(obj, where, allow_weak))

    def check_config(self, chains: Sequence[ChainConfig]) -> None:
        from relayer.families.substrate.settings import check_config  # noqa: PLC0415

        check_config(chains)

    def is_origin(self, chain: ChainConfig) -> bool:
        return True  # any account can remark a message

    def is_destination(self, chain: ChainConfig) -> bool:
        return True  # the committee's multisig delivers

    def outbox_id(self, chain: ChainConfig) -> bytes:
        return chain.settings().genesis_hash

    def finality_text(self, chain: ChainConfig) -> str:
        text = str(chain.finality)
        if text == "finalized":
            grandpa = chain.settings().grandpa is not None
            text += " (GRANDPA-proven)" if grandpa else " (node's word: no checkpoint)"
        return text

    def rpc_policy(self, chain: ChainConfig) -> str:
        return f"first of {len(chain.rpc)} endpoint(s), no rpc quorum"

    def default_recipients(self, config: Config, chain: ChainConfig) -> frozenset[bytes]:
        # No Substrate → Substrate route: an operator who builds one lists its recipients.
        return frozenset()

    def open_origin(
        self, config: Config, chain: ChainConfig, *, role: str | None = None
    ) -> AbstractAsyncContextManager[Origin]:
        from relayer.families.substrate.origin import open_origin  # noqa: PLC0415

        return open_origin(config, chain)

    def delivery(self, chain: ChainConfig, relayer: Relayer) -> Delivery:
        from relayer.families.substrate.delivery import SubstrateDelivery  # noqa: PLC0415

        return SubstrateDelivery(chain, relayer)

    def attester_duties(
        self, chain: ChainConfig, context: AttesterContext
    ) -> Sequence[Callable[[], Awaitable[None]]]:
        from relayer.families.substrate.approval import approval_duties  # noqa: PLC0415

        return approval_duties(chain, context)

    async def delivered(
        self, config: Config, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[bool]:
        from relayer.families.substrate.user import delivered  # noqa: PLC0415

        return await delivered(chain, messages)

    async def final_delivered(
        self,
        config: Config,
        chain: ChainConfig,
        messages: Sequence[bytes],
        outboxes: Mapping[int, bytes],
    ) -> list[bool]:
        # The evidence SubstrateDelivery records from: the replay-guard item at the final
        # head, proven where the node can prove it; refunded is not delivered (review R2 M2).
        from relayer.families.substrate.user import final_delivered  # noqa: PLC0415

        return await final_delivered(config, chain, messages)

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
        raise ReproofRefused(
            f"{record.id}: retry --on-chain is not supported on {self.kind} (destination "
            f"{chain.name}): a Substrate destination parks no message to re-prove, its "
            "deliveries are batches the committee's multisig executes and a message not "
            "delivered stays in the ledger for `passerelle retry`"
        )

    async def read_payments(
        self,
        chain: ChainConfig,
        origin: Origin,
        records: Sequence[MessageRecord],
        destinations: Collection[int],
    ) -> OriginPayments:
        from relayer.families.substrate.payments import read_payments  # noqa: PLC0415

        found: OriginPayments = await read_payments(chain, origin, records, destinations)
        return found

    async def paid_since(
        self, chain: ChainConfig, origin: Origin, after: int | None
    ) -> tuple[int, set[str]] | None:
        return None  # a fee is the transfer in the remark's own batch: no top-ups to watch

    async def current_rate(self, chain: ChainConfig, destination: ChainConfig) -> GasRate | None:
        from relayer.families.substrate.payments import configured_rate  # noqa: PLC0415

        rate: GasRate | None = configured_rate(chain, destination.domain)
        return rate

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
        from relayer.families.substrate.user import send_messages  # noqa: PLC0415

        return await send_messages(
            config,
            source,
            destination,
            recipient=recipient,
            body=body,
            count=count,
            pay_gas=pay_gas,
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
        from relayer.families.substrate.user import return_tokens  # noqa: PLC0415

        return await return_tokens(config, source, destination, amount, recipient, pay_gas=pay_gas)

    async def token_balance(self, config: Config, chain: ChainConfig, owner: bytes | None) -> int:
        from relayer.families.substrate.user import asset_balance  # noqa: PLC0415

        return await asset_balance(config, chain, owner)

    def client_account(self, config: Config) -> bytes:
        from relayer.families.substrate.user import client_keypair  # noqa: PLC0415

        return bytes(client_keypair(config).public_key)

    def default_message_recipient(self, config: Config, chain: ChainConfig) -> bytes:
        return self.client_account(config)  # a Substrate account: yourself


FAMILY: ChainFamily = SubstrateFamily()
