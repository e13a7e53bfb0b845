"""Keys at rest: key files only their owner reads, V3 keystores, and ``passerelle keys``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cli_runner import run_cli
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st
from test_config import KEYS, toml

from light_clients.committee import address_of
from relayer.config import ConfigError, load_config
from relayer.keys import KeyFileError, decrypt_keystore, encrypt_keystore, write_secret

WORK = 2**10  # scrypt N for the keystores the tests write themselves (wallets use 2^18)


def config_with(tmp_path: Path, relayer: str) -> Path:
    path = tmp_path / "passerelle.toml"
    path.write_text(toml(devnet=False, relayer=relayer))
    return path


def keystore(tmp_path: Path, key: bytes = KEYS[1], password: str = "correct horse") -> Path:
    path = tmp_path / "relayer.json"
    write_secret(path, encrypt_keystore(key, password, work=WORK))
    return path


def test_a_keystore_opens_with_its_password_and_only_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = keystore(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    config = load_config(
        config_with(tmp_path, 'key_keystore = "relayer.json"\nkey_password_env = "PSRL_PW"')
    )
    assert config.relayer_key is not None
    monkeypatch.setenv("PSRL_PW", "correct horse")
    assert config.relayer_key.load() == KEYS[1]
    monkeypatch.setenv("PSRL_PW", "wrong horse")
    with pytest.raises(
        ConfigError, match=r"^cannot decrypt keystore .*relayer\.json: wrong password$"
    ):
        config.relayer_key.load()
    monkeypatch.delenv("PSRL_PW")
    with pytest.raises(ConfigError, match=r"PSRL_PW \(a keystore password\) is not set"):
        config.relayer_key.load()


def test_a_password_file_counts_only_if_its_owner_alone_reads_it(tmp_path: Path) -> None:
    keystore(tmp_path)
    write_secret(tmp_path / "pw", "correct horse\n")
    config = load_config(
        config_with(tmp_path, 'key_keystore = "relayer.json"\nkey_password_file = "pw"')
    )
    assert config.relayer_key is not None and config.relayer_key.load() == KEYS[1]
    (tmp_path / "pw").chmod(0o640)
    with pytest.raises(
        ConfigError, match=r"password file .*pw can be read by others \(mode 0640\)"
    ):
        config.relayer_key.load()
    (tmp_path / "pw").chmod(0o600)
    (tmp_path / "relayer.json").chmod(0o604)
    with pytest.raises(ConfigError, match=r"keystore .*relayer.json can be read by others"):
        config.relayer_key.load()


def test_a_fifo_or_a_symlink_in_place_of_a_key_file_is_refused_without_hanging(
    tmp_path: Path,
) -> None:
    os.mkfifo(tmp_path / "relayer.key", 0o600)
    config = load_config(config_with(tmp_path, 'key_file = "relayer.key"'))
    assert config.relayer_key is not None
    with pytest.raises(ConfigError, match="is not a regular file"):
        config.relayer_key.load()
    (tmp_path / "relayer.key").unlink()
    write_secret(tmp_path / "real.key", "0x" + KEYS[1].hex())
    (tmp_path / "relayer.key").symlink_to(tmp_path / "real.key")
    with pytest.raises(ConfigError, match="a symlink"):
        config.relayer_key.load()


@pytest.mark.parametrize(
    ("relayer", "reason"),
    [
        ('key_keystore = "k.json"', "key_keystore needs exactly one of key_password_env"),
        (
            'key_keystore = "k.json"\nkey_password_env = "A"\nkey_password_file = "b"',
            "needs exactly one of",
        ),
        ('key_file = "k"\nkey_keystore = "k.json"', "key_file and key_keystore conflict"),
        ('key_env = "K"\nkey_password_env = "A"', "key_password_env is only for key_keystore"),
    ],
)
def test_keystore_settings_are_refused_in_one_line(
    tmp_path: Path, relayer: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as refused:
        load_config(config_with(tmp_path, relayer))
    assert "\n" not in str(refused.value)


@given(
    st.one_of(
        st.text(max_size=60),
        st.dictionaries(st.sampled_from(["version", "crypto", "address", "id"]), st.integers()).map(
            json.dumps
        ),
        st.just(json.dumps({"version": 3, "crypto": {}})),
        st.just(json.dumps({"version": 3, "crypto": {"kdf": "scrypt", "kdfparams": {}}})),
    )
)
def test_anything_but_a_keystore_is_one_key_file_error(text: str) -> None:
    with pytest.raises(KeyFileError):
        decrypt_keystore(text, "pw", Path("k.json"))


def test_an_empty_password_and_an_existing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty password"):
        encrypt_keystore(KEYS[1], "")
    path = keystore(tmp_path)
    with pytest.raises(KeyFileError, match="exists: not overwriting"):
        write_secret(path, "{}")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``passerelle *args`` with ``env`` added to the environment, in this process: the same
    ``main()`` a started ``passerelle`` runs (tests/cli_runner.py), without a second of
    interpreter start per command. tests/test_installed_package.py runs the real process."""
    with mock.patch.dict(os.environ, env or {}):
        return run_cli(*args)


def test_an_existing_out_is_refused_before_any_password_is_asked(tmp_path: Path) -> None:
    """A wrong ``--out`` costs neither a password prompt nor the keystore's slow derivation:
    the password variable here is unset, so asking for it first would fail differently."""
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere")
    for out in (taken, dangling):
        for command in (["new"], ["import", "--key-env", "PSRL_NO_KEY"]):
            refused = run("keys", *command, "--out", str(out), "--password-env", "PSRL_NO_PW")
            assert refused.returncode == 2, refused.stderr
            assert refused.stderr.strip().endswith("exists: not overwriting a key file")
    assert taken.read_text() == "{}" and not (tmp_path / "nowhere").exists()


def test_keys_new_import_and_list(tmp_path: Path) -> None:
    """The CLI writes wallet-strength keystores (mode 600), never takes a key as an argument,
    and ``keys list`` shows each role's address — or, exit 1, why a key does not load."""
    secrets: dict[str, Any] = {"PSRL_PW": "correct horse", "PSRL_KEY": "0x" + KEYS[2].hex()}
    made = run(
        "keys", "new", "--out", str(tmp_path / "new.json"), "--password-env", "PSRL_PW", env=secrets
    )
    assert made.returncode == 0, made.stderr
    address, path = made.stdout.split()
    created = json.loads((tmp_path / "new.json").read_text())
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o600
    assert created["crypto"]["kdfparams"]["n"] == 2**18  # geth's standard scrypt, as wallets
    assert Account.from_key(Account.decrypt(created, "correct horse")).address == address
    again = run("keys", "new", "--out", path, "--password-env", "PSRL_PW", env=secrets)
    assert again.returncode == 2 and again.stderr.strip().endswith(
        "exists: not overwriting a key file"
    )

    imported = run(
        "keys", "import", "--out", str(tmp_path / "relayer.json"),
        "--key-env", "PSRL_KEY", "--password-env", "PSRL_PW", env=secrets,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split()[0] == "0x" + address_of(KEYS[2]).hex()

    config = config_with(tmp_path, 'key_keystore = "relayer.json"\nkey_password_env = "PSRL_PW"')
    listed = run("keys", "list", "--config", str(config), "--json", env=secrets)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows[0] == {
        "role": "relayer",
        "kind": "secp256k1",
        "source": "keystore",
        "address": "0x" + address_of(KEYS[2]).hex(),
        "error": None,
    }
    locked = run("keys", "list", "--config", str(config), env={"PSRL_PW": "wrong"})
    assert locked.returncode == 1 and "Traceback" not in locked.stderr
    assert "relayer      secp256k1 keystore  not loaded: cannot decrypt keystore" in locked.stdout
    assert "wrong password" in locked.stdout
