"""The ``[chains.beacon]`` table (relayer/families/evm/beacon.py): what loads, and one line for
each way an operator's (or anyone's) config can be wrong — a trust root the light client would
otherwise be started from."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.evm.beacon_finality import BeaconSettings
from relayer.config import ConfigError, load_config
from tests.test_config import toml

FORKS = '{ altair = ["0x01000001", 0], bellatrix = ["0x02000001", 0], capella = ["0x03000001", 0] }'


def chain(finality: str = "beacon", beacon: str | None = None, **fields: str) -> str:
    table = {
        "api": '["http://127.0.0.1:9596"]',
        "checkpoint": f'"0x{"ab" * 32}"',
        "preset": '"minimal"',
        "genesis_validators_root": f'"0x{"cd" * 32}"',
        "genesis_time": "1765040000",
        "seconds_per_slot": "2",
        "forks": FORKS,
        "store": '"/var/lib/passerelle/beacon"',
    }
    table.update(fields)
    body = "\n".join(f"{key} = {value}" for key, value in table.items() if value)
    return f"""
[[chains]]
name = "gamma"
domain = 4
kind = "evm"
rpc = ["http://127.0.0.1:8545"]
chain_id = 31340
finality = "{finality}"
outbox = "0x{"11" * 20}"
inbox = "0x{"22" * 20}"
{"" if beacon == "" else "[chains.beacon]"}
{"" if beacon == "" else body}
"""


def load(tmp_path: Path, chains: str) -> object:
    path = tmp_path / "passerelle.toml"
    path.write_text(toml(chains=chains))
    return load_config(path)


def test_a_beacon_chain_loads(tmp_path: Path) -> None:
    config = load(tmp_path, chain())
    gamma = config.chain("gamma")  # type: ignore[attr-defined]
    settings = gamma.family_settings
    assert isinstance(settings, BeaconSettings)
    assert settings.config.preset.sync_committee_size == 32
    assert settings.store == Path("/var/lib/passerelle/beacon")
    assert settings.checkpoint == bytes.fromhex("ab" * 32)
    assert "no RPC trusted" in gamma.rpc_policy


@pytest.mark.parametrize(
    ("chains", "reason"),
    [
        (chain(beacon=""), r'finality "beacon" needs a \[chains\[0\].beacon\] table'),
        (chain(finality="finalized"), 'only used with finality = "beacon"'),
        (chain(store='"relative/dir"'), "store must be an absolute directory path"),
        (chain(api="[]"), "api must be a non-empty list of http"),
        (chain(api='["ftp://x"]'), "api must be a non-empty list of http"),
        (chain(api='["http://a", "http://a"]'), "repeats an endpoint"),
        (chain(preset='"tiny"'), "preset"),
        (chain(forks='{ altair = ["0x01000001", 0] }'), "capella"),
        (chain(forks='{ capella = ["0x030001", 0], altair = ["0x01000001", 0] }'), "expected 4"),
        (chain(checkpoint='"0x1234"'), "checkpoint"),
        (chain(seconds_per_slot="0"), "seconds_per_slot"),
        (chain(genesis_time="-1"), "genesis_time"),
        (chain(surprise='"x"'), "surprise"),
    ],
)
def test_a_wrong_beacon_table_is_one_line(tmp_path: Path, chains: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as refused:
        load(tmp_path, chains)
    assert "\n" not in str(refused.value)
