"""GRANDPA finality on the Substrate origin path: the ``grandpa`` table of a Substrate chain in
relayer/config.py, and :func:`grandpa_follower`, :func:`final_header` and :func:`scan_remarks`
with a follower (relayer/families/substrate/).

The light client and adapters/substrate/finality.py are tested in ``test_grandpa.py`` and
``test_substrate_finality.py``; here they are driven the way the attester and the relayer drive
them. No GRANDPA node can run here, and smoldot's real justification (Polkadot #302592) cannot
prove a chopsticks block, so the chopsticks tests use a synthetic GRANDPA set: the ed25519 keys
of ``test_substrate_finality`` (set id 1) signing precommits for the real chopsticks blocks
(their hashes are blake2-256 of their SCALE headers, as the light client checks). A proxy in
front of chopsticks (``FakeNode`` with an upstream) lists and answers ``grandpa_proveFinality``
with those proofs; everything else, metadata included, is chopsticks'. The checkpoint is
chopsticks' block 0 (its placeholder hash ``0x4545…``, which block 1 names as its parent).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import running_chopsticks
from fakes import FakeNode, header_json, serving, ws_call
from substrateinterface import Keypair
from test_substrate_finality import PUBLIC, SET1, make_header, proof_for
from test_substrate_route import ASSETHUB, GAMMA, config_toml, load

from adapters.errors import AdapterError
from adapters.substrate.client import SubstrateClient
from adapters.substrate.finality import (
    PROVE_FINALITY,
    SYSTEM_EVENTS_KEY,
    GrandpaFinality,
    NodeFinalityProof,
    NotOnFinalizedChain,
    decode_finality_proof,
    encode_finality_proof,
)
from devnet.chopsticks import (
    GENESIS_HASH,
    ChopsticksProcess,
)
from light_clients.hashing import blake2_256
from light_clients.hexstr import parse_data, to_hex
from light_clients.message import Message
from light_clients.substrate.grandpa import (
    AuthoritySet,
    Commit,
    InvalidAuthoritySignature,
    InvalidJustificationTarget,
    Justification,
    SignedPrecommit,
    UnknownAuthorityVote,
    decode_justification,
    encode_justification,
)
from light_clients.substrate.header import SubstrateHeader
from light_clients.substrate.remark import REMARK_PREFIX
from relayer.attester import AttesterState, OriginProgress, OriginReorged, attest_once
from relayer.checkpoints import CheckpointStore
from relayer.config import ChainConfig, ConfigError, GrandpaCheckpoint
from relayer.families.substrate.connection import final_header, grandpa_follower
from relayer.families.substrate.origin import SubstrateOrigin
from relayer.families.substrate.scan import escrow_routes, scan_remarks
from relayer.signer import LocalSigner

WHERE = re.escape("chains[3]")
FINALIZED = '"finalized"'
CHECKPOINT_HASH = b"\xab" * 32
CHECKPOINT: dict[str, Any] = {
    "set_id": 7,
    "block_hash": to_hex(CHECKPOINT_HASH),
    "block_number": 21_000_000,
    "authorities": [
        to_hex(PUBLIC[0]),
        [to_hex(PUBLIC[1]), 3],
        to_hex(PUBLIC[2]),
        [to_hex(PUBLIC[3]), 1],
    ],
}


def toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return str(value)


def grandpa_table(base: dict[str, Any] = CHECKPOINT, **changes: Any) -> str:
    """An inline ``grandpa`` table: ``base`` with ``changes`` (None removes a field)."""
    fields = {**base, **changes}
    return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in fields.items() if v is not None) + " }"


def with_grandpa(table: str | None, finality: str = FINALIZED, **more: str) -> str:
    # The scan starts at the checkpoint: blocks below it cannot be proven from it.
    start = {"start_block": str(CHECKPOINT["block_number"])} if table is not None else {}
    return config_toml(substrate={"finality": finality, "grandpa": table, **start, **more})


def test_a_scan_starting_below_the_checkpoint_is_refused(tmp_path: Path) -> None:
    text = with_grandpa(grandpa_table(), start_block="20999999")
    with pytest.raises(ConfigError, match=r"start_block 20999999 is below the grandpa checkpoint"):
        load(tmp_path, text)


# --- config ----------------------------------------------------------------------------------


def test_a_grandpa_checkpoint_loads_plain_keys_with_weight_one(tmp_path: Path) -> None:
    chain = load(tmp_path, with_grandpa(grandpa_table())).chain("assethub")
    assert str(chain.finality) == "finalized"
    assert chain.settings().grandpa == GrandpaCheckpoint(
        set_id=7,
        block_hash=CHECKPOINT_HASH,
        block_number=21_000_000,
        authorities=((PUBLIC[0], 1), (PUBLIC[1], 3), (PUBLIC[2], 1), (PUBLIC[3], 1)),
    )
    # Everything else of the chain is as without the table.
    plain = load(tmp_path, with_grandpa(None)).chain("assethub")
    assert dataclasses.replace(chain.settings(), grandpa=None) == plain.settings()
    assert plain.settings().grandpa is None


def test_the_largest_set_id_and_weights_load(tmp_path: Path) -> None:
    table = grandpa_table(
        set_id=2**64 - 1, block_number=0, authorities=[[to_hex(PUBLIC[0]), 2**40]]
    )
    checkpoint = load(tmp_path, with_grandpa(table)).chain("assethub").settings().grandpa
    assert checkpoint is not None
    assert (checkpoint.set_id, checkpoint.block_number) == (2**64 - 1, 0)
    assert checkpoint.authorities == ((PUBLIC[0], 2**40),)


KEY0, KEY1 = to_hex(PUBLIC[0]), to_hex(PUBLIC[1])
AUTHORITY = WHERE + r"\.grandpa\.authorities"


@pytest.mark.parametrize(
    ("substrate", "reason"),
    [
        pytest.param(
            {"grandpa": grandpa_table(set_id=None)}, "missing field 'set_id'", id="no-set-id"
        ),
        pytest.param(
            {"grandpa": grandpa_table(block_hash=None)},
            "missing field 'block_hash'",
            id="no-block-hash",
        ),
        pytest.param(
            {"grandpa": grandpa_table(block_number=None)},
            "missing field 'block_number'",
            id="no-block-number",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=None)},
            "missing field 'authorities'",
            id="no-authorities",
        ),
        pytest.param(
            {"grandpa": grandpa_table(set_id=-1)},
            WHERE + r"\.grandpa\.set_id' out of range",
            id="negative-set-id",
        ),
        pytest.param(
            {"grandpa": grandpa_table(set_id=2**64)},
            WHERE + r"\.grandpa\.set_id' out of range",
            id="set-id-beyond-u64",
        ),
        pytest.param(
            {"grandpa": grandpa_table(set_id="7")},
            WHERE + r"\.grandpa\.set_id' must be an integer",
            id="set-id-a-string",
        ),
        pytest.param(
            {"grandpa": grandpa_table(block_hash=to_hex(bytes(31)))},
            WHERE + r"\.grandpa\.block_hash' must be 32 bytes, got 31",
            id="short-block-hash",
        ),
        pytest.param(
            {"grandpa": grandpa_table(block_hash="ab" * 32)},
            WHERE + r"\.grandpa\.block_hash' must start with 0x",
            id="block-hash-without-0x",
        ),
        pytest.param(
            {"grandpa": grandpa_table(block_number=-5)},
            WHERE + r"\.grandpa\.block_number' out of range",
            id="negative-block-number",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[])},
            AUTHORITY + " must not be empty",
            id="empty-authorities",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=KEY0)},
            AUTHORITY + "' must be an array",
            id="authorities-a-string",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[KEY0, to_hex(PUBLIC[1][:31])])},
            AUTHORITY + r"\[1\]' must be 32 bytes, got 31",
            id="short-key",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[KEY0 + "00"])},
            AUTHORITY + r"\[0\]' must be 32 bytes, got 33",
            id="long-key",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[[to_hex(PUBLIC[0][:20]), 2]])},
            AUTHORITY + r"\[0\]' must be 32 bytes, got 20",
            id="short-key-in-a-pair",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[KEY0, [KEY1, 0]])},
            AUTHORITY + r"\[1\]' out of range: 0 not in \[1, ",
            id="weight-0",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[[KEY0, -2]])},
            AUTHORITY + r"\[0\]' out of range: -2",
            id="negative-weight",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[[KEY0, "2"]])},
            AUTHORITY + r"\[0\]' must be an integer",
            id="weight-a-string",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[[KEY0, 1, 2]])},
            AUTHORITY + r"\[0\]' must be a 0x-prefixed hex string, got array",
            id="three-item-entry",
        ),
        pytest.param(
            {"grandpa": grandpa_table(authorities=[1234])},
            AUTHORITY + r"\[0\]' must be a 0x-prefixed hex string, got number",
            id="key-a-number",
        ),
        pytest.param({"grandpa": "5"}, WHERE + r"\.grandpa' must be an object", id="not-a-table"),
        pytest.param(
            {"grandpa": grandpa_table(), "finality": '"devnet-instant"'},
            WHERE + r'\.grandpa needs finality = "finalized"',
            id="devnet-instant",
        ),
        pytest.param(
            {"grandpa": grandpa_table(), "finality": '"confirmations:12"'},
            WHERE + r'\.grandpa needs finality = "finalized"',
            id="confirmations",
        ),
        pytest.param(
            {"grandpa": grandpa_table(), "finality": '"safe"'},
            WHERE + r'\.grandpa needs finality = "finalized"',
            id="safe",
        ),
    ],
)
def test_an_invalid_grandpa_table_is_one_line_naming_the_field(
    tmp_path: Path, substrate: dict[str, str], reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as refused:
        load(tmp_path, config_toml(substrate={"finality": FINALIZED, **substrate}))
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"config {tmp_path / 'passerelle.toml'}: ")


# --- grandpa_follower ------------------------------------------------------------------------


def test_no_follower_without_a_checkpoint(tmp_path: Path) -> None:
    for finality in ('"devnet-instant"', FINALIZED, '"confirmations:3"'):
        chain = load(tmp_path, with_grandpa(None, finality)).chain("assethub")
        assert grandpa_follower(chain) is None


def test_the_follower_starts_at_the_checkpoint(tmp_path: Path) -> None:
    chain = load(tmp_path, with_grandpa(grandpa_table())).chain("assethub")
    follower = grandpa_follower(chain)
    assert isinstance(follower, GrandpaFinality)
    assert (follower.head_hash, follower.head_number) == (CHECKPOINT_HASH, 21_000_000)
    assert follower.authority_set == AuthoritySet(
        7, ((PUBLIC[0], 1), (PUBLIC[1], 3), (PUBLIC[2], 1), (PUBLIC[3], 1))
    )
    assert follower.authority_set.threshold == 5  # total 6: more than two thirds
    assert follower.final_hash(21_000_000) == CHECKPOINT_HASH
    assert follower.final_hash(21_000_001) is None
    assert (follower.pending, follower.last_proof) == (None, None)
    assert grandpa_follower(chain) is not follower  # one per task: no state is shared


def with_checkpoint(chain: ChainConfig, **changes: Any) -> ChainConfig:
    checkpoint = chain.settings().grandpa
    assert checkpoint is not None
    settings = dataclasses.replace(
        chain.settings(), grandpa=dataclasses.replace(checkpoint, **changes)
    )
    return dataclasses.replace(chain, substrate=settings)


@pytest.mark.parametrize(
    ("authorities", "reason"),
    [
        pytest.param(
            ((PUBLIC[0], 1), (PUBLIC[1], 1), (PUBLIC[0], 2)),
            f"authority {to_hex(PUBLIC[0])} is listed twice",
            id="duplicate-key",
        ),
        pytest.param(
            ((PUBLIC[0], 2**64),), f"authority {to_hex(PUBLIC[0])} has weight {2**64}", id="weight"
        ),
        pytest.param(
            ((PUBLIC[0], 2**63), (PUBLIC[1], 2**63)),
            f"total weight {2**64} does not fit in u64",
            id="total-weight",
        ),
    ],
)
def test_an_invalid_authority_set_is_a_config_error(
    tmp_path: Path, authorities: tuple[tuple[bytes, int], ...], reason: str
) -> None:
    chain = with_checkpoint(
        load(tmp_path, with_grandpa(grandpa_table())).chain("assethub"), authorities=authorities
    )
    with pytest.raises(ConfigError, match=re.escape(reason)) as refused:
        grandpa_follower(chain)
    assert str(refused.value).startswith("chain 'assethub': grandpa checkpoint: ")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "authorities",
    [
        pytest.param([KEY0, KEY1, [KEY0, 2]], id="duplicate-key"),
        pytest.param([[KEY0, 2**64]], id="weight-beyond-u64"),
    ],
)
def test_an_invalid_authority_set_in_the_file_is_refused_before_any_chain_is_asked(
    tmp_path: Path, authorities: list[Any]
) -> None:
    """At load time or, at the latest, when the follower is made (before connecting)."""
    try:
        chain = load(tmp_path, with_grandpa(grandpa_table(authorities=authorities)))
    except ConfigError as exc:
        assert "grandpa" in str(exc) and "\n" not in str(exc)
        return
    with pytest.raises(ConfigError, match="chain 'assethub': grandpa checkpoint: "):
        grandpa_follower(chain.chain("assethub"))


# --- chopsticks: a node without GRANDPA -----------------------------------------------------


@pytest.fixture(scope="module")
def chopsticks() -> Iterator[ChopsticksProcess]:
    """One chopsticks for this module (//Alice funded), always stopped."""
    yield from running_chopsticks()


@pytest.fixture(scope="module")
def direct(chopsticks: ChopsticksProcess) -> Iterator[SubstrateClient]:
    """A client of chopsticks itself (no proof methods); two more blocks built first."""
    client = SubstrateClient(chopsticks.ws_url)
    trio.run(client.connect)
    try:
        trio.run(client.rpc, "dev_newBlock", [{"count": 2}])
        yield client
    finally:
        trio.run(client.aclose)


def chain_config(tmp_path: Path, url: str, finality: str, table: str | None) -> ChainConfig:
    text = config_toml(substrate={"rpc": f'["{url}"]', "finality": finality, "grandpa": table})
    return load(tmp_path, text).chain("assethub")


def chopsticks_checkpoint(signers: int = 4) -> str:
    """Set 1 (``SET1``: keys 0..3, one given as a pair) signs the blocks after block 0."""
    keys: list[Any] = [to_hex(key) for key, _ in SET1.authorities[:signers]]
    keys[-1] = [keys[-1], 1]
    return grandpa_table(set_id=1, block_hash=GENESIS_HASH, block_number=0, authorities=keys)


@pytest.mark.chain
def test_a_follower_needs_a_node_offering_grandpa_prove_finality(
    tmp_path: Path, direct: SubstrateClient
) -> None:
    chain = chain_config(tmp_path, direct.url, FINALIZED, chopsticks_checkpoint())
    follower = grandpa_follower(chain)
    assert follower is not None
    with pytest.raises(ConfigError) as refused:
        trio.run(final_header, direct, chain, follower)
    assert str(refused.value) == (
        f"chain 'assethub': a grandpa checkpoint is configured but {direct.url} does not offer "
        f"{PROVE_FINALITY}"
    )
    assert (follower.head_number, follower.last_proof) == (0, None)


@pytest.mark.chain
@pytest.mark.parametrize("finality", ['"devnet-instant"', FINALIZED])
def test_without_a_follower_the_final_head_is_the_nodes_finalized_head(
    tmp_path: Path, direct: SubstrateClient, finality: str
) -> None:
    chain = chain_config(tmp_path, direct.url, finality, None)
    assert grandpa_follower(chain) is None

    async def scenario() -> tuple[SubstrateHeader, Any]:
        return await final_header(direct, chain), await direct.rpc("chain_getFinalizedHead")

    head, finalized = trio.run(scenario)
    assert to_hex(head.hash) == finalized
    assert blake2_256(head.raw) == head.hash  # hash-checked by the light client
    assert head.number >= 3


# --- chopsticks behind a proxy that proves finality -----------------------------------------


@pytest.fixture(scope="module")
def proxy_node(chopsticks: ChopsticksProcess) -> Iterator[FakeNode]:
    """A FakeNode in front of chopsticks that lists the proof methods."""
    fake = FakeNode()
    fake.upstream = chopsticks.ws_url
    # GRANDPA only: chopsticks lists state_getReadProof but fails it (its state roots are
    # zero): a node that does not offer read proofs.
    fake.extra_methods = [PROVE_FINALITY]
    fake.hidden_methods = {"state_getReadProof"}
    with serving(fake):
        yield fake


@pytest.fixture(scope="module")
def proxied_client(proxy_node: FakeNode, direct: SubstrateClient) -> Iterator[SubstrateClient]:
    client = SubstrateClient(proxy_node.url)
    trio.run(client.connect)
    try:
        yield client
    finally:
        trio.run(client.aclose)


@pytest.fixture
def proxy(proxy_node: FakeNode, proxied_client: SubstrateClient) -> Iterator[FakeNode]:
    """The proxy, its own answers reset after each test."""
    try:
        yield proxy_node
    finally:
        proxy_node.handlers.clear()
        proxy_node.calls.clear()


def canonical_headers(client: SubstrateClient) -> list[SubstrateHeader]:
    """chopsticks' blocks #1..head (hash-checked by the client)."""

    async def read() -> list[SubstrateHeader]:
        head = await client.finalized_head()
        headers = [head]
        while headers[-1].number > 1:
            headers.append(await client.header(headers[-1].parent_hash))
        return headers[::-1]

    return trio.run(read)


def serve_justifications(proxy: FakeNode, headers: list[SubstrateHeader], **kwargs: Any) -> None:
    """``grandpa_proveFinality(n)``: a justification of block n by ``SET1`` (or ``kwargs``)."""
    proxy.serve_proofs({h.number: proof_for(h, **kwargs) for h in headers})


def tampered(proof: bytes) -> bytes:
    """The same proof, the first precommit's signature with one bit flipped."""
    decoded = decode_finality_proof(proof)
    justification = decode_justification(decoded.justification)
    precommits = list(justification.commit.precommits)
    first = precommits[0]
    signature = bytes([first.signature[0] ^ 1]) + first.signature[1:]
    precommits[0] = SignedPrecommit(
        first.target_hash, first.target_number, signature, first.authority
    )
    commit = dataclasses.replace(justification.commit, precommits=tuple(precommits))
    assert isinstance(commit, Commit)
    encoded = encode_justification(Justification(justification.round, commit, ()))
    return encode_finality_proof(NodeFinalityProof(decoded.block, encoded, ()))


def run(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    async def call() -> Any:
        return await function(*args, **kwargs)

    return trio.run(call)


@pytest.mark.chain
def test_a_follower_accepts_the_head_a_justification_proves(
    tmp_path: Path, proxy: FakeNode, proxied_client: SubstrateClient
) -> None:
    headers = canonical_headers(proxied_client)
    head = headers[-1]
    serve_justifications(proxy, headers)
    chain = chain_config(tmp_path, proxy.url, FINALIZED, chopsticks_checkpoint())
    follower = grandpa_follower(chain)
    assert follower is not None
    assert run(final_header, proxied_client, chain, follower) == head
    assert proxy.proved() == [head.number]  # one justification; the rest linked by parent hash
    assert (follower.head_hash, follower.head_number) == (head.hash, head.number)
    assert [follower.final_hash(h.number) for h in headers] == [h.hash for h in headers]
    proof = follower.last_proof
    assert proof is not None
    assert (proof.target_hash, proof.target_number) == (head.hash, head.number)
    assert sorted(key for key, _ in proof.signers) == sorted(key for key, _ in SET1.authorities)
    # The same head again: proven already, no new proof asked for.
    assert run(final_header, proxied_client, chain, follower) == head
    assert proxy.proved() == [head.number]


@pytest.mark.chain
def test_a_tampered_justification_is_the_light_clients_error(
    tmp_path: Path, proxy: FakeNode, proxied_client: SubstrateClient
) -> None:
    headers = canonical_headers(proxied_client)
    head = headers[-1]
    chain = chain_config(tmp_path, proxy.url, FINALIZED, chopsticks_checkpoint())
    proxy.serve_proofs({head.number: tampered(proof_for(head))})
    follower = grandpa_follower(chain)
    assert follower is not None
    with pytest.raises(InvalidAuthoritySignature, match="bad signature") as raised:
        run(final_header, proxied_client, chain, follower)
    assert not isinstance(raised.value, AdapterError)
    assert str(raised.value).startswith(f"{PROVE_FINALITY}({head.number}) on {proxy.url}: ")
    assert (follower.head_number, follower.last_proof) == (0, None)
    assert follower.final_hash(head.number) is None
    # Signed by keys outside the checkpoint's set: refused as well.
    serve_justifications(proxy, headers, signers=(4, 5, 6, 7))
    with pytest.raises(UnknownAuthorityVote, match="not in set 1"):
        run(final_header, proxied_client, chain, follower)
    # A checkpoint set that lacks one of the four signers: its vote is refused, not ignored.
    narrow = chain_config(tmp_path, proxy.url, FINALIZED, chopsticks_checkpoint(signers=3))
    serve_justifications(proxy, headers)
    narrow_follower = grandpa_follower(narrow)
    assert narrow_follower is not None
    with pytest.raises(UnknownAuthorityVote):
        run(final_header, proxied_client, narrow, narrow_follower)
    assert follower.head_number == narrow_follower.head_number == 0


def serve_fork(proxy: FakeNode, upstream: str, fork: SubstrateHeader) -> None:
    """The proxy names ``fork`` as the canonical block at its height and serves its header;
    everything else is forwarded to chopsticks (which must never be asked about ``fork``)."""
    fork_hex = to_hex(fork.hash)

    def block_hash(params: list[Any]) -> Any:
        if params == [fork.number]:
            return fork_hex
        return ws_call(upstream, "chain_getBlockHash", params)

    def header(params: list[Any]) -> Any:
        if params == [fork_hex]:
            return header_json(fork)
        return ws_call(upstream, "chain_getHeader", params)

    def raw_header(params: list[Any]) -> Any:
        if params == [fork_hex]:
            return to_hex(fork.raw)
        return ws_call(upstream, "archive_v1_header", params)

    proxy.on("chain_getBlockHash", block_hash)
    proxy.on("chain_getHeader", header)
    proxy.on("archive_v1_header", raw_header)


ALICE_KEY = Keypair.create_from_uri("//Alice")
ALICE_ID = bytes(ALICE_KEY.public_key)


@pytest.mark.chain
def test_scan_remarks_takes_only_the_proven_final_blocks(
    tmp_path: Path,
    proxy: FakeNode,
    proxied_client: SubstrateClient,
    direct: SubstrateClient,
    chopsticks: ChopsticksProcess,
) -> None:
    sent = Message(1, 99, ASSETHUB, ALICE_ID, GAMMA, b"\x0b" * 32, b"proven final")
    included = run(
        direct.submit,
        ALICE_KEY,
        "System",
        "remark_with_event",
        {"remark": REMARK_PREFIX + sent.encode()},
    )
    assert included.success
    headers = canonical_headers(proxied_client)
    head = headers[-1]
    assert head.hash == included.block_hash
    serve_justifications(proxy, headers)
    text = config_toml(
        substrate={
            "rpc": f'["{proxy.url}"]',
            "finality": FINALIZED,
            "grandpa": chopsticks_checkpoint(),
            # gamma has no TokenBridge or Ping: the recipient must be allowed explicitly.
            "recipients": f'{{ "{GAMMA}" = ["0x{"0b" * 32}"] }}',
        }
    )
    config = load(tmp_path, text)
    chain = config.chain("assethub")
    routes = escrow_routes(config, chain)
    follower = grandpa_follower(chain)
    assert follower is not None

    async def scan(blocks: range, grandpa: GrandpaFinality) -> Any:
        return await scan_remarks(proxied_client, chain, routes, blocks, 5, grandpa=grandpa)

    # The attester's loop: the final head (proven), then the blocks up to it. This node proves
    # finality but not storage (chopsticks cannot: its state roots are zero), so under the
    # checkpoint the events would be its word: the scan refuses it (review R3 M1), after each
    # block's finality check and before any remark is read.
    assert run(final_header, proxied_client, chain, follower) == head
    with pytest.raises(AdapterError, match="does not offer state_getReadProof") as unproven:
        run(scan, range(head.number + 1), follower)
    assert "\n" not in str(unproven.value)
    assert proxy.proved() == [head.number]

    # The node now names another block #2 (a fork of #1): refused against the proven #2.
    fork = make_header(headers[0].hash, 2, fork=b"another #2")
    serve_fork(proxy, chopsticks.ws_url, fork)
    assert run(proxied_client.block_hash, 2) == fork.hash
    with pytest.raises(NotOnFinalizedChain, match="conflicts with the block proven final") as no:
        run(scan, range(2, 3), follower)
    assert to_hex(fork.hash) in str(no.value) and to_hex(headers[1].hash) in str(no.value)
    assert not isinstance(no.value, AdapterError)
    assert follower.final_hash(2) == headers[1].hash

    # A follower still at the checkpoint proves #1, then asks for #2: the node's justification
    # is for the real #2, so the fork is refused by the light client (its remarks never read).
    fresh = grandpa_follower(chain)
    assert fresh is not None
    with pytest.raises(AdapterError, match="does not offer state_getReadProof"):
        run(scan, range(1, 2), fresh)  # #1 proven, its events refused
    with pytest.raises(InvalidJustificationTarget, match=r"expected #2") as wrong:
        run(scan, range(2, 3), fresh)
    assert str(wrong.value).startswith(f"{PROVE_FINALITY}(2) on {proxy.url}: ")
    assert not isinstance(wrong.value, AdapterError)
    assert fresh.final_hash(1) == headers[0].hash and fresh.final_hash(2) is None
    assert proxy.proved() == [head.number, 1, 2]


@pytest.mark.chain
def test_events_decoded_from_proven_bytes_are_the_nodes_events(direct: SubstrateClient) -> None:
    """The path a read proof feeds: ``remarks(prove_events=…)`` decodes ``System.Events`` from
    the given bytes (what ``read_proof`` establishes under a real state root; chopsticks' roots
    are zero, so here the bytes are the node's own value) and finds the same remarks; bytes
    that are not that block's events do not yield them."""
    sent = Message(1, 0, ASSETHUB, ALICE_ID, GAMMA, b"\x0c" * 32, b"events from bytes")
    included = run(
        direct.submit,
        ALICE_KEY,
        "System",
        "remark_with_event",
        {"remark": REMARK_PREFIX + sent.encode()},
    )
    assert included.success
    block = included.block_hash
    raw = run(direct.rpc, "state_getStorage", [to_hex(SYSTEM_EVENTS_KEY), to_hex(block)])
    proven = parse_data(raw, "System.Events")
    from_node = run(direct.remarks, block)
    assert [r.remark for r in from_node] == [REMARK_PREFIX + sent.encode()]
    asked: list[SubstrateHeader] = []

    def proving(value: bytes) -> Callable[[SubstrateHeader], Awaitable[bytes]]:
        async def prove(header: SubstrateHeader) -> bytes:
            asked.append(header)
            return value

        return prove

    assert run(partial(direct.remarks, block, prove_events=proving(proven))) == from_node
    assert run(partial(direct.remarks, block, prove_events=proving(b"\x00"))) == []  # no events
    assert [h.hash for h in asked] == [block, block]  # asked with the block's own header


@pytest.mark.chain
def test_a_node_naming_another_signed_block_halts_an_attester_only_if_grandpa_agrees(
    tmp_path: Path,
    proxy: FakeNode,
    proxied_client: SubstrateClient,
    chopsticks: ChopsticksProcess,
) -> None:
    """An attester halts (OriginReorged) when the block of its last signature is no longer
    canonical. With a GRANDPA checkpoint that block's hash must be proven final first: a node
    naming a fork for it is the light client's error (logged, retried), never a halt of the
    attester by one endpoint's word. Without a checkpoint the node's word is all there is, as
    ``status`` says, and the same answer halts it."""
    headers = canonical_headers(proxied_client)
    serve_justifications(proxy, headers)
    signed = headers[1]  # the attester signed at block #2
    fork = make_header(headers[0].hash, 2, fork=b"another #2")

    def attest(table: str | None, finality: str) -> AttesterState:
        config = load(
            tmp_path,
            config_toml(
                substrate={
                    "rpc": f'["{proxy.url}"]',
                    "finality": finality,
                    "grandpa": table,
                }
            ),
        )
        chain = config.chain("assethub")
        follower = grandpa_follower(chain)
        origin = SubstrateOrigin(chain, proxied_client, escrow_routes(config, chain), follower)
        progress = OriginProgress(last_index=0, last_block=(signed.number, signed.hash))
        state = AttesterState()
        store = CheckpointStore(tmp_path / "store")
        run(attest_once, origin, chain, LocalSigner(b"\x01" * 32), store, state, progress=progress)
        return state

    serve_fork(proxy, chopsticks.ws_url, fork)
    state = attest(chopsticks_checkpoint(), FINALIZED)
    assert state.errors == 1 and state.signed == {}  # refused by GRANDPA, not halted
    with pytest.raises(OriginReorged, match="block 2, at which this attester signed"):
        attest(None, '"devnet-instant"')
