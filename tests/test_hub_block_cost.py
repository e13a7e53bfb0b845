"""Cheaper Asset Hub delivery blocks (HUBPROF, session 8): what the devnet rewrites to make
guard items free holding (devnet/substrate.py), and a nonce asked of the node only when needed.

Pure tests of the one place the devnet edits chain state by hand: it must set exactly the
``free_holding`` flag of a ``ClassDetails`` it recognises, wholly the multisig's, and refuse
anything else in one line (the bytes come from an RPC answer, which is not trusted). The chain
side — a delivery locks no deposit, a replay still fails, a foreign or missing collection is
refused — is ``test_free_holding_guards_lock_no_deposit_and_still_refuse_a_replay`` in
tests/test_substrate_hardening.py, on that module's chopsticks (no chain of its own here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from hashlib import blake2b
from typing import Any, cast

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from substrateinterface.exceptions import SubstrateRequestException
from test_signer_sr25519_bound import ALICE, ALICE_ID, REMARK, _client, _Node

from adapters.errors import AdapterError
from adapters.substrate.client import (
    Submitted,
    SubstrateClient,
    account_nonce,
    system_account_key,
)
from adapters.substrate.finality import storage_key
from devnet.substrate import (
    CLASS_DETAILS_SIZE,
    SubstrateSetupError,
    class_key,
    free_holding_details,
    grant_free_holding,
)
from light_clients.hexstr import to_hex

OWNER = b"\x5a" * 32
FLAG_AT = 4 * 32 + 16


def details(*, roles: tuple[bytes, bytes, bytes, bytes] = (OWNER,) * 4, flag: int = 0) -> bytes:
    """A ``ClassDetails`` of this runtime: four roles, a deposit, the flag, counters, frozen."""
    deposit = (10**12).to_bytes(16, "little")
    counters = (3).to_bytes(4, "little") + bytes(4) + bytes(4)
    return b"".join(roles) + deposit + bytes([flag]) + counters + b"\x00"


@given(
    st.binary(min_size=CLASS_DETAILS_SIZE - FLAG_AT - 1, max_size=CLASS_DETAILS_SIZE - FLAG_AT - 1)
)
def test_only_the_flag_changes_and_a_second_pass_changes_nothing(tail: bytes) -> None:
    raw = OWNER * 4 + bytes(16) + b"\x00" + tail
    updated = free_holding_details(raw, OWNER)
    assert updated is not None and len(updated) == len(raw)
    assert updated[FLAG_AT] == 1
    assert updated[:FLAG_AT] == raw[:FLAG_AT] and updated[FLAG_AT + 1 :] == raw[FLAG_AT + 1 :]
    assert free_holding_details(updated, OWNER) is None


@given(st.binary(max_size=400).filter(lambda raw: len(raw) != CLASS_DETAILS_SIZE))
def test_bytes_of_another_size_are_refused(raw: bytes) -> None:
    with pytest.raises(SubstrateSetupError, match="not a Uniques ClassDetails"):
        free_holding_details(raw, OWNER)


@given(st.integers(min_value=2, max_value=255))
def test_a_flag_that_is_no_bool_is_refused(flag: int) -> None:
    with pytest.raises(SubstrateSetupError, match="not a Uniques ClassDetails"):
        free_holding_details(details(flag=flag), OWNER)


@pytest.mark.parametrize("role", range(4))
def test_a_collection_with_any_other_role_holder_is_not_rewritten(role: int) -> None:
    """Someone else as issuer, admin or freezer could mint item N first and jam delivery N:
    such a collection is not the committee's guard, and the devnet does not touch it."""
    roles = [OWNER] * 4
    roles[role] = b"\x66" * 32
    with pytest.raises(SubstrateSetupError, match="not wholly the multisig's"):
        free_holding_details(details(roles=(roles[0], roles[1], roles[2], roles[3])), OWNER)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_the_class_key_is_the_pallets_blake2_128_concat_of_a_u32(class_id: int) -> None:
    encoded = class_id.to_bytes(4, "little")
    expected = storage_key("Uniques", "Class") + blake2b(encoded, digest_size=16).digest()
    assert class_key(class_id) == expected + encoded


@pytest.mark.parametrize("class_id", [-1, 2**32])
def test_a_class_id_that_is_no_u32_is_refused(class_id: int) -> None:
    with pytest.raises(SubstrateSetupError, match="is not a u32"):
        class_key(class_id)


# ---------------------------------------- submit_call: the node asked less often, never undercut


class _PoolNode(_Node):
    """The stand-in node of test_signer_sr25519_bound with one account's nonces as a real node
    keeps them: ``on_chain`` (``System.Account``, what blocks included) and ``pool`` (accepted,
    not yet included). ``system_accountNextIndex`` counts the pool only up to its first gap
    (a real node's future queue is counted nowhere); a submission below ``on_chain`` is refused
    as stale (1010), one whose nonce a pooled extrinsic holds as a too-low priority (1014).
    ``asked`` counts the runtime calls, ``reads`` the storage reads."""

    def __init__(self) -> None:
        super().__init__()
        self.on_chain, self.pool, self.asked, self.reads = 7, set[int](), 0, 0
        self.signing = -1
        self.account_value: str | None = None

    def next_index(self) -> int:
        index = self.on_chain
        while index in self.pool:
            index += 1
        return index

    def include(self) -> None:
        """A block includes every pooled extrinsic it can: up to the first gap."""
        self.on_chain = self.next_index()
        self.pool = {n for n in self.pool if n >= self.on_chain}

    def rpc_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "system_accountNextIndex":
            self.asked += 1
            return {"result": self.next_index()}
        if method == "state_getStorage":
            self.reads += 1
            assert params == [to_hex(system_account_key(ALICE_ID))]
            if self.account_value is not None:
                return {"result": self.account_value}
            info = self.on_chain.to_bytes(4, "little") + (1).to_bytes(4, "little") * 3
            return {"result": to_hex(info + (10**15).to_bytes(16, "little") + bytes(48))}
        if method == "author_submitExtrinsic":
            if self.signing < self.on_chain:
                raise SubstrateRequestException(
                    {
                        "code": 1010,
                        "message": "Invalid Transaction",
                        "data": "Transaction is outdated",
                    }
                )
            if self.signing in self.pool:
                raise SubstrateRequestException({"code": 1014, "message": "Priority is too low"})
            self.pool.add(self.signing)
        return super().rpc_request(method, params)

    def create_signed_extrinsic(self, **kwargs: Any) -> Any:
        self.signing = kwargs["nonce"]
        return super().create_signed_extrinsic(**kwargs)


def _submitter(client: SubstrateClient) -> Callable[[], int]:
    def submit() -> int:
        done = trio.run(partial(client.submit_call, ALICE, REMARK, wait_for_inclusion=False))
        assert isinstance(done, Submitted)
        return done.nonce

    return submit


def _a_wait_fails(client: SubstrateClient) -> None:
    """What an attester's failed inclusion wait does to the client: the count is forgotten."""
    with pytest.raises(AdapterError, match="not included"):
        trio.run(
            partial(client.wait_included, Submitted(b"\xee" * 32, ALICE_ID, 7, 16, 80), timeout=0)
        )
    assert ALICE_ID not in client._next_nonces


def test_once_the_node_confirmed_the_count_a_storage_read_replaces_the_runtime_call() -> None:
    """The CPU saving: ``system_accountNextIndex`` runs the runtime on chopsticks' one executor
    (0.07 s of the block builder's CPU each); once the node's pool agrees with the client's
    count, each submission reads ``System.Account`` from storage instead (main thread only)."""
    node = _PoolNode()
    submit = _submitter(_client(node))
    assert [submit() for _ in range(3)] == [7, 8, 9]
    assert (node.asked, node.reads) == (2, 1)  # the first, and the one that confirmed
    node.include()
    assert [submit() for _ in range(3)] == [10, 11, 12]
    assert (node.asked, node.reads) == (2, 4) and len(node.submitted) == 6


def test_after_a_gap_our_own_promoted_extrinsics_are_not_signed_over() -> None:
    """Review M1. Our 7, 8, 9 are accepted; 7 is evicted, so 8 and 9 wait in the future queue,
    counted nowhere, and the waits fail (the count is forgotten). The next submission asks the
    node (7) and fills the gap, which promotes 8 and 9: the node now says 10. Signing from the
    client's own count (8) would collide with our old 8 (refused, another halted round per
    extrinsic that was in flight); the client must not sign below the node until the node has
    confirmed its count."""
    node = _PoolNode()
    client = _client(node)
    submit = _submitter(client)
    assert [submit() for _ in range(3)] == [7, 8, 9]
    node.pool.discard(7)  # evicted: 8 and 9 are future now
    _a_wait_fails(client)
    assert submit() == 7 and node.next_index() == 10  # 8 and 9 promoted
    assert submit() == 10
    assert submit() == 11 and node.asked == 5  # confirmed again: no more runtime calls
    assert submit() == 12 and node.asked == 5
    assert node.pool == set(range(7, 13))


def test_a_foreign_extrinsic_with_our_key_already_included_is_not_undercut() -> None:
    """Review M2, the case a storage read sees: someone signed 10 and 11 with our key and they
    were included. The client's confirmed count (10) is below the chain's: the client signs 12
    (nothing refused, no halted round), warns, and asks the node once before trusting it again.
    The case it cannot see, a foreign extrinsic still in the pool at our nonce, makes the node
    refuse ours once: that forgets the count, and the next submission asks the node."""
    node = _PoolNode()
    client = _client(node)
    submit = _submitter(client)
    assert [submit() for _ in range(3)] == [7, 8, 9]
    node.include()
    node.on_chain = 12  # foreign 10 and 11, included
    assert submit() == 12 and node.asked == 3
    assert submit() == 13 and node.asked == 3
    node.include()
    node.pool.add(14)  # a foreign 14, not yet included: invisible in storage
    # Refused at the trusted 14 (1014): the client asks the node at once and signs 15 in the
    # same call (review RINTA L1: no refused round, no halted pipeline).
    assert submit() == 15 and node.asked == 4
    assert client._next_nonces[ALICE_ID] == 16 and ALICE_ID not in client._nonces_trusted


@pytest.mark.parametrize("answer", ["0x010203", "0xzz", 12, "0x"])
def test_a_malformed_account_read_is_one_line_and_nothing_is_signed(answer: Any) -> None:
    """A hostile node's ``System.Account`` answer is refused in one line before anything is
    submitted; the count is kept (nothing was spent)."""
    node = _PoolNode()
    client = _client(node)
    submit = _submitter(client)
    assert [submit() for _ in range(2)] == [7, 8]
    node.account_value = answer
    with pytest.raises(AdapterError) as refused:
        submit()
    assert "System.Account" in str(refused.value) and "\n" not in str(refused.value)
    assert len(node.submitted) == 2 and client._next_nonces[ALICE_ID] == 9


@given(st.binary(min_size=4, max_size=120))
def test_the_nonce_is_the_first_u32_of_account_info(raw: bytes) -> None:
    assert account_nonce(raw) == int.from_bytes(raw[:4], "little")


@given(st.binary(max_size=3))
def test_an_account_value_shorter_than_a_u32_is_refused(raw: bytes) -> None:
    with pytest.raises(AdapterError, match=r"System\.Account value of"):
        account_nonce(raw)


def test_the_account_key_is_the_pallets_blake2_128_concat_of_the_id() -> None:
    assert account_nonce(None) == 0  # never signed
    expected = storage_key("System", "Account") + blake2b(ALICE_ID, digest_size=16).digest()
    assert system_account_key(ALICE_ID) == expected + ALICE_ID


# ------------------------------------------------ grant_free_holding: one pinned block, or refuse


class _SetStorageNode:
    """What ``grant_free_holding`` asks of the client, answered like chopsticks: storage per
    block hash, ``dev_setStorage`` writing into the block it names (the head if none).
    ``build_before`` (a method, its n-th call) makes a new head with a mint in it just before
    that request."""

    def __init__(self, build_before: tuple[str, int] | None) -> None:
        self.heads = ["0x" + "11" * 32]
        self.storage = {self.heads[0]: {to_hex(class_key(5)): details()}}
        self.build_before, self.writes = build_before, list[list[Any]]()
        self.calls: dict[str, int] = {}

    def build(self) -> None:
        """A block with a mint: the collection's counter changes at the new head."""
        head = "0x" + f"{len(self.heads) + 0x11:02x}" * 32
        minted = bytearray(self.storage[self.heads[-1]][to_hex(class_key(5))])
        minted[FLAG_AT + 1] += 1  # instances
        self.storage[head] = {to_hex(class_key(5)): bytes(minted)}
        self.heads.append(head)

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        self.calls[method] = self.calls.get(method, 0) + 1
        if (method, self.calls[method]) == self.build_before:
            self.build()
        if method == "chain_getHead":
            return self.heads[-1]
        if method == "state_getStorage":
            key, at = params[0], params[1] if len(params) > 1 else self.heads[-1]
            return to_hex(self.storage[at][key])
        assert method == "dev_setStorage"
        self.writes.append(list(params))
        [[key, value]], at = params[0], params[1] if len(params) > 1 else self.heads[-1]
        self.storage[at][key] = bytes.fromhex(value[2:])
        return at

    async def query(self, module: str, item: str, params: Any, block_hash: Any = None) -> Any:
        at = self.heads[-1] if block_hash is None else to_hex(block_hash)
        raw = self.storage[at][to_hex(class_key(params[0]))]
        return {"free_holding": bool(raw[FLAG_AT]), "instances": raw[FLAG_AT + 1]}


def test_the_grant_reads_and_writes_one_pinned_block() -> None:
    node = _SetStorageNode(build_before=None)
    trio.run(grant_free_holding, cast(SubstrateClient, node), [5], OWNER)
    [[_, at]] = node.writes
    assert at == node.heads[0] and node.storage[at][to_hex(class_key(5))][FLAG_AT] == 1


@pytest.mark.parametrize("built_before", [("dev_setStorage", 1), ("chain_getHead", 2)])
def test_a_block_built_during_the_grant_is_refused_and_its_mint_is_not_clobbered(
    built_before: tuple[str, int],
) -> None:
    """Review L3: chopsticks' ``dev_setStorage`` overwrites the whole ``ClassDetails`` in the
    block it names. A mint landing between the read and the write must not lose its counters
    to the stale bytes read before it: the write goes to the block that was read, and the
    grant refuses in one line once it sees the head moved (run the setup again)."""
    node = _SetStorageNode(build_before=built_before)
    with pytest.raises(SubstrateSetupError, match="a block was built while") as refused:
        trio.run(grant_free_holding, cast(SubstrateClient, node), [5], OWNER)
    assert "\n" not in str(refused.value)
    assert node.storage[node.heads[-1]][to_hex(class_key(5))][FLAG_AT + 1] == 4  # 3 + the mint


# ------------------------------------------------- session 8, FINTA: the integration review


def test_two_holes_cost_no_refused_submission() -> None:
    """Review RINTA L1. Our 7 and 8 evicted, our 9 and 10 in the node's future queue (their
    waits gave up: the count forgotten). The 1st submission asks the node (7: fills hole 7,
    promotes nothing); the 2nd asks (8 = the count: "agreed", trusted) and fills hole 8,
    which promotes 9 and 10, counted nowhere the storage read sees. The 3rd signed the
    trusted 9, held by our old 9: refused (1014), the count forgotten, the attester's
    pipeline halted (k holes cost k - 1 such rounds). Now the refusal at a trusted count asks
    the node inside the lock and signs 11 in the same call; nothing of ours is replaced."""
    node = _PoolNode()
    node.pool = {9, 10}
    client = _client(node)
    submit = _submitter(client)
    assert submit() == 7
    assert submit() == 8 and ALICE_ID in client._nonces_trusted
    assert submit() == 11  # was AdapterError ... error 1014
    assert node.pool == set(range(7, 12)) and node.asked == 3
    assert submit() == 12  # asked again (not trusted after a refusal), then agreed


class _RefusingNode(_PoolNode):
    """A hostile node that, once ``refusing``, refuses every submission as 1014."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = False

    def rpc_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "author_submitExtrinsic" and self.refusing:
            raise SubstrateRequestException({"code": 1014, "message": "Priority is too low"})
        return super().rpc_request(method, params)


def test_a_refusal_after_the_retry_or_at_an_asked_nonce_is_raised_once() -> None:
    """Hostile node: it refuses every submission as 1014. A refusal at a trusted count is
    retried once with the node asked; the second refusal is raised (one line), never a
    loop. A refusal at a nonce the node itself gave (no trusted count) is raised at once:
    asking again would give the same answer."""
    node = _RefusingNode()
    client = _client(node)
    submit = _submitter(client)
    assert [submit() for _ in range(2)] == [7, 8] and ALICE_ID in client._nonces_trusted
    node.refusing = True
    asked = node.asked
    with pytest.raises(AdapterError, match=r"^author_submitExtrinsic .*: error 1014: [^\n]*$"):
        submit()
    assert node.asked == asked + 1  # the one retry's ask
    assert ALICE_ID not in client._next_nonces
    with pytest.raises(AdapterError, match=r"error 1014"):
        submit()
    assert node.asked == asked + 2  # asked (no count), refused, raised: no second attempt


def test_a_storage_read_jumping_past_the_pool_is_neither_signed_nor_trusted() -> None:
    """Review RINTA L3. Hostile node: once the count is trusted, its ``System.Account``
    answer says the account is at nonce 1,000 while its pool says 9. Believed, the client
    signed 1,000 and trusted 1,001: every extrinsic future (never included) until a wait
    failed, 120 s each, for as long as the lie lasted. The pool counts from the chain's
    nonce up, so an answer below the storage read unmasks it: the client signs what the pool
    and its count say, and trusts nothing until the two agree again."""
    node = _PoolNode()
    client = _client(node)
    submit = _submitter(client)
    assert [submit() for _ in range(2)] == [7, 8] and ALICE_ID in client._nonces_trusted
    info = (1000).to_bytes(4, "little") + (1).to_bytes(4, "little") * 3
    node.account_value = to_hex(info + (10**15).to_bytes(16, "little") + bytes(48))
    assert submit() == 9  # was 1000
    assert ALICE_ID not in client._nonces_trusted and client._next_nonces[ALICE_ID] == 10
    node.account_value = None  # the truth again: the node confirms the count, trusted again
    assert submit() == 10 and ALICE_ID in client._nonces_trusted


# ------------------------------------------------- session 8, FINTA2: the review RFINA


def _account_info(nonce: int) -> str:
    """A ``System.Account`` value whose nonce is ``nonce`` (what the stand-in node answers)."""
    info = nonce.to_bytes(4, "little") + (1).to_bytes(4, "little") * 3
    return to_hex(info + (10**15).to_bytes(16, "little") + bytes(48))


def test_storage_caught_ahead_of_the_pool_is_not_believed_until_they_agree(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review RFINA L2. Hostile: after two confirmed submissions the node's storage says the
    key's nonce is 1000 while its own pool (honest) counts 9. The client trusted its count
    again on the pool alone, the next storage read met the same lie: over 8 submissions, 4
    warnings blaming "the key signed elsewhere" and 4 extra runtime calls. Now the client
    remembers that storage was caught ahead of the pool: one warning, worded for that case;
    it signs the right nonces from the pool, and trusts its count again (storage reads only,
    no runtime call) once storage is no longer ahead of the pool."""
    node = _PoolNode()
    client = _client(node)
    submit = _submitter(client)
    assert [submit() for _ in range(2)] == [7, 8]
    node.account_value = _account_info(1000)
    caplog.set_level("WARNING", logger="passerelle")
    assert [submit() for _ in range(8)] == list(range(9, 17))  # the pool's, never the lie's
    lines = [r.getMessage() for r in caplog.records if "nonce of" in r.getMessage()]
    assert len(lines) == 1 and "storage answer (1000) is ahead of its own pool" in lines[0]
    assert ALICE_ID not in client._nonces_trusted  # still not trusted: storage disagrees
    node.account_value = None  # storage honest again: 7 (nothing included), below the pool
    assert submit() == 17  # no longer ahead: trusted again
    assert ALICE_ID in client._nonces_trusted and ALICE_ID not in client._storage_ahead
    asked = node.asked
    assert [submit() for _ in range(3)] == [18, 19, 20]
    assert node.asked == asked  # trusted: storage reads only, no runtime call
    assert len([r for r in caplog.records if "nonce of" in r.getMessage()]) == 1
