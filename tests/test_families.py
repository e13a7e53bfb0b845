"""The family registry and the config sections families own (pure: no chain is contacted).

What a family does on real chains is tests/test_family_conformance.py; here, what the registry
and a config can do wrong: an unknown or mistyped ``kind``, a key of one family in another's
section, a family's own key out of range, and a ``send`` that would move tokens before finding
that the config cannot record the dispatch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import pytest
import trio
from test_config import KEYS
from test_substrate_route import config_toml, h, load

from adapters.errors import AdapterError
from adapters.substrate.client import SubstrateClient
from relayer import user
from relayer.config import ConfigError
from relayer.families.substrate.origin import SubstrateOrigin
from relayer.families.substrate.scan import escrow_routes
from relayer.family import FAMILIES, Head, family, family_of


def retyped(text: str, chain: str, kind: str, extra: str = "") -> str:
    """``text`` with chain ``chain``'s ``kind`` line replaced (and ``extra`` lines after it)."""
    start = text.index(f'name = "{chain}"')
    line = text.index("kind = ", start)
    end = text.index("\n", line)
    return text[:line] + f"kind = {kind}" + (f"\n{extra}" if extra else "") + text[end:]


def test_every_registered_family_is_its_kind() -> None:
    for kind in FAMILIES:
        assert family(kind).kind == kind
        assert family(kind).account_size in (20, 32)


def test_an_unknown_kind_is_one_line_naming_the_known_ones(tmp_path: Path) -> None:
    text = retyped(config_toml(), "beta", '"cosmos"')
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text)
    message = str(refused.value)
    assert "\n" not in message
    assert re.search(r"chains\[1\]\.kind must be one of 'evm', 'evm-legacy', 'substrate'", message)
    assert "got 'cosmos'" in message


@pytest.mark.parametrize("kind", ["1", "true", '["evm"]'])
def test_a_kind_that_is_no_string_says_so(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ConfigError, match=r"chains\[1\]\.kind must be a string, got "):
        load(tmp_path, retyped(config_toml(), "beta", kind))


def test_a_family_s_keys_are_refused_in_another_s_section(tmp_path: Path) -> None:
    # max_log_range is an EVM key: on a Substrate chain it would be a setting not applied.
    text = config_toml(substrate={"max_log_range": "100"})
    with pytest.raises(ConfigError, match="unknown key 'max_log_range' for a substrate chain"):
        load(tmp_path, text)


def test_evm_legacy_takes_the_evm_section_and_its_own_log_range(tmp_path: Path) -> None:
    config = load(tmp_path, retyped(config_toml(), "beta", '"evm-legacy"', "max_log_range = 7"))
    beta = config.chain("beta")
    assert family_of(beta).kind == "evm-legacy"
    assert beta.is_origin and beta.is_destination
    assert beta.options == {"max_log_range": 7}
    assert family_of(beta).log_range(beta) == 7
    assert family_of(config.chain("alpha")).log_range(config.chain("alpha")) is None


@pytest.mark.parametrize("value", ["0", "-1", "1000001", '"500"'])
def test_a_log_range_out_of_bounds_is_refused(tmp_path: Path, value: str) -> None:
    text = retyped(config_toml(), "beta", '"evm-legacy"', f"max_log_range = {value}")
    with pytest.raises(ConfigError, match=r"chains\[1\]\.max_log_range"):
        load(tmp_path, text)


def test_a_token_send_is_refused_before_any_transaction_without_an_outbox(
    tmp_path: Path,
) -> None:
    """The dispatch is read from the outbox's events: a chain section without an outbox must
    be refused before the approve and transferRemote move tokens, not after (the user would
    retry and pay twice). The chain's endpoint is a closed port: any contact would be an
    RPC error, not this ConfigError."""
    text = config_toml(client=f'key = "{h(KEYS[1])}"')
    start = text.index('name = "alpha"')
    text = text[:start] + text[start:].replace(f'outbox = "0x{"11" * 20}"\n', "", 1)
    text = text.replace('rpc = ["http://127.0.0.1:8545"]', 'rpc = ["http://127.0.0.1:9"]', 1)
    config = load(tmp_path, text)
    assert not config.chain("alpha").is_origin
    with pytest.raises(ConfigError, match="no 'outbox' address configured"):
        trio.run(lambda: user.send_tokens(config, "alpha", "beta", 5))


def test_a_substrate_origin_never_states_its_outbox_at_a_head_it_scanned_past(
    tmp_path: Path,
) -> None:
    """A node that reports an older final head after the attester scanned further: the tree
    holds blocks that head does not cover, so no outbox state is given for it (it would be
    signed with the wrong block); the attester logs and polls again."""
    config = load(tmp_path, config_toml())
    chain = config.chain("assethub")
    origin = SubstrateOrigin(chain, cast(SubstrateClient, None), escrow_routes(config, chain), None)
    origin._next = chain.start_block + 10  # scanned up to start_block + 9 already
    with pytest.raises(AdapterError, match="is below block"):
        trio.run(origin.outbox_state, Head(chain.start_block + 5, b"\x01" * 32))
