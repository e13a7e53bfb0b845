"""Keystores and keys written by someone who wants to hurt the operator (review rev-ops).

eth-keyfile lower-cases every key of a V3 keystore before it reads it (``N`` is ``n``,
``Crypto`` is ``crypto``; of two spellings the last wins) and derives ``dklen`` bytes: the work
bounds must hold on exactly what it reads. Each case below would, unbounded, take terabytes or
years; the KDFs are intercepted, so a failure here is "the KDF was called", not an OOM.

Also: JSON nested deeper than the parser's stack, and secp256k1 keys that are no keys (0, or
≥ n), whose library errors quote the key: one line naming the file, never the value.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import eth_keyfile.keyfile
import pytest
from Crypto.Cipher import AES
from Crypto.Util import Counter
from test_config import KEYS

from light_clients.hashing import keccak256
from relayer.config import ConfigError, KeySource
from relayer.keys import (
    SECP256K1_ORDER,
    KeyFileError,
    decrypt_keystore,
    decrypt_sr25519_keystore,
    encrypt_keystore,
    write_secret,
)
from relayer.signer import evm_signer

PASSWORD = "correct horse"
PASSERELLE = str(Path(sys.executable).parent / "passerelle")
GOOD = json.loads(encrypt_keystore(KEYS[1], PASSWORD, work=2**4))


@pytest.fixture
def kdf_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every KDF eth-keyfile would run, recorded instead of run."""
    calls: list[tuple[Any, ...]] = []

    def fake(name: str) -> Callable[..., bytes]:
        def run(*args: Any, **kwargs: Any) -> bytes:
            calls.append((name, args, kwargs))
            raise ValueError("MAC mismatch (intercepted)")

        return run

    monkeypatch.setattr(eth_keyfile.keyfile, "_scrypt_hash", fake("scrypt"))
    monkeypatch.setattr(eth_keyfile.keyfile, "_pbkdf2_hash", fake("pbkdf2"))
    return calls


def edited(edit: Callable[[dict[str, Any]], None]) -> str:
    keystore = copy.deepcopy(GOOD)
    edit(keystore)
    return json.dumps(keystore)


def _second_spelling_of_n(k: dict[str, Any]) -> None:
    k["crypto"]["kdfparams"]["N"] = 2**30  # after the checked "n": the one eth-keyfile keeps


def _kdf_spelled_twice(k: dict[str, Any]) -> None:
    k["crypto"]["kdf"] = "none"  # unknown: the old bound returned without checking
    k["crypto"]["KDF"] = "scrypt"
    k["crypto"]["kdfparams"]["n"] = 2**30


def _second_crypto(k: dict[str, Any]) -> None:
    k["Crypto"] = copy.deepcopy(k["crypto"])  # a fine "crypto", then a costly "Crypto"
    k["Crypto"]["kdfparams"]["n"] = 2**30


def _pbkdf2_huge_dklen(k: dict[str, Any]) -> None:
    params = {"c": 2**22, "dklen": 2**30, "prf": "hmac-sha256", "salt": "00" * 16}
    k["crypto"]["kdf"], k["crypto"]["kdfparams"] = "pbkdf2", params


def _scrypt_huge_dklen(k: dict[str, Any]) -> None:
    k["crypto"]["kdfparams"]["dklen"] = 2**30  # scrypt's final PBKDF2 in pure Python


def _pbkdf2_other_prf(k: dict[str, Any]) -> None:
    params = {"c": 2**10, "dklen": 32, "prf": "hmac-sha512", "salt": "00" * 16}
    k["crypto"]["kdf"], k["crypto"]["kdfparams"] = "pbkdf2", params


@pytest.mark.parametrize(
    "edit",
    [
        _second_spelling_of_n,
        _kdf_spelled_twice,
        _second_crypto,
        _pbkdf2_huge_dklen,
        _scrypt_huge_dklen,
        _pbkdf2_other_prf,
    ],
)
def test_kdf_bounds_hold_on_what_eth_keyfile_reads(
    edit: Callable[[dict[str, Any]], None], kdf_calls: list[tuple[Any, ...]]
) -> None:
    with pytest.raises(KeyFileError) as refused:
        decrypt_keystore(edited(edit), PASSWORD, Path("k.json"))
    assert kdf_calls == [], f"the KDF ran: {kdf_calls}"
    assert "\n" not in str(refused.value) and "k.json" in str(refused.value)


def test_an_old_geth_keystore_spelled_crypto_with_a_capital_still_opens() -> None:
    """Normalising is what makes the bound exact, not a refusal of other spellings: geth
    wrote ``Crypto`` for years."""
    keystore = copy.deepcopy(GOOD)
    keystore["Crypto"] = keystore.pop("crypto")
    assert decrypt_keystore(json.dumps(keystore), PASSWORD, Path("k.json")) == KEYS[1]


@pytest.mark.parametrize("decrypt", [decrypt_keystore, decrypt_sr25519_keystore])
def test_json_nested_deeper_than_the_stack_is_one_key_file_error(
    decrypt: Callable[[str, str, Path], object],
) -> None:
    deep = "[" * 30_000 + "]" * 30_000  # 60 KB: under read_secret's 64 KiB
    with pytest.raises(KeyFileError, match="is not JSON"):
        decrypt(deep, PASSWORD, Path("k.json"))
    nested = '{"a":' * 30_000 + "1" + "}" * 30_000
    with pytest.raises(KeyFileError):
        decrypt(nested, PASSWORD, Path("k.json"))


def keystore_holding(secret: bytes) -> str:
    """A well-formed V3 keystore (scrypt N = 16) of any 32 bytes: eth-keyfile's writer refuses
    an invalid key, another tool may not."""
    salt, iv = bytes(range(16)), bytes(16)
    derived = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=16, r=8, p=1, dklen=32)
    counter = Counter.new(128, initial_value=int.from_bytes(iv, "big"))
    ciphertext = AES.new(derived[:16], AES.MODE_CTR, counter=counter).encrypt(secret)
    crypto = {
        "cipher": "aes-128-ctr",
        "cipherparams": {"iv": iv.hex()},
        "ciphertext": ciphertext.hex(),
        "kdf": "scrypt",
        "kdfparams": {"dklen": 32, "n": 16, "r": 8, "p": 1, "salt": salt.hex()},
        "mac": keccak256(derived[16:32] + ciphertext).hex(),
    }
    return json.dumps({"version": 3, "crypto": crypto})


INVALID_KEYS = [bytes(32), SECP256K1_ORDER.to_bytes(32, "big"), b"\xff" * 32]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_a_key_that_is_no_secp256k1_key_is_refused_without_being_shown(
    key: bytes, tmp_path: Path
) -> None:
    assert decrypt_keystore(keystore_holding(KEYS[1]), PASSWORD, Path("k.json")) == KEYS[1]
    with pytest.raises(KeyFileError, match="is not a secp256k1 private key"):
        encrypt_keystore(key, PASSWORD, work=2**4)
    # A keystore holding one (written by another tool) opens to a refusal, not a crash.
    text = keystore_holding(key)
    with pytest.raises(KeyFileError, match="is not a secp256k1 private key") as refused:
        decrypt_keystore(text, PASSWORD, Path("k.json"))
    assert str(int.from_bytes(key, "big")) not in str(refused.value)
    # A raw key file: evm_signer (keys list, relay, attest) says so in one ConfigError.
    write_secret(tmp_path / "key", "0x" + key.hex())
    with pytest.raises(ConfigError, match="is not a secp256k1 private key"):
        evm_signer(KeySource(file=tmp_path / "key"))


def test_keys_import_of_an_invalid_key_is_one_line_that_does_not_echo_it(tmp_path: Path) -> None:
    key = b"\xff" * 32
    result = subprocess.run(
        [PASSERELLE, "keys", "import", "--out", str(tmp_path / "k.json"),
         "--key-env", "PSRL_KEY", "--password-env", "PSRL_PW"],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "PSRL_KEY": "0x" + key.hex(), "PSRL_PW": PASSWORD},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # unusable input, not an internal error
    assert "internal error" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert str(int.from_bytes(key, "big")) not in result.stderr
    assert key.hex() not in result.stderr
    assert not (tmp_path / "k.json").exists()
