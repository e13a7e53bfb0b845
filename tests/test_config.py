"""relayer/config.py: the TOML is validated before any chain is contacted, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from light_clients.committee import address_of
from light_clients.hashing import keccak256
from relayer.config import ConfigError, FinalityPolicy, load_config

KEYS = [keccak256(f"config test key {i}".encode()) for i in range(3)]
VALIDATORS = sorted("0x" + address_of(k).hex() for k in KEYS)


def toml(
    *,
    devnet: bool = True,
    validators: list[str] | None = None,
    threshold: int = 2,
    finality: str = "confirmations:3",
    relayer: str = f'key = "0x{KEYS[0].hex()}"',
    chains: str | None = None,
) -> str:
    members = ", ".join(f'"{v}"' for v in (VALIDATORS if validators is None else validators))
    chain_tables = (
        chains
        if chains is not None
        else f"""
[[chains]]
name = "alpha"
domain = 1
kind = "evm"
rpc = ["http://127.0.0.1:8545", "http://127.0.0.1:8546"]
chain_id = 31337
finality = "{finality}"
outbox = "0x{"11" * 20}"
inbox = "0x{"22" * 20}"
"""
    )
    return f"""
devnet = {str(devnet).lower()}

[ledger]
location = "ledger.db"

[committee]
validators = [{members}]
threshold = {threshold}
checkpoint_store = "checkpoints"
{chain_tables}
[relayer]
{relayer}
"""


def test_a_valid_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, toml()))
    assert config.ledger == str((tmp_path / "ledger.db").resolve())
    assert config.checkpoint_store == tmp_path / "checkpoints"
    assert config.committee.threshold == 2
    alpha = config.chain("alpha")
    assert config.chain(1) is alpha and config.chain("1") is alpha
    assert alpha.rpc == ("http://127.0.0.1:8545", "http://127.0.0.1:8546")
    assert str(alpha.finality) == "confirmations:3"
    assert alpha.contract("outbox") == bytes.fromhex("11" * 20)
    assert config.relayer_key is not None and config.relayer_key.load() == KEYS[0]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not = [toml", "not valid TOML"),
        (toml(threshold=0), "threshold"),  # T3
        (toml(threshold=4), "threshold"),  # T3
        (toml(validators=[]), "committee"),  # T3: empty set
        (toml(validators=[VALIDATORS[0], VALIDATORS[0]]), "duplicate"),  # T4 at config level
        (toml(validators=["0x" + "00" * 20, VALIDATORS[1]]), "zero"),  # T5
        (toml(finality="latest"), "finality"),
        (toml(finality="confirmations:0"), "finality"),
        (toml(devnet=False), "inline private keys are refused"),
        (toml(relayer='key = "0x1234"'), "32 bytes"),
        (
            toml(
                chains='[[chains]]\nname = "a"\ndomain = 1\nkind = "cosmos"\nrpc = ["http://x"]\n'
                'finality = "safe"\n'
            ),
            "kind",
        ),
        (
            toml(
                chains='[[chains]]\nname = "a"\ndomain = 1\nkind = "evm"\nrpc = ["ftp://x"]\n'
                'finality = "safe"\n'
            ),
            "rpc",
        ),
        (
            toml(
                chains='[[chains]]\nname = "a"\ndomain = 4294967296\nkind = "evm"\n'
                'rpc = ["http://x"]\nfinality = "safe"\n'
            ),
            "domain",
        ),
        (
            toml(
                chains='[[chains]]\nname = "a"\ndomain = 1\nkind = "evm"\nrpc = ["http://x"]\n'
                'chain_id = 1\nfinality = "safe"\n[[chains]]\nname = "b"\ndomain = 1\n'
                'kind = "evm"\nrpc = ["http://y"]\nchain_id = 2\nfinality = "safe"\n'
            ),
            "duplicate domain",
        ),
    ],
)
def test_invalid_configs_are_refused_with_one_line(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as refused:
        load_config(_write(tmp_path, text))
    assert "\n" not in str(refused.value)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml")


def test_keys_from_the_environment_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "relayer.key").write_text("0x" + KEYS[1].hex() + "\n")
    config = load_config(_write(tmp_path, toml(devnet=False, relayer='key_file = "relayer.key"')))
    assert config.relayer_key is not None
    # A key file others can read is refused before its key is used, with the fix.
    (tmp_path / "relayer.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"can be read by others \(mode 0644\): chmod 600"):
        config.relayer_key.load()
    (tmp_path / "relayer.key").chmod(0o600)
    assert config.relayer_key.load() == KEYS[1]
    config = load_config(_write(tmp_path, toml(devnet=False, relayer='key_env = "PSRL_TEST_KEY"')))
    assert config.relayer_key is not None
    monkeypatch.delenv("PSRL_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="PSRL_TEST_KEY"):
        config.relayer_key.load()
    monkeypatch.setenv("PSRL_TEST_KEY", "0x" + KEYS[2].hex())
    assert config.relayer_key.load() == KEYS[2]


def test_unknown_chain_and_missing_contract_say_what_exists(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, toml()))
    with pytest.raises(ConfigError, match=r"alpha \(1\)"):
        config.chain("gamma")
    with pytest.raises(ConfigError, match="token_bridge"):
        config.chain("alpha").contract("token_bridge")


@pytest.mark.parametrize(
    ("text", "name", "depth"),
    [
        ("finalized", "finalized", 0),
        ("safe", "safe", 0),
        ("devnet-instant", "devnet-instant", 0),
        ("confirmations:64", "confirmations", 64),
    ],
)
def test_finality_policies_are_explicit(text: str, name: str, depth: int) -> None:
    policy = FinalityPolicy.parse(text, "test")
    assert (policy.name, policy.depth, str(policy)) == (name, depth, text)


def test_attesters_substrate_identities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = keccak256(b"sr25519 seed")
    attesters = (
        f'\n[[attesters]]\nkey = "0x{KEYS[0].hex()}"\nsubstrate_key = "0x{seed.hex()}"\n'
        f'\n[[attesters]]\nkey = "0x{KEYS[1].hex()}"\n'
    )
    config = load_config(_write(tmp_path, toml() + attesters))
    first, second = config.attester_substrate_keys
    assert first is not None and first.load() == seed
    assert second is None
    production = toml(devnet=False, relayer='key_env = "R"') + (
        '\n[[attesters]]\nkey_env = "A"\nsubstrate_key = "0x' + seed.hex() + '"\n'
    )
    with pytest.raises(ConfigError, match="use substrate_key_env or substrate_key_file"):
        load_config(_write(tmp_path, production))
    monkeypatch.setenv("S", "0x" + seed.hex())
    from_env = toml(devnet=False, relayer='key_env = "R"') + (
        '\n[[attesters]]\nkey_env = "A"\nsubstrate_key_env = "S"\n'
    )
    [source] = load_config(_write(tmp_path, from_env)).attester_substrate_keys
    assert source is not None and source.load() == seed


def test_a_relayer_table_without_a_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"relayer: one of key_env, key_file"):
        load_config(_write(tmp_path, toml(relayer="")))
