"""relayer/config.py refuses what it does not understand (issue #8, points 3, 9, 10, 12).

Each test names the hole it closes: an unknown key silently ignored (a misspelled ``grandpa``
turning GRANDPA verification off), two key sources of which one silently wins, a 10-byte address,
a 1-of-3 committee, an EVM chain with no chain id, a quorum of one endpoint counted twice, and
the relayer's allow/deny lists and the recipients a Substrate origin may address. Every refusal
is one line naming the field, and the CLI turns it into exit 2 before any chain is contacted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_config import KEYS, VALIDATORS, toml
from test_substrate_route import (
    ALPHA,
    ALPHA_BRIDGE,
    ASSETHUB,
    BETA,
    BETA_BRIDGE,
    GAMMA,
    HOME_TOKEN,
    PROPERTY,
    config_toml,
    h,
    load,
)

from devnet import manager
from devnet.anvil import AnvilProcess
from devnet.config_file import render_config
from light_clients.committee import address_of
from light_clients.hashing import keccak256
from light_clients.message import Message
from light_clients.substrate.multisig import multisig_account
from relayer import cli
from relayer.config import (
    Config,
    ConfigError,
    RelayPolicy,
    allowed_recipients,
    load_config,
)
from relayer.ledger import DiscoveredMessage, open_ledger
from relayer.user import policy_json, policy_text


def refused(tmp_path: Path, text: str, reason: str) -> str:
    """Load ``text``; it must be refused with one line matching ``reason``."""
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


def loaded(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    return load_config(path)


def evm_chain(**overrides: str | None) -> str:
    """One EVM ``[[chains]]`` table, its keys overridden (None removes one)."""
    keys: dict[str, str | None] = {
        "name": '"alpha"',
        "domain": "1",
        "kind": '"evm"',
        "rpc": '["http://127.0.0.1:8545", "http://127.0.0.1:8546"]',
        "chain_id": "31337",
        "finality": '"finalized"',
        "outbox": f'"0x{"11" * 20}"',
        "inbox": f'"0x{"22" * 20}"',
    }
    keys.update(overrides)
    return "\n[[chains]]\n" + "\n".join(f"{k} = {v}" for k, v in keys.items() if v is not None)


# --- point 12: unknown keys, in every table ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (toml() + "\nbatch_size = 50\n", r"relayer: unknown key 'batch_size' \(known: key, "),
        (toml().replace("devnet = true", "devnet = true\ndevent = true"), "top level: unknown"),
        (toml().replace('location = "ledger.db"', 'location = "l.db"\npath = "x"'), "ledger:"),
        (
            toml().replace("threshold = 2", "threshold = 2\nthreshhold = 3"),
            r"committee: unknown key 'threshhold', did you mean 'threshold'\?",
        ),
        (
            toml(chains=evm_chain(finalty='"safe"')),
            r"chains\[0\]: unknown key 'finalty' for a evm chain, did you mean 'finality'\?",
        ),
        (toml(chains=evm_chain(token_brigde=f'"0x{"33" * 20}"')), "did you mean 'token_bridge'"),
        (toml(chains=evm_chain(genesis_hash=f'"0x{"44" * 32}"')), "'genesis_hash' for a evm"),
        (toml() + '\n[relayer.policy]\ndeny_sender = ["0x' + "55" * 20 + '"]\n', "deny_senders"),
        (toml() + f'\n[[attesters]]\nkey = "{h(KEYS[1])}"\nkey_envv = "A"\n', r"attesters\[0\]"),
        (toml() + f'\n[client]\nkey = "{h(KEYS[1])}"\nsubstrate_url = "//Bob"\n', "substrate_uri"),
    ],
)
def test_an_unknown_key_anywhere_is_refused_naming_it(
    tmp_path: Path, text: str, reason: str
) -> None:
    message = refused(tmp_path, text, reason)
    assert "(known: " in message


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        # The issue's own example: a misspelled grandpa table used to load with GRANDPA off.
        (
            {"granpda": "{ set_id = 1 }"},
            r"chains\[3\]: unknown key 'granpda' for a substrate chain, did you mean 'grandpa'\?",
        ),
        ({"chain_id": "1000"}, "unknown key 'chain_id' for a substrate chain"),
        # Read from its first endpoint only: a quorum there would be a setting not applied.
        ({"rpc_quorum": "1"}, "unknown key 'rpc_quorum' for a substrate chain"),
        (
            {"asset_home": f'{{ domain = 1, token = "{h(HOME_TOKEN)}", tokn = 1 }}'},
            r"chains\[3\]\.asset_home: unknown key 'tokn', did you mean 'token'\?",
        ),
        (
            {
                "finality": '"finalized"',
                "grandpa": f'{{ set_id = 1, block_hash = "{h(b"1" * 32)}", block_number = 0, '
                f'authorities = ["{h(b"2" * 32)}"], setid = 2 }}',
            },
            r"chains\[3\]\.grandpa: unknown key 'setid'",
        ),
    ],
)
def test_unknown_keys_in_substrate_tables(
    tmp_path: Path, override: dict[str, str | None], reason: str
) -> None:
    refused(tmp_path, config_toml(substrate=override), reason)


def test_devnet_must_be_a_boolean(tmp_path: Path) -> None:
    refused(tmp_path, toml().replace("devnet = true", "devnet = 1"), "'devnet' must be true")


# --- point 12: conflicting pairs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ('key_env = "R"\nkey_file = "r.key"', "relayer: key_env and key_file conflict"),
        (f'key = "{h(KEYS[0])}"\nkey_env = "R"', "relayer: key and key_env conflict"),
        (
            f'key = "{h(KEYS[0])}"\nkey_env = "R"\nkey_file = "f"',
            "key and key_env and key_file conflict",
        ),
    ],
)
def test_two_key_sources_are_refused_not_silently_preferred(
    tmp_path: Path, table: str, reason: str
) -> None:
    refused(tmp_path, toml(relayer=table), reason)


def test_substrate_key_sources_conflict_too(tmp_path: Path) -> None:
    attester = f'\n[[attesters]]\nkey = "{h(KEYS[1])}"\nsubstrate_key_env = "S"\n'
    refused(
        tmp_path,
        toml() + attester + 'substrate_key_file = "s.seed"\n',
        r"attesters\[0\]: substrate_key_env and substrate_key_file conflict",
    )
    client = (
        f'\n[client]\nkey = "{h(KEYS[1])}"\nsubstrate_uri = "//Alice"\nsubstrate_key_env = "S"\n'
    )
    refused(tmp_path, toml() + client, "client: substrate_uri and substrate_key_env conflict")


@pytest.mark.parametrize("value", ["1", '""', "[]"])
def test_key_env_and_file_names_are_non_empty_strings(tmp_path: Path, value: str) -> None:
    refused(tmp_path, toml(relayer=f"key_env = {value}"), "relayer.key_env' must be a non-empty")


# --- point 12: every address has its size ------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["outbox", "inbox", "token_bridge", "ping", "token", "wrapped_token"]
)
@pytest.mark.parametrize("size", [10, 19, 21, 32])
def test_a_contract_address_of_the_wrong_size_is_refused(
    tmp_path: Path, key: str, size: int
) -> None:
    text = toml(chains=evm_chain(**{key: f'"0x{"ab" * size}"'}))
    refused(tmp_path, text, rf"'chains\[0\]\.{key}' must be 20 bytes, got {size}")


def test_a_validator_of_the_wrong_size_is_named_by_position(tmp_path: Path) -> None:
    refused(
        tmp_path,
        toml(validators=[VALIDATORS[0], "0x" + "12" * 19, VALIDATORS[2]]),
        r"'committee\.validators\[1\]' must be 20 bytes",
    )


# --- point 9: the committee threshold ----------------------------------------------------------


def committee_toml(members: int, threshold: int, override: str = "") -> str:
    validators = sorted(h(address_of(keccak256(f"member {i}".encode()))) for i in range(members))
    return toml(validators=validators, threshold=threshold).replace(
        f"threshold = {threshold}", f"threshold = {threshold}\n{override}"
    )


def test_one_of_three_is_refused_unless_overridden_by_name(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        committee_toml(3, 1),
        r"committee\.threshold 1 of 3 is below two thirds \(at least 2\)",
    )
    assert "allow_weak_threshold = true" in message
    config = loaded(tmp_path, committee_toml(3, 1, "allow_weak_threshold = true"))
    assert config.committee.threshold == 1
    refused(tmp_path, committee_toml(3, 1, 'allow_weak_threshold = "yes"'), "true or false")


@given(members=st.integers(1, 40), data=st.data())
@PROPERTY
def test_a_threshold_loads_exactly_when_it_is_two_thirds(
    tmp_path_factory: pytest.TempPathFactory, members: int, data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(1, members), label="threshold")
    path = tmp_path_factory.mktemp("threshold") / "passerelle.toml"
    path.write_text(committee_toml(members, threshold))
    if 3 * threshold >= 2 * members:
        assert load_config(path).committee.threshold == threshold
    else:
        with pytest.raises(ConfigError, match="below two thirds"):
            load_config(path)


def test_the_substrate_multisig_threshold_has_the_same_bar(tmp_path: Path) -> None:
    signatories = tuple(bytes([i]) * 32 for i in range(1, 6))
    overrides: dict[str, str | None] = {
        "signatories": "[" + ", ".join(f'"{h(s)}"' for s in signatories) + "]",
        "multisig_threshold": "2",
        "multisig": f'"{h(multisig_account(signatories, 2))}"',
    }
    refused(
        tmp_path,
        config_toml(substrate=overrides),
        r"chains\[3\]\.multisig_threshold 2 of 5 is below two thirds \(at least 4\)",
    )
    weak = config_toml(substrate=overrides).replace(
        "threshold = 2\n", "threshold = 2\nallow_weak_threshold = true\n", 1
    )
    assert load(tmp_path, weak).chain("assethub").settings().multisig_threshold == 2


# --- point 3: chain_id and rpc_quorum ----------------------------------------------------------


def test_an_evm_chain_without_chain_id_is_refused(tmp_path: Path) -> None:
    refused(
        tmp_path, toml(chains=evm_chain(chain_id=None)), r"chains\[0\]: missing field 'chain_id'"
    )
    refused(tmp_path, toml(chains=evm_chain(chain_id="0")), r"chain_id' out of range")
    refused(tmp_path, toml(chains=evm_chain(chain_id='"1"')), r"chain_id' must be an integer")


def test_rpc_quorum_defaults_to_one_and_is_bounded_by_the_endpoints(tmp_path: Path) -> None:
    alpha = loaded(tmp_path, toml(chains=evm_chain())).chain("alpha")
    assert (alpha.rpc_quorum, alpha.rpc_policy) == (1, "rpc quorum 1 of 2")
    alpha = loaded(tmp_path, toml(chains=evm_chain(rpc_quorum="2"))).chain("alpha")
    assert alpha.rpc_quorum == 2
    assert policy_text(alpha) == "finalized, rpc quorum 2 of 2"
    assert policy_json(alpha)["rpc_quorum"] == 2
    for bad in ("0", "3", "-1"):
        refused(
            tmp_path,
            toml(chains=evm_chain(rpc_quorum=bad)),
            rf"chains\[0\]\.rpc_quorum {bad} is not in 1\.\.2",
        )
    refused(tmp_path, toml(chains=evm_chain(rpc_quorum="true")), "must be an integer")


def test_one_endpoint_listed_twice_cannot_make_a_quorum(tmp_path: Path) -> None:
    key = "Zk3xQ9s8LmN2pR7tV4wY"
    rpc = f'["https://eth.example/v2/{key}", "https://eth.example/v2/{key}/"]'
    message = refused(
        tmp_path,
        toml(chains=evm_chain(rpc=rpc, rpc_quorum="2")),
        re.escape("chains[0].rpc[1] repeats https://eth.example/v2/***/"),
    )
    assert key not in message


@pytest.mark.parametrize(
    ("rpc", "reason"),
    [
        ('["http://Node.example:8545", "http://node.example:8545/"]', r"rpc\[1\] repeats"),
        ('["http://node.example:8545", "ws://node.example:8545"]', r"rpc\[1\] repeats"),
        # The scheme's default port written out is still the same node (one vote, not two).
        ('["https://node.example/rpc", "https://node.example:443/rpc"]', r"rpc\[1\] repeats"),
        ('["http://node.example:80", "ws://node.example"]', r"rpc\[1\] repeats"),
        ('["http://node.example:8545", "http://:8546"]', r"rpc\[1\] has no host"),
        ('["http://node.example:8545", "http://node.example:99999"]', r"rpc\[1\] is not a valid"),
    ],
)
def test_the_same_node_written_twice_is_refused(tmp_path: Path, rpc: str, reason: str) -> None:
    refused(tmp_path, toml(chains=evm_chain(rpc=rpc)), reason)


def test_a_domain_key_is_written_one_way_only(tmp_path: Path) -> None:
    # "1" and "01" are two TOML keys; read as domains, one would silently replace the other.
    refused(
        tmp_path,
        config_toml(substrate={"collections": '{ "1" = 11, "01" = 14, "2" = 12, "4" = 13 }'}),
        r"chains\[3\]\.collections: '01' is not a domain",
    )


# --- the relayer's allow/deny lists ------------------------------------------------------------


SENDER = b"\x5e" * 20
RECIPIENT = b"\x7e" * 20
ACCOUNT = b"\x01" * 32  # a Substrate account: 32 bytes, kept as is
PADDED_SENDER = SENDER.rjust(32, b"\0")
EXPLICIT = b"\x42" * 20


def message(origin: int = ALPHA, sender: bytes = SENDER, recipient: bytes = RECIPIENT) -> Message:
    return Message(
        version=1,
        nonce=0,
        origin=origin,
        sender=sender.rjust(32, b"\0"),
        destination=BETA,
        recipient=recipient.rjust(32, b"\0"),
        body=b"",
    )


def policy_config(tmp_path: Path, policy: str) -> Config:
    return load(tmp_path, config_toml() + "\n[relayer.policy]\n" + policy + "\n")


def test_no_policy_admits_everything(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    assert config.relay_policy == RelayPolicy()
    assert config.relay_policy.refusal(message()) is None


def test_policy_lists_by_origin_sender_and_recipient(tmp_path: Path) -> None:
    config = policy_config(
        tmp_path,
        f'allow_origins = ["alpha", {ASSETHUB}]\n'
        f'deny_senders = ["{h(SENDER)}"]\n'
        f'allow_recipients = ["{h(RECIPIENT)}", "{h(ACCOUNT)}"]',
    )
    policy = config.relay_policy
    assert policy.allow_origins == frozenset({ALPHA, ASSETHUB})
    other = b"\x33" * 20
    assert policy.refusal(message(sender=other)) is None
    assert policy.refusal(message(sender=other, recipient=ACCOUNT)) is None
    assert policy.refusal(message()) == (
        f"sender {h(SENDER)} is on the relayer's deny list"  # 20 bytes shown as written
    )
    assert policy.refusal(message(origin=BETA, sender=other)) == (
        "origin beta (2) is not on the relayer's allow list"
    )
    assert policy.refusal(message(sender=other, recipient=other)) == (
        f"recipient {h(other)} is not on the relayer's allow list"
    )


def test_deny_wins_over_allow(tmp_path: Path) -> None:
    config = policy_config(
        tmp_path, f'allow_senders = ["{h(SENDER)}"]\ndeny_senders = ["{h(PADDED_SENDER)}"]'
    )
    assert "deny list" in (config.relay_policy.refusal(message()) or "")


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        ('allow_origins = ["delta"]', r"allow_origins\[0\]: 'delta' is not a configured origin"),
        ("deny_origins = [99]", r"deny_origins\[0\]: 99 is not a configured origin"),
        ("deny_origins = [true]", "not a configured origin"),
        ("allow_senders = []", r"relayer\.policy\.allow_senders is empty"),
        (f'deny_senders = ["0x{"12" * 10}"]', r"deny_senders\[0\]' must be a 20-byte address"),
        ('deny_recipients = "0x12"', "must be an array"),
    ],
)
def test_malformed_policies_are_refused(tmp_path: Path, policy: str, reason: str) -> None:
    refused(tmp_path, config_toml() + "\n[relayer.policy]\n" + policy + "\n", reason)


ACCOUNTS = st.sampled_from([bytes([i]) * 32 for i in range(4)])
ACCOUNT_SETS = st.frozensets(ACCOUNTS)
DOMAINS = st.sampled_from([1, 2, 3])


@given(
    allow_origins=st.none() | st.frozensets(DOMAINS, min_size=1),
    deny_origins=st.frozensets(DOMAINS),
    allow_senders=st.none() | st.frozensets(ACCOUNTS, min_size=1),
    deny_senders=ACCOUNT_SETS,
    allow_recipients=st.none() | st.frozensets(ACCOUNTS, min_size=1),
    deny_recipients=ACCOUNT_SETS,
    origin=DOMAINS,
    sender=ACCOUNTS,
    recipient=ACCOUNTS,
)
@PROPERTY
def test_refusal_is_exactly_the_list_semantics(
    allow_origins: frozenset[int] | None,
    deny_origins: frozenset[int],
    allow_senders: frozenset[bytes] | None,
    deny_senders: frozenset[bytes],
    allow_recipients: frozenset[bytes] | None,
    deny_recipients: frozenset[bytes],
    origin: int,
    sender: bytes,
    recipient: bytes,
) -> None:
    policy = RelayPolicy(
        allow_origins, deny_origins, allow_senders, deny_senders, allow_recipients, deny_recipients
    )
    fields = [
        (origin, allow_origins, deny_origins),
        (sender, allow_senders, deny_senders),
        (recipient, allow_recipients, deny_recipients),
    ]
    denied = any(value in deny for value, _, deny in fields)
    not_allowed = any(allow is not None and value not in allow for value, allow, _ in fields)
    reason = policy.refusal(message(origin, sender, recipient))
    assert (reason is None) == (not denied and not not_allowed)
    if denied:
        assert reason is not None and reason.endswith("deny list")


# --- point 10: the recipients a Substrate origin may address ----------------------------------


def test_by_default_a_substrate_origin_may_address_the_message_handlers(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    allowed = allowed_recipients(config, config.chain("assethub"))
    # gamma has no token_bridge or ping configured: a bridge deployed there is not addressable.
    assert allowed == {
        ALPHA: frozenset({ALPHA_BRIDGE.rjust(32, b"\0")}),
        BETA: frozenset({BETA_BRIDGE.rjust(32, b"\0")}),
        GAMMA: frozenset(),
    }
    # An ERC-20 (token) is configured on alpha but is no recipient.
    assert HOME_TOKEN.rjust(32, b"\0") not in allowed[ALPHA]


def test_an_explicit_recipients_table_replaces_the_default(tmp_path: Path) -> None:
    table = f'{{ "{GAMMA}" = ["{h(EXPLICIT)}", "{h(ACCOUNT)}"] }}'
    config = load(tmp_path, config_toml(substrate={"recipients": table}))
    assert allowed_recipients(config, config.chain("assethub")) == {
        ALPHA: frozenset(),
        BETA: frozenset(),
        GAMMA: frozenset({EXPLICIT.rjust(32, b"\0"), ACCOUNT}),
    }


@pytest.mark.parametrize(
    ("recipients", "reason"),
    [
        (
            '{ "9" = [] }',
            r"chains\[3\]\.recipients: domain 9 is not another configured destination",
        ),
        (f'{{ "{ASSETHUB}" = [] }}', "domain 3 is not another configured destination"),
        ('{ "x" = [] }', r"recipients: 'x' is not a domain"),
        (f'{{ "1" = ["0x{"12" * 21}"] }}', r"recipients\.1\[0\]' must be a 20-byte address"),
        ('{ "1" = "0x12" }', "must be an array"),
    ],
)
def test_malformed_recipients_are_refused(tmp_path: Path, recipients: str, reason: str) -> None:
    refused(tmp_path, config_toml(substrate={"recipients": recipients}), reason)


# --- the config `passerelle devnet up` writes loads under these rules -------------------------


def test_the_devnet_config_loads_strictly_with_chain_ids(tmp_path: Path) -> None:
    seeds = [keccak256(f"seed {i}".encode()) for i in range(3)]
    signatories = sorted(keccak256(b"account" + s) for s in seeds)
    contracts = {
        name: bytes([n]) * 20
        for n, name in enumerate(["outbox", "inbox", "ping", "token_bridge", "token"], 1)
    }
    setup: dict[str, object] = {
        "genesis_hash": h(b"\x9e" * 32),
        "multisig": h(multisig_account(tuple(signatories), 2)),
        "multisig_threshold": 2,
        "signatories": [h(s) for s in signatories],
        "collections": {"1": 1, "2": 2},
        "asset_id": 1,
    }
    text = render_config(
        [
            (spec, f"http://127.0.0.1:{8545 + i}", contracts)
            for i, spec in enumerate(manager.CHAINS)
        ],
        [address_of(k) for k in sorted(KEYS, key=address_of)],
        sorted(KEYS, key=address_of),
        seeds,
        ("ws://127.0.0.1:9944", setup),
    )
    config = loaded(tmp_path, text)
    evm = [c for c in config.chains if c.kind == "evm"]
    assert [c.chain_id for c in evm] == [spec.chain_id for spec in manager.CHAINS]
    assert config.relay_policy == RelayPolicy()


# --- the CLI: exit 2, one line, no traceback ---------------------------------------------------


def status(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``passerelle status --no-chain`` on ``text``: exit code, stdout, stderr."""
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--no-chain", "--config", str(path)])
    out, err = capsys.readouterr()
    assert isinstance(exited.value.code, int)
    return exited.value.code, out, err


def test_the_cli_exits_2_with_one_line_for_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = status(tmp_path, toml(chains=evm_chain(granpda="1")), capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    path = tmp_path / "passerelle.toml"
    assert err.startswith(f"passerelle: config {path}: chains[0]: unknown key 'granpda'")


def test_status_shows_each_chains_finality_and_rpc_quorum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(tmp_path, toml(chains=evm_chain(rpc_quorum="2")), capsys)
    assert code == 0
    assert "alpha (1): finalized, rpc quorum 2 of 2" in out.splitlines()
    assert "127.0.0.1" not in out  # endpoints are never printed


def test_status_reports_an_unreadable_destination_per_chain_and_still_checks_the_others(
    tmp_path: Path, anvil: AnvilProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """One destination whose endpoint serves another chain (now a ConfigError from
    ``open_evm``) must not take ``status`` down: its rows say "unknown" with the reason, the
    other destinations are still asked, and the command exits 0 — no traceback."""
    chains = evm_chain(rpc=f'["{anvil.rpc_url}"]', chain_id=str(anvil.chain_id)) + evm_chain(
        name='"beta"',
        domain="2",
        rpc=f'["{anvil.rpc_url}"]',
        chain_id=str(anvil.chain_id + 1),  # the node serves another chain id
        outbox=f'"0x{"33" * 20}"',
        inbox=f'"0x{"44" * 20}"',
    )
    path = tmp_path / "passerelle.toml"
    path.write_text(toml(chains=chains))
    config = load_config(path)
    sent = {
        destination: Message(
            1, destination, 1, b"\1" * 32, destination, b"\2" * 32, b"ping"
        ).encode()
        for destination in (1, 2)
    }
    ledger = open_ledger(config.ledger)
    try:
        ledger.record_discovered(
            DiscoveredMessage(m, 1, b"\5" * 32, b"\6" * 32, log_index=d) for d, m in sent.items()
        )
    finally:
        ledger.close()
    ids = {d: "0x" + keccak256(m).hex() for d, m in sent.items()}

    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--json", "--config", str(path)])
    out, err = capsys.readouterr()
    assert (exited.value.code, err) == (0, "")
    rows = {row["id"]: row for row in map(json.loads, out.splitlines())}
    assert rows[ids[1]]["delivered_on_chain"] is False  # alpha was still asked
    assert rows[ids[1]].get("on_chain_error") is None
    assert rows[ids[2]]["delivered_on_chain"] is None
    assert f"chain id {anvil.chain_id}" in rows[ids[2]]["on_chain_error"]

    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--config", str(path)])
    out, err = capsys.readouterr()
    assert (exited.value.code, err) == (0, "")
    [beta] = [line for line in out.splitlines() if line.startswith("beta (2): ")]
    assert "on-chain check failed: " in beta and f"chain id {anvil.chain_id}" in beta
    assert "on-chain: not yet" in out  # alpha's row
