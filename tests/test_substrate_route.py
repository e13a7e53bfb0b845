"""The pure parts of the Substrate family (relayer/families/substrate/): delivery calls for a
Substrate destination (the replay guard's Uniques mint, then an Assets mint or the message as a
remark), the escrow routes and token bridges taken from a config, delivery proposals and their
store; and the Substrate keys of the config (docs/design.md, "Substrate origin and
destination")."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reach import Reach

from light_clients.committee import Checkpoint, address_of
from light_clients.hashing import keccak256
from light_clients.merkle import EMPTY_ROOT, TREE_DEPTH
from light_clients.message import Message
from light_clients.substrate.multisig import multisig_account
from light_clients.substrate.remark import EscrowRoute
from relayer.config import Config, ConfigError, SubstrateSettings, load_config
from relayer.families.substrate.calls import (
    NotDeliverable,
    RuntimeCall,
    collection_of,
    delivery_calls,
    token_bridges,
    token_mint,
)
from relayer.families.substrate.proposals import DirectoryProposalStore, Proposal
from relayer.families.substrate.scan import escrow_routes

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

U32_MAX = 2**32 - 1
U128_MAX = 2**128 - 1

ALPHA, BETA, ASSETHUB, GAMMA = 1, 2, 3, 4
GENESIS = b"\x9e" * 32
SIGNATORIES = (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
MULTISIG = multisig_account(SIGNATORIES, 2)  # the config checks the derivation
ASSET_ID = 5
HOME_TOKEN = b"\x70" * 20
OTHER_TOKEN = b"\x71" * 20
ALPHA_BRIDGE = b"\xa3" * 20
BETA_BRIDGE = b"\xb3" * 20
ALICE = bytes.fromhex("d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d")
BENEFICIARY = b"\xbe" * 32
COLLECTIONS = {ALPHA: 11, BETA: 12}

SETTINGS = SubstrateSettings(
    genesis_hash=GENESIS,
    multisig=MULTISIG,
    multisig_threshold=2,
    signatories=SIGNATORIES,
    collections=COLLECTIONS,
    asset_id=ASSET_ID,
    asset_home_domain=ALPHA,
    asset_home_token=HOME_TOKEN,
)
BRIDGES = {ALPHA: bytes(12) + ALPHA_BRIDGE, BETA: bytes(12) + BETA_BRIDGE}


def h(data: bytes) -> str:
    return "0x" + data.hex()


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def token_body(
    *, action: int = 1, token: bytes = HOME_TOKEN, amount: int = 1000, to: bytes = BENEFICIARY
) -> bytes:
    """``abi.encode(uint8 action, bytes32 token, uint256 amount, bytes32 recipient)``."""
    return word(action) + token.rjust(32, b"\0") + word(amount) + to.rjust(32, b"\0")


def message(
    *,
    nonce: int = 7,
    origin: int = ALPHA,
    sender: bytes = BRIDGES[ALPHA],
    destination: int = ASSETHUB,
    recipient: bytes = MULTISIG,
    body: bytes | None = None,
) -> Message:
    return Message(
        version=1,
        nonce=nonce,
        origin=origin,
        sender=sender,
        destination=destination,
        recipient=recipient,
        body=token_body() if body is None else body,
    )


def guard(msg: Message, collection: int) -> RuntimeCall:
    return RuntimeCall(
        "Uniques", "mint", {"class": collection, "instance": msg.nonce, "owner": h(MULTISIG)}
    )


def remark(msg: Message) -> RuntimeCall:
    return RuntimeCall("System", "remark_with_event", {"remark": msg.encode()})


# --- delivery calls ----------------------------------------------------------------------------


def test_a_mint_from_the_home_bridge_delivers_the_wrapped_asset() -> None:
    msg = message(nonce=42, body=token_body(amount=123_456))
    assert token_mint(msg, SETTINGS, BRIDGES) == (BENEFICIARY, 123_456)
    assert delivery_calls(msg, SETTINGS, BRIDGES) == [
        RuntimeCall("Uniques", "mint", {"class": 11, "instance": 42, "owner": h(MULTISIG)}),
        RuntimeCall(
            "Assets", "mint", {"id": ASSET_ID, "beneficiary": h(BENEFICIARY), "amount": 123_456}
        ),
    ]


def test_the_amount_limits_of_a_mint() -> None:
    for amount in (1, U128_MAX):
        msg = message(body=token_body(amount=amount))
        assert token_mint(msg, SETTINGS, BRIDGES) == (BENEFICIARY, amount)


def test_any_other_message_is_delivered_as_a_remark() -> None:
    msg = message(origin=GAMMA, sender=ALICE, recipient=ALICE, body=b"hello", nonce=U32_MAX)
    settings_ = dataclasses.replace(SETTINGS, collections={GAMMA: 99})
    assert delivery_calls(msg, settings_, BRIDGES) == [
        RuntimeCall("Uniques", "mint", {"class": 99, "instance": U32_MAX, "owner": h(MULTISIG)}),
        RuntimeCall("System", "remark_with_event", {"remark": msg.encode()}),
    ]


NOT_A_TRANSFER = [
    ("sender not the bridge", message(sender=ALICE)),
    ("another domain's bridge as sender", message(sender=BRIDGES[BETA])),
    ("recipient not the multisig", message(recipient=ALICE)),
    ("empty body", message(body=b"")),
    ("short body", message(body=token_body()[:127])),
    ("long body", message(body=token_body() + b"\0")),
]
# From the origin's TokenBridge to the multisig, 128 bytes: tokens were locked for it, so it is
# minted or refunded, never a mere remark (issue #8, point 4).
TRANSFER_NOT_A_MINT = [
    ("from a bridge that is not at home", message(origin=BETA, sender=BRIDGES[BETA])),
    ("wrong home token", message(body=token_body(token=OTHER_TOKEN))),
    ("home token right-padded", message(body=word(1) + HOME_TOKEN.ljust(32, b"\0") + bytes(64))),
    ("unlock action", message(body=token_body(action=2))),
    ("zero action", message(body=token_body(action=0))),
    ("action beyond uint8", message(body=token_body(action=0x101))),
    ("zero amount", message(body=token_body(amount=0))),
    ("amount beyond u128", message(body=token_body(amount=U128_MAX + 1))),
    ("zero beneficiary", message(body=token_body(to=bytes(32)))),
]


@pytest.mark.parametrize("msg", [pytest.param(m, id=name) for name, m in NOT_A_TRANSFER])
def test_anything_but_a_token_transfer_is_a_remark(msg: Message) -> None:
    assert token_mint(msg, SETTINGS, BRIDGES) is None
    assert delivery_calls(msg, SETTINGS, BRIDGES) == [
        guard(msg, COLLECTIONS[msg.origin]),
        remark(msg),
    ]


@pytest.mark.parametrize("msg", [pytest.param(m, id=name) for name, m in TRANSFER_NOT_A_MINT])
def test_a_token_transfer_that_is_no_mint_is_never_a_remark(msg: Message) -> None:
    assert token_mint(msg, SETTINGS, BRIDGES) is None
    with pytest.raises(NotDeliverable):
        delivery_calls(msg, SETTINGS, BRIDGES)


def test_without_a_wrapped_asset_or_bridges_every_message_is_a_remark() -> None:
    msg = message()
    no_asset = SubstrateSettings(
        genesis_hash=GENESIS,
        multisig=MULTISIG,
        multisig_threshold=2,
        signatories=SIGNATORIES,
        collections=COLLECTIONS,
    )
    assert token_mint(msg, no_asset, BRIDGES) is None
    assert token_mint(msg, SETTINGS, {}) is None
    assert delivery_calls(msg, SETTINGS, {}) == [guard(msg, 11), remark(msg)]
    with pytest.raises(NotDeliverable):  # tokens were locked for it: refund only
        delivery_calls(msg, no_asset, BRIDGES)


def test_collection_of_an_unknown_origin_is_a_config_error() -> None:
    assert collection_of(SETTINGS, ALPHA) == 11
    assert collection_of(SETTINGS, BETA) == 12
    with pytest.raises(ConfigError, match="no Uniques collection configured for origin 9"):
        collection_of(SETTINGS, 9)
    with pytest.raises(ConfigError, match="origin 9"):
        delivery_calls(message(origin=9, sender=ALICE), SETTINGS, BRIDGES)


@st.composite
def mint_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=160))
    body = token_body(
        action=draw(st.sampled_from((0, 1, 1, 1, 2, 0x101))),
        token=draw(st.sampled_from((HOME_TOKEN, HOME_TOKEN, OTHER_TOKEN))),
        amount=draw(st.sampled_from((0, 1, 1000, U128_MAX, U128_MAX + 1, 2**256 - 1))),
        to=draw(st.sampled_from((BENEFICIARY, BENEFICIARY, bytes(32), b"\x01" + bytes(31)))),
    )
    cut = draw(st.sampled_from((None, None, None, 127, 129)))
    if cut is None:
        return body
    return body[:cut] if cut < len(body) else body + b"\0"


def expected_mint(msg: Message) -> tuple[bytes, int] | None:
    """An independent reading of the rule, decoding the body as TokenBridge's abi.decode."""
    if msg.origin != ALPHA or msg.sender != bytes(12) + ALPHA_BRIDGE or msg.recipient != MULTISIG:
        return None
    if len(msg.body) != 128:
        return None
    try:
        action, token, amount, to = abi_decode(["uint8", "bytes32", "uint256", "bytes32"], msg.body)
    except DecodingError:
        return None
    if action != 1 or token != bytes(12) + HOME_TOKEN or not 0 < amount < 2**128 or not any(to):
        return None
    return to, amount


@st.composite
def routed_messages(draw: st.DrawFn) -> Message:
    """A valid mint (ALPHA's bridge to the multisig, action 1 of the home token, an amount
    in 1..2^128-1, a non-zero beneficiary) with, half the time, one or two parts swapped for
    a wrong one: the mint branch and each way out of it are all common draws."""
    parts: dict[str, Any] = {
        "nonce": draw(st.integers(0, U32_MAX)),
        "origin": ALPHA,
        "sender": BRIDGES[ALPHA],
        "recipient": MULTISIG,
        "body": token_body(
            amount=draw(st.sampled_from((1, 1000, U128_MAX))),
            to=draw(st.sampled_from((BENEFICIARY, b"\x01" + bytes(31), bytes(31) + b"\x01"))),
        ),
    }
    wrong = {
        "origin": st.just(BETA),
        "sender": st.sampled_from((BRIDGES[BETA], ALICE)),
        "recipient": st.just(ALICE),
        "body": mint_bodies(),
    }
    if draw(st.booleans()):
        # A wrong body is drawn twice as often: it alone separates a mint from a refund.
        names = st.sampled_from(("body", "body", "origin", "sender", "recipient"))
        for name in draw(st.lists(names, min_size=1, max_size=2)):
            parts[name] = draw(wrong[name])
    return message(**parts)


def test_delivery_calls_match_an_independent_oracle() -> None:
    reach = Reach("mint", "refund", "remark")

    @PROPERTY
    @given(routed_messages())
    def check(msg: Message) -> None:
        mint = expected_mint(msg)
        assert token_mint(msg, SETTINGS, BRIDGES) == mint
        to_multisig = msg.sender == BRIDGES[msg.origin] and msg.recipient == MULTISIG
        transfer = to_multisig and len(msg.body) == 128
        if mint is None and transfer:  # locked tokens: refunded, never a remark
            with pytest.raises(NotDeliverable):
                delivery_calls(msg, SETTINGS, BRIDGES)
            reach.hit("refund")
            return
        calls = delivery_calls(msg, SETTINGS, BRIDGES)
        assert len(calls) == 2
        assert calls[0] == guard(msg, COLLECTIONS[msg.origin])
        if mint is None:
            assert calls[1] == remark(msg)
            reach.hit("remark")
        else:
            assert calls[1] == RuntimeCall(
                "Assets", "mint", {"id": ASSET_ID, "beneficiary": h(mint[0]), "amount": mint[1]}
            )
            reach.hit("mint")

    check()
    reach.assert_reached()


# --- config: a Substrate chain, its routes and bridges -----------------------------------------

KEYS = [keccak256(f"substrate route test key {i}".encode()) for i in range(3)]
VALIDATORS = sorted(h(address_of(k)) for k in KEYS)

SUBSTRATE_KEYS: dict[str, str] = {
    "name": '"assethub"',
    "domain": str(ASSETHUB),
    "kind": '"substrate"',
    "rpc": '["ws://127.0.0.1:9944"]',
    "finality": '"devnet-instant"',
    "genesis_hash": f'"{h(GENESIS)}"',
    "multisig": f'"{h(MULTISIG)}"',
    "multisig_threshold": "2",
    "signatories": "[" + ", ".join(f'"{h(s)}"' for s in SIGNATORIES) + "]",
    "collections": '{ "1" = 11, "2" = 12, "4" = 13 }',
    "asset_id": str(ASSET_ID),
    "asset_home": f'{{ domain = {ALPHA}, token = "{h(HOME_TOKEN)}" }}',
}


def config_toml(
    *,
    devnet: bool = True,
    client: str | None = None,
    substrate: dict[str, str | None] | None = None,
) -> str:
    """Three EVM chains (alpha and beta with a TokenBridge, gamma without) and ``assethub``, its
    keys overridden by ``substrate`` (None removes one)."""
    keys = {**SUBSTRATE_KEYS, **(substrate or {})}
    assethub = "\n".join(f"{k} = {v}" for k, v in keys.items() if v is not None)
    relayer = f'key = "{h(KEYS[0])}"' if devnet else 'key_env = "PSRL_RELAYER_KEY"'
    text = f"""
devnet = {str(devnet).lower()}

[ledger]
location = "ledger.db"

[committee]
validators = [{", ".join(f'"{v}"' for v in VALIDATORS)}]
threshold = 2

[[chains]]
name = "alpha"
domain = {ALPHA}
kind = "evm"
rpc = ["http://127.0.0.1:8545"]
chain_id = 1
finality = "finalized"
outbox = "0x{"11" * 20}"
inbox = "0x{"12" * 20}"
token_bridge = "{h(ALPHA_BRIDGE)}"
token = "{h(HOME_TOKEN)}"

[[chains]]
name = "beta"
domain = {BETA}
kind = "evm"
rpc = ["http://127.0.0.1:8546"]
chain_id = 2
finality = "finalized"
outbox = "0x{"21" * 20}"
inbox = "0x{"22" * 20}"
token_bridge = "{h(BETA_BRIDGE)}"

[[chains]]
name = "gamma"
domain = {GAMMA}
kind = "evm"
rpc = ["http://127.0.0.1:8547"]
chain_id = 3
finality = "finalized"
outbox = "0x{"41" * 20}"
inbox = "0x{"42" * 20}"

[[chains]]
{assethub}

[relayer]
{relayer}
"""
    if client is not None:
        text += f"\n[client]\n{client}\n"
    return text


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    return load_config(path)


def test_a_substrate_chain_loads_with_its_settings(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    chain = config.chain("assethub")
    assert config.chain(ASSETHUB) is chain
    assert chain.kind == "substrate"
    assert chain.contracts == {}
    assert chain.is_origin and chain.is_destination
    assert chain.outbox_id == GENESIS
    assert chain.settings() == dataclasses.replace(SETTINGS, collections={**COLLECTIONS, GAMMA: 13})
    assert chain.settings().bridge_account == MULTISIG
    assert config.chain("alpha").substrate is None
    with pytest.raises(ConfigError, match="'alpha' is not a Substrate chain"):
        config.chain("alpha").settings()


def test_token_bridges_are_the_evm_bridges_left_padded(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    assert token_bridges(config) == {
        ALPHA: bytes(12) + ALPHA_BRIDGE,
        BETA: bytes(12) + BETA_BRIDGE,
    }


def test_escrow_routes_list_every_bridge_with_the_home_token_only_at_home(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    assert escrow_routes(config, config.chain("assethub")) == [
        EscrowRoute(
            destination=ALPHA,
            bridge=bytes(12) + ALPHA_BRIDGE,
            home_token=HOME_TOKEN,
            asset_id=ASSET_ID,
            escrow=MULTISIG,
        ),
        EscrowRoute(
            destination=BETA,
            bridge=bytes(12) + BETA_BRIDGE,
            home_token=None,
            asset_id=None,
            escrow=MULTISIG,
        ),
    ]


def test_without_a_wrapped_asset_no_route_can_be_backed(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml(substrate={"asset_id": None, "asset_home": None}))
    settings_ = config.chain("assethub").settings()
    assert (settings_.asset_id, settings_.asset_home_domain, settings_.asset_home_token) == (
        None,
        None,
        None,
    )
    routes = escrow_routes(config, config.chain("assethub"))
    assert [(r.destination, r.home_token, r.asset_id) for r in routes] == [
        (ALPHA, None, None),
        (BETA, None, None),
    ]


def test_escrow_routes_of_an_evm_chain_is_a_config_error(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    with pytest.raises(ConfigError, match="not a Substrate chain"):
        escrow_routes(config, config.chain("alpha"))


def test_delivery_calls_from_a_loaded_config(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    chain = config.chain("assethub")
    calls = delivery_calls(message(nonce=3), chain.settings(), token_bridges(config))
    assert [(c.module, c.function) for c in calls] == [("Uniques", "mint"), ("Assets", "mint")]
    assert calls[1].params == {"id": ASSET_ID, "beneficiary": h(BENEFICIARY), "amount": 1000}


WHERE = re.escape("chains[3]")
SIGS = [h(s) for s in SIGNATORIES]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"genesis_hash": None}, "missing field 'genesis_hash'"),
        ({"genesis_hash": '"0x1234"'}, WHERE + r"\.genesis_hash' must be 32 bytes"),
        ({"genesis_hash": '"9e9e"'}, WHERE + r"\.genesis_hash' must start with 0x"),
        ({"multisig": None}, "missing field 'multisig'"),
        ({"multisig": f'"{h(b"M" * 20)}"'}, WHERE + r"\.multisig' must be 32 bytes"),
        ({"multisig_threshold": None}, "missing field 'multisig_threshold'"),
        ({"multisig_threshold": "0"}, WHERE + r"\.multisig_threshold must be in 2\.\.3"),
        ({"multisig_threshold": "1"}, WHERE + r"\.multisig_threshold must be in 2\.\.3"),
        ({"multisig_threshold": "4"}, WHERE + r"\.multisig_threshold must be in 2\.\.3"),
        ({"multisig_threshold": "3"}, WHERE + r"\.multisig is not the 3-of-3 multisig"),
        ({"multisig": f'"{h(bytes(32))}"'}, WHERE + r"\.multisig is not the 2-of-3 multisig"),
        ({"collections": '{ "1" = 11, "2" = 12 }'}, r"no Uniques collection for origin gamma"),
        ({"collections": '{ "1" = 11, "2" = 12, "4" = 11 }'}, r"share a collection"),
        ({"multisig_threshold": '"2"'}, r"multisig_threshold' must be an integer"),
        ({"signatories": None}, "missing field 'signatories'"),
        ({"signatories": f'"{SIGS[0]}"'}, WHERE + r"\.signatories' must be an array"),
        (
            {"signatories": f'["{SIGS[0]}", "{SIGS[2]}", "{SIGS[1]}"]'},
            WHERE + r"\.signatories must be distinct and ascending",
        ),
        (
            {"signatories": f'["{SIGS[2]}", "{SIGS[1]}", "{SIGS[0]}"]'},
            "distinct and ascending",
        ),
        (
            {"signatories": f'["{SIGS[0]}", "{SIGS[0]}", "{SIGS[1]}"]'},
            "distinct and ascending",
        ),
        (
            {"signatories": f'["{SIGS[0]}", "0x{"04" * 20}", "{SIGS[2]}"]'},
            WHERE + r"\.signatories\[1\]' must be 32 bytes",
        ),
        ({"signatories": "[]"}, r"signatories must not be empty"),
        ({"collections": "5"}, WHERE + r"\.collections' must be an object"),
        ({"collections": '{ "x" = 1 }'}, WHERE + r"\.collections: 'x' is not a domain"),
        ({"collections": '{ "-1" = 1 }'}, "'-1' is not a domain"),
        ({"collections": '{ "4294967296" = 1 }'}, "'4294967296' is not a domain"),
        ({"collections": '{ "1" = -1 }'}, WHERE + r"\.collections\.1' out of range"),
        ({"collections": '{ "1" = "one" }'}, r"collections\.1' must be an integer"),
        ({"asset_home": None}, "asset_id and asset_home go together"),
        ({"asset_id": None}, "asset_id and asset_home go together"),
        ({"asset_id": "4294967296"}, WHERE + r"\.asset_id' out of range"),
        ({"asset_home": "1"}, WHERE + r"\.asset_home' must be an object"),
        (
            {"asset_home": f'{{ token = "{h(HOME_TOKEN)}" }}'},
            "missing field 'domain'",
        ),
        ({"asset_home": "{ domain = 1 }"}, "missing field 'token'"),
        (
            {"asset_home": f'{{ domain = 1, token = "{h(bytes(12) + HOME_TOKEN)}" }}'},
            WHERE + r"\.asset_home\.token' must be 20 bytes",
        ),
        (
            {"asset_home": f'{{ domain = 4294967296, token = "{h(HOME_TOKEN)}" }}'},
            WHERE + r"\.asset_home\.domain' out of range",
        ),
        ({"outbox": f'"0x{"11" * 20}"'}, WHERE + r": unknown key 'outbox' for a substrate chain"),
        ({"token_bridge": f'"{h(ALPHA_BRIDGE)}"'}, r"unknown key 'token_bridge' for a substrate"),
        ({"finality": '"latest"'}, WHERE + r"\.finality: finality 'latest'"),
    ],
)
def test_invalid_substrate_settings_are_one_line_naming_the_field(
    tmp_path: Path, overrides: dict[str, str | None], reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as refused:
        load(tmp_path, config_toml(substrate=overrides))
    assert "\n" not in str(refused.value)


def test_a_client_substrate_uri_only_on_a_devnet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = 'key_env = "PSRL_CLIENT_KEY"\nsubstrate_uri = "//Alice"'
    config = load(tmp_path, config_toml(client=client))
    assert config.client_substrate_uri == "//Alice"
    assert config.client_substrate_key is None
    for text, reason in (
        (
            config_toml(devnet=False, client=client),
            r"client\.substrate_uri \(a development key\) is refused outside",
        ),
        (  # a string is not a devnet: refused as such, not read as false
            config_toml(devnet=False, client=client).replace("devnet = false", 'devnet = "true"'),
            r"field 'devnet' must be true or false",
        ),
    ):
        with pytest.raises(ConfigError, match=reason) as refused:
            load(tmp_path, text)
        assert "\n" not in str(refused.value)
    seed = keccak256(b"client seed")
    monkeypatch.setenv("PSRL_CLIENT_SEED", h(seed))
    production = config_toml(
        devnet=False, client='key_env = "PSRL_CLIENT_KEY"\nsubstrate_key_env = "PSRL_CLIENT_SEED"'
    )
    config = load(tmp_path, production)
    assert config.client_substrate_uri is None
    assert config.client_substrate_key is not None
    assert config.client_substrate_key.load() == seed


# --- proposals ---------------------------------------------------------------------------------

CHECKPOINT = Checkpoint(origin=ALPHA, outbox=bytes(12) + b"\x11" * 20, root=b"\x5a" * 32, index=12)
BRANCH = tuple(bytes([i]) * 32 for i in range(TREE_DEPTH))


def proposal(nonces: tuple[int, ...] = (5, 3, 9), created: float = 1_700_000_000.25) -> Proposal:
    return Proposal(
        destination=ASSETHUB,
        checkpoint=CHECKPOINT,
        messages=tuple(message(nonce=n, body=b"m%d" % n).encode() for n in nonces),
        branches=(BRANCH,) * len(nonces),
        created=created,
    )


def test_a_proposal_is_named_by_origin_nonce_range_and_checkpoint_index() -> None:
    assert proposal().name == "0000000001-0000000003-0000000009-0000000012.json"
    assert proposal((0,)).name == "0000000001-0000000000-0000000000-0000000012.json"
    assert proposal((U32_MAX,)).name == f"0000000001-{U32_MAX}-{U32_MAX}-0000000012.json"


def test_a_proposal_file_is_plain_json_with_hex_strings() -> None:
    p = proposal((5,))
    assert json.loads(p.to_json()) == {
        "destination": ASSETHUB,
        "checkpoint": {
            "origin": ALPHA,
            "outbox": h(CHECKPOINT.outbox),
            "root": h(CHECKPOINT.root),
            "index": 12,
        },
        "messages": [h(p.messages[0])],
        "branches": [[h(x) for x in BRANCH]],
        "created": 1_700_000_000.25,
    }
    assert Proposal.from_json(p.to_json()) == p


def test_created_defaults_to_zero() -> None:
    obj = json.loads(proposal().to_json())
    del obj["created"]
    assert Proposal.from_json(json.dumps(obj)) == proposal(created=0.0)


hash32 = st.binary(min_size=32, max_size=32)
u32 = st.integers(0, U32_MAX)
checkpoints = st.builds(
    Checkpoint,
    origin=u32,
    outbox=hash32,
    root=hash32.filter(lambda r: r not in (bytes(32), EMPTY_ROOT)),
    index=u32,
)
encoded_messages = st.builds(
    Message,
    version=st.just(1),
    nonce=u32,
    origin=u32,
    sender=hash32,
    destination=u32,
    recipient=hash32,
    body=st.binary(max_size=200),
).map(Message.encode)
branches_st = st.lists(hash32, min_size=TREE_DEPTH, max_size=TREE_DEPTH).map(tuple)


@st.composite
def proposals(draw: st.DrawFn) -> Proposal:
    messages = draw(st.lists(encoded_messages, min_size=1, max_size=4))
    return Proposal(
        destination=draw(u32),
        checkpoint=draw(checkpoints),
        messages=tuple(messages),
        branches=tuple(draw(branches_st) for _ in messages),
        created=draw(st.floats(min_value=0, max_value=2e9, allow_nan=False)),
    )


@PROPERTY
@given(p=proposals())
def test_proposal_json_round_trips(p: Proposal) -> None:
    text = p.to_json()
    back = Proposal.from_json(text)
    assert back == p
    assert back.to_json() == text
    assert back.name == p.name
    nonces = [Message.decode(m).nonce for m in p.messages]
    assert p.name == (
        f"{p.checkpoint.origin:010d}-{min(nonces):010d}-{max(nonces):010d}-"
        f"{p.checkpoint.index:010d}.json"
    )


def _edited(edit: Any) -> str:
    obj = json.loads(proposal().to_json())
    edit(obj)
    return json.dumps(obj)


def _branch_len(n: int) -> Any:
    def edit(obj: dict[str, Any]) -> None:
        obj["branches"][1] = obj["branches"][1][:n] if n < TREE_DEPTH else obj["branches"][1] * 2

    return edit


MALFORMED: list[tuple[str, str, type[Exception]]] = [
    ("not json", "{", ValueError),
    ("empty", "", ValueError),
    ("a list", "[]", TypeError),
    ("null", "null", TypeError),
    ("a string", '"proposal"', TypeError),
    ("no checkpoint", _edited(lambda o: o.pop("checkpoint")), KeyError),
    ("no messages", _edited(lambda o: o.pop("messages")), KeyError),
    ("no branches", _edited(lambda o: o.pop("branches")), KeyError),
    ("no destination", _edited(lambda o: o.pop("destination")), KeyError),
    ("no root", _edited(lambda o: o["checkpoint"].pop("root")), KeyError),
    ("no index", _edited(lambda o: o["checkpoint"].pop("index")), KeyError),
    ("short branch", _edited(_branch_len(31)), ValueError),
    ("long branch", _edited(_branch_len(64)), ValueError),
    ("empty branch", _edited(_branch_len(0)), ValueError),
    ("a message too many", _edited(lambda o: o["messages"].append(o["messages"][0])), ValueError),
    ("a branch too many", _edited(lambda o: o["branches"].append(o["branches"][0])), ValueError),
    ("no messages at all", _edited(lambda o: o.update(messages=[], branches=[])), ValueError),
    ("message without 0x", _edited(lambda o: o["messages"].__setitem__(0, "01ab")), ValueError),
    ("message a number", _edited(lambda o: o["messages"].__setitem__(0, 1234)), ValueError),
    ("message odd hex", _edited(lambda o: o["messages"].__setitem__(0, "0xabc")), ValueError),
    (
        "branch not hex",
        _edited(lambda o: o["branches"][0].__setitem__(3, "0x" + "zz" * 32)),
        ValueError,
    ),
    ("outbox without 0x", _edited(lambda o: o["checkpoint"].update(outbox="11" * 32)), ValueError),
    (
        "root uppercase 0X",
        _edited(lambda o: o["checkpoint"].update(root="0X" + "5a" * 32)),
        ValueError,
    ),
    ("destination a word", _edited(lambda o: o.update(destination="three")), ValueError),
    ("destination null", _edited(lambda o: o.update(destination=None)), TypeError),
    ("index a list", _edited(lambda o: o["checkpoint"].update(index=[12])), TypeError),
    ("created a word", _edited(lambda o: o.update(created="soon")), ValueError),
    ("messages a string", _edited(lambda o: o.update(messages="0xabcd")), ValueError),
]


@pytest.mark.parametrize(
    ("text", "error"), [pytest.param(t, e, id=name) for name, t, e in MALFORMED]
)
def test_malformed_proposals_raise_value_key_or_type_errors(
    text: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        Proposal.from_json(text)


# Proposal.from_json turns the light client's rejection into a ValueError carrying its reason:
# each case must be refused for its own reason, not for a KeyError/TypeError of a broken fixture.
INVALID_CHECKPOINTS = [
    pytest.param({"root": h(bytes(32))}, "root is the zero hash", id="zero root"),
    pytest.param({"root": h(EMPTY_ROOT)}, "root is the empty-tree root", id="empty root"),
    pytest.param({"outbox": "0x1234"}, "outbox must be 32 bytes, got 2 bytes", id="short outbox"),
    pytest.param({"origin": U32_MAX + 1}, "origin must be a u32", id="origin beyond u32"),
]


@pytest.mark.parametrize(("change", "reason"), INVALID_CHECKPOINTS)
def test_an_invalid_checkpoint_is_a_documented_parse_error(
    change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        Proposal.from_json(_edited(lambda o: o["checkpoint"].update(change)))


def test_pending_skips_a_proposal_with_an_invalid_checkpoint(tmp_path: Path) -> None:
    store = DirectoryProposalStore(tmp_path)
    good = store.publish(proposal())
    bad = store.path(good).parent / "0-bad.json"
    bad.write_text(_edited(lambda o: o["checkpoint"].update(root=h(bytes(32)))))
    assert store.pending(ASSETHUB) == [(good, proposal())]


# --- the proposal store ------------------------------------------------------------------------


def test_publish_writes_the_proposal_under_its_destination(tmp_path: Path) -> None:
    store = DirectoryProposalStore(tmp_path / "checkpoints")
    p = proposal()
    key = store.publish(p)
    path = store.path(key)
    assert path == tmp_path / "checkpoints" / "proposals" / "3" / p.name
    assert path.read_text() == p.to_json()
    assert sorted(x.name for x in path.parent.iterdir()) == [p.name]  # no temporary left over
    assert store.pending(ASSETHUB) == [(key, p)]
    assert store.pending(ALPHA) == []


def test_pending_of_an_empty_store_is_empty(tmp_path: Path) -> None:
    assert DirectoryProposalStore(tmp_path / "nowhere").pending(ASSETHUB) == []


def test_pending_lists_proposals_by_name(tmp_path: Path) -> None:
    store = DirectoryProposalStore(tmp_path)
    later = store.publish(proposal((20, 21)))
    earlier = store.publish(proposal((3,)))
    assert [path for path, _ in store.pending(ASSETHUB)] == [earlier, later]
    assert [p.messages for _, p in store.pending(ASSETHUB)] == [
        proposal((3,)).messages,
        proposal((20, 21)).messages,
    ]


def test_publishing_the_same_batch_again_replaces_the_file(tmp_path: Path) -> None:
    store = DirectoryProposalStore(tmp_path)
    first = store.publish(proposal(created=1.0))
    second = store.publish(proposal(created=2.0))
    assert first == second
    assert store.pending(ASSETHUB) == [(second, proposal(created=2.0))]


def test_unreadable_corrupt_and_foreign_files_are_skipped(tmp_path: Path) -> None:
    store = DirectoryProposalStore(tmp_path)
    good = store.publish(proposal())
    folder = store.path(good).parent
    (folder / "0-corrupt.json").write_text('{"destination": 3, "check')
    (folder / "0-foreign.json").write_text('{"hello": "world"}')
    (folder / "0-binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (folder / "0-short-branch.json").write_text(_edited(_branch_len(31)))
    (folder / "0-directory.json").mkdir()
    (folder / "notes.txt").write_text(proposal((1,)).to_json())  # not a .json file
    assert store.pending(ASSETHUB) == [(good, proposal())]


def test_remove_forgets_a_proposal_and_tolerates_a_second_remove(tmp_path: Path) -> None:
    store = DirectoryProposalStore(tmp_path)
    keep = store.publish(proposal((1,)))
    gone = store.publish(proposal((2,)))
    assert store.ours(gone, proposal((2,)))
    store.remove(gone)
    assert not store.path(gone).exists() and not store.ours(gone, proposal((2,)))
    assert store.pending(ASSETHUB) == [(keep, proposal((1,)))]
    store.remove(gone)  # already removed: no error
    assert store.pending(ASSETHUB) == [(keep, proposal((1,)))]
