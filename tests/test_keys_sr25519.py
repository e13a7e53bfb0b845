"""sr25519 keys at rest: Polkadot JS keystores (``substrate_key_keystore``), parsed as hostile
input, and ``passerelle keys new|import|list --kind sr25519``."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scalecodec.utils.ss58 import ss58_encode
from sr25519 import convert_secret_key_to_ed25519
from substrateinterface import Keypair, KeypairType
from substrateinterface.utils.encrypted_json import encode_pair
from test_config import KEYS, toml
from test_keys import run

from adapters.substrate.client import keypair_from_seed
from light_clients.committee import address_of
from light_clients.hashing import keccak256
from relayer.cli import main
from relayer.config import ConfigError, KeySource, load_config
from relayer.keys import (
    KeyFileError,
    decrypt_keystore,
    decrypt_sr25519_keystore,
    encrypt_keystore,
    encrypt_sr25519_keystore,
    sr25519_keypair_from_secret,
    write_secret,
)
from relayer.signer import substrate_signer

PASSWORD = "correct horse"
SEED = keccak256(b"sr25519 keystore test seed")
KEYPAIR = keypair_from_seed(SEED)
# One keystore for the module: Polkadot JS's scrypt (N = 2^15) costs ~0.1 s per encryption.
KEYSTORE = encrypt_sr25519_keystore(KEYPAIR, PASSWORD)
MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"


def attester_config(tmp_path: Path, substrate: str) -> Path:
    """A production config (no inline keys) whose one attester has the given substrate key."""
    path = tmp_path / "passerelle.toml"
    attester = f'\n[[attesters]]\nkey_env = "PSRL_ATTESTER_KEY"\n{substrate}\n'
    path.write_text(toml(devnet=False, relayer='key_env = "PSRL_RELAYER_KEY"') + attester)
    return path


def keystore_source(tmp_path: Path, text: str = KEYSTORE, *, file: str = "sr.json") -> KeySource:
    write_secret(tmp_path / file, text)
    config = load_config(
        attester_config(
            tmp_path,
            f'substrate_key_keystore = "{file}"\nsubstrate_key_password_env = "PSRL_SR_PW"',
        )
    )
    [source] = config.attester_substrate_keys
    assert source is not None and source.sr25519
    return source


def with_encoded(body: bytes, **changes: Any) -> str:
    """The module's keystore with ``encoded`` replaced by ``body`` (and other fields changed)."""
    keystore = json.loads(KEYSTORE)
    keystore["encoded"] = base64.b64encode(body).decode()
    keystore.update(changes)
    return json.dumps(keystore)


def polkadot_keystore(key_type: str) -> str:
    """A Polkadot JS keystore holding a key of ``key_type`` (ed25519: the 64-byte seed ‖ public
    secret Polkadot JS stores), encrypted like an sr25519 one."""
    ed = Keypair.create_from_seed(SEED, crypto_type=KeypairType.ED25519)
    public, secret = bytes(ed.public_key), bytes(ed.private_key) + bytes(ed.public_key)
    encoded = encode_pair(public, secret, PASSWORD)
    return with_encoded(
        encoded,
        encoding={
            "content": ["pkcs8", key_type],
            "type": ["scrypt", "xsalsa20-poly1305"],
            "version": "3",
        },
        address=ss58_encode(public, 42),
    )


def encoded_body() -> bytes:
    return base64.b64decode(json.loads(KEYSTORE)["encoded"])


# --- keystores through the configuration --------------------------------------------------


def test_a_keystore_opens_with_its_password_only_and_signs_as_its_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = keystore_source(tmp_path)
    assert (tmp_path / "sr.json").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("PSRL_SR_PW", PASSWORD)
    signer = substrate_signer(source)
    assert signer.public_key == bytes(KEYPAIR.public_key)
    assert signer.ss58_address == KEYPAIR.ss58_address
    assert KEYPAIR.verify(b"payload", signer.sign(b"payload"))
    monkeypatch.setenv("PSRL_SR_PW", "wrong horse")
    with pytest.raises(ConfigError, match=r"^cannot decrypt keystore .*sr\.json: wrong password$"):
        substrate_signer(source)
    monkeypatch.delenv("PSRL_SR_PW")
    with pytest.raises(ConfigError, match=r"PSRL_SR_PW \(a keystore password\) is not set"):
        substrate_signer(source)


def test_a_password_file_and_the_keystore_must_be_their_owners_alone(tmp_path: Path) -> None:
    write_secret(tmp_path / "sr.json", KEYSTORE)
    write_secret(tmp_path / "pw", PASSWORD + "\n")
    config = load_config(
        attester_config(
            tmp_path, 'substrate_key_keystore = "sr.json"\nsubstrate_key_password_file = "pw"'
        )
    )
    [source] = config.attester_substrate_keys
    assert source is not None
    assert substrate_signer(source).public_key == bytes(KEYPAIR.public_key)
    (tmp_path / "sr.json").chmod(0o644)
    with pytest.raises(ConfigError, match=r"keystore .*sr\.json can be read by others \(mode"):
        substrate_signer(source)
    (tmp_path / "sr.json").chmod(0o600)
    (tmp_path / "pw").chmod(0o604)
    with pytest.raises(ConfigError, match=r"password file .*pw can be read by others"):
        substrate_signer(source)


@pytest.mark.parametrize(
    ("substrate", "reason"),
    [
        ('substrate_key_keystore = "k.json"', "substrate_key_keystore needs exactly one of"),
        (
            'substrate_key_file = "s"\nsubstrate_key_keystore = "k.json"',
            "substrate_key_file and substrate_key_keystore conflict",
        ),
        (
            'substrate_key_env = "S"\nsubstrate_key_password_env = "P"',
            "substrate_key_password_env is only for substrate_key_keystore",
        ),
    ],
)
def test_substrate_keystore_settings_are_refused_in_one_line(
    tmp_path: Path, substrate: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as refused:
        load_config(attester_config(tmp_path, substrate))
    assert "\n" not in str(refused.value)


def test_each_keystore_format_is_refused_where_the_other_key_type_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A V3 (secp256k1) keystore as ``substrate_key_keystore`` and a Polkadot JS one as
    ``key_keystore`` each fail in one line that says which is which."""
    monkeypatch.setenv("PSRL_SR_PW", PASSWORD)
    v3 = encrypt_keystore(KEYS[1], PASSWORD, work=2**10)
    source = keystore_source(tmp_path, v3, file="v3.json")
    with pytest.raises(ConfigError, match=r"is an Ethereum V3 keystore \(secp256k1\); an sr25519"):
        substrate_signer(source)
    with pytest.raises(KeyFileError, match=r"is a Substrate \(Polkadot JS\) keystore; a secp256k1"):
        decrypt_keystore(KEYSTORE, PASSWORD, Path("sr.json"))
    # A seed-less sr25519 source asked for its "seed" says so instead of mis-parsing.
    with pytest.raises(ConfigError, match="holds an sr25519 secret, not a seed"):
        keystore_source(tmp_path, file="other.json").load()


@pytest.mark.parametrize(("key_type", "held"), [("ed25519", "an ed25519"), ("ecdsa", "an ecdsa")])
def test_a_keystore_of_another_key_type_is_refused(key_type: str, held: str) -> None:
    text = polkadot_keystore(key_type)
    with pytest.raises(KeyFileError, match=rf"holds {held} key; an sr25519 key is needed$"):
        decrypt_sr25519_keystore(text, PASSWORD, Path("k.json"))


def test_a_keystore_of_another_ss58_format_opens_but_a_lying_address_does_not() -> None:
    """The account is the public key: a keystore exported for Polkadot (format 0) is the same
    key, shown in format 42. An address that is another key's is a tampered file."""
    polkadot = with_encoded(encoded_body(), address=ss58_encode(KEYPAIR.public_key, 0))
    opened = decrypt_sr25519_keystore(polkadot, PASSWORD, Path("k.json"))
    assert opened.public_key == KEYPAIR.public_key
    assert opened.ss58_address == KEYPAIR.ss58_address  # format 42
    other = keypair_from_seed(keccak256(b"another account"))
    lying = with_encoded(encoded_body(), address=other.ss58_address)
    with pytest.raises(KeyFileError, match="its address is not its key's"):
        decrypt_sr25519_keystore(lying, PASSWORD, Path("k.json"))
    with pytest.raises(KeyFileError, match="is not an SS58 address"):
        decrypt_sr25519_keystore(
            with_encoded(encoded_body(), address="5notanaddress"), PASSWORD, Path("k.json")
        )


def test_a_keystore_whose_public_key_is_not_its_secrets_is_refused(tmp_path: Path) -> None:
    """PKCS#8 holds the secret and, beside it, a public key: one of another account would sign
    as the secret's account while every check upstream looked at the other. substrate-interface
    checks it with ``assert``, gone under ``python -O``: refused there too."""
    other = keypair_from_seed(keccak256(b"another account"))
    secret = convert_secret_key_to_ed25519(KEYPAIR.private_key)
    forged = with_encoded(encode_pair(other.public_key, secret, PASSWORD))
    forged = json.dumps({k: v for k, v in json.loads(forged).items() if k != "address"})
    refusal = "keystore k.json: its public key is not its secret's"
    with pytest.raises(KeyFileError) as refused:
        decrypt_sr25519_keystore(forged, PASSWORD, Path("k.json"))
    assert str(refused.value) == refusal
    (tmp_path / "forged.json").write_text(forged)
    script = (
        "import sys; from pathlib import Path; from relayer.keys import *\n"
        "text = Path(sys.argv[1]).read_text()\n"
        "try: decrypt_sr25519_keystore(text, sys.argv[2], Path('k.json'))\n"
        "except KeyFileError as e: print(e)"
    )
    optimized = subprocess.run(
        [sys.executable, "-O", "-c", script, str(tmp_path / "forged.json"), PASSWORD],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert optimized.stdout.strip() == refusal, optimized.stderr


@pytest.mark.parametrize(
    ("n", "p", "r"),
    [(2**31, 1, 8), (2**14, 2**31, 8), (2**15, 1, 2**20), (3 * 2**13, 1, 8), (0, 1, 8)],
)
def test_scrypt_parameters_out_of_bounds_are_refused_before_any_work(
    n: int, p: int, r: int
) -> None:
    """The keystore names its own scrypt cost: p = 2^31 would run for years, N·r beyond the
    library's memory limit or a non-power-of-two N is no keystore Polkadot JS writes."""
    body = bytearray(encoded_body())
    body[32:44] = n.to_bytes(4, "little") + p.to_bytes(4, "little") + r.to_bytes(4, "little")
    started = time.monotonic()
    with pytest.raises(KeyFileError, match="out-of-bounds scrypt parameters"):
        decrypt_sr25519_keystore(with_encoded(bytes(body)), PASSWORD, Path("k.json"))
    assert time.monotonic() - started < 1.0  # refused before scrypt ran


@pytest.mark.parametrize(
    ("kdf", "params"),
    [
        ("scrypt", {"dklen": 32, "n": 2**30, "r": 8, "p": 1, "salt": "00" * 32}),
        ("scrypt", {"dklen": 32, "n": 2**10, "r": 8, "p": 2**30, "salt": "00" * 32}),
        ("pbkdf2", {"dklen": 32, "c": 2**23, "prf": "hmac-sha256", "salt": "00" * 32}),
    ],
)
def test_a_v3_keystore_asking_for_unbounded_kdf_work_is_refused_at_once(
    kdf: str, params: dict[str, Any]
) -> None:
    keystore = json.loads(encrypt_keystore(KEYS[1], PASSWORD, work=2**10))
    keystore["crypto"]["kdf"], keystore["crypto"]["kdfparams"] = kdf, params
    started = time.monotonic()
    with pytest.raises(KeyFileError, match=f"asks for out-of-bounds {kdf} parameters"):
        decrypt_keystore(json.dumps(keystore), PASSWORD, Path("k.json"))
    assert time.monotonic() - started < 1.0


def test_unencrypted_and_pre_scrypt_keystores_are_refused() -> None:
    for kinds in (["none"], ["xsalsa20-poly1305"], ["scrypt"]):
        text = with_encoded(
            encoded_body(),
            encoding={"content": ["pkcs8", "sr25519"], "type": kinds, "version": "3"},
        )
        with pytest.raises(KeyFileError, match="encrypted with scrypt and xsalsa20-poly1305"):
            decrypt_sr25519_keystore(text, PASSWORD, Path("k.json"))


# --- the parser against anything -------------------------------------------------------------

_ENCODINGS = st.fixed_dictionaries(
    {},
    optional={
        "content": st.one_of(
            st.lists(st.sampled_from(["pkcs8", "sr25519", "ed25519", "ecdsa", "x"]), max_size=3),
            st.integers(),
            st.text(max_size=8),
        ),
        "type": st.one_of(
            st.lists(st.sampled_from(["scrypt", "xsalsa20-poly1305", "none"]), max_size=3),
            st.none(),
        ),
        "version": st.sampled_from(["3", 3, "2", None]),
    },
)
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=150)
@given(
    st.one_of(
        st.text(max_size=80),
        _JSONISH.map(json.dumps),
        st.builds(
            lambda encoding, encoded, address: json.dumps(
                {"encoding": encoding, "encoded": encoded, "address": address}
            ),
            _ENCODINGS,
            st.one_of(
                st.binary(max_size=250).map(lambda b: base64.b64encode(b).decode()),
                st.text(max_size=20),
                st.integers(),
            ),
            st.one_of(st.none(), st.text(max_size=50), st.integers()),
        ),
    )
)
def test_anything_but_an_sr25519_keystore_is_one_key_file_error(text: str) -> None:
    with pytest.raises(KeyFileError) as refused:
        decrypt_sr25519_keystore(text, PASSWORD, Path("k.json"))
    assert "\n" not in str(refused.value)


@settings(max_examples=25)
@given(st.data())
def test_any_change_to_a_keystore_body_is_refused(data: st.DataObject) -> None:
    """Salt, scrypt parameters, nonce, ciphertext, MAC: one changed byte anywhere and the
    keystore does not open (it never opens as another key)."""
    body = bytearray(encoded_body())
    position = data.draw(st.integers(0, len(body) - 1), label="position")
    body[position] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(KeyFileError):
        decrypt_sr25519_keystore(with_encoded(bytes(body)), PASSWORD, Path("k.json"))


def test_secrets_to_import_are_a_seed_or_a_mnemonic_and_never_echoed() -> None:
    assert sr25519_keypair_from_secret("0x" + SEED.hex(), "v").public_key == KEYPAIR.public_key
    words = sr25519_keypair_from_secret(f"  {MNEMONIC}\n", "v")
    assert words.public_key == Keypair.create_from_mnemonic(MNEMONIC).public_key
    for secret in ("//Alice", MNEMONIC + "//hard", "0x" + SEED.hex()[:-2], "0xzz", "legal"):
        with pytest.raises(KeyFileError) as refused:
            sr25519_keypair_from_secret(secret, "environment variable V")
        assert str(refused.value).startswith("environment variable V ")
        assert secret not in str(refused.value)


# --- the CLI ---------------------------------------------------------------------------------


def test_keys_new_import_and_list_for_sr25519(tmp_path: Path) -> None:
    """``--kind sr25519`` writes Polkadot JS keystores (mode 600) that substrate-interface
    opens, and ``keys list`` shows each role's SS58 address beside its 0x… one."""
    secrets = {
        "PSRL_SR_PW": PASSWORD,
        "PSRL_SEED": "0x" + SEED.hex(),
        "PSRL_WORDS": MNEMONIC,
        "PSRL_ATTESTER_KEY": "0x" + KEYS[1].hex(),
        "PSRL_RELAYER_KEY": "0x" + KEYS[0].hex(),
    }
    new = tmp_path / "new.json"
    made = run("keys", "new", "--kind", "sr25519", "--out", str(new), "--password-env",
               "PSRL_SR_PW", env=secrets)  # fmt: skip
    assert made.returncode == 0, made.stderr
    address, path = made.stdout.split()
    assert new.stat().st_mode & 0o777 == 0o600 and path == str(new)
    assert Keypair.create_from_encrypted_json(new.read_text(), PASSWORD).ss58_address == address

    imported = run("keys", "import", "--kind", "sr25519", "--key-env", "PSRL_SEED",
                   "--out", str(tmp_path / "sr.json"), "--password-env", "PSRL_SR_PW",
                   env=secrets)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split()[0] == KEYPAIR.ss58_address
    words = run("keys", "import", "--kind", "sr25519", "--key-env", "PSRL_WORDS", "--out",
                str(tmp_path / "w.json"), "--password-env", "PSRL_SR_PW", env=secrets)  # fmt: skip
    assert words.returncode == 0, words.stderr
    assert words.stdout.split()[0] == Keypair.create_from_mnemonic(MNEMONIC).ss58_address

    config = attester_config(
        tmp_path, 'substrate_key_keystore = "sr.json"\nsubstrate_key_password_env = "PSRL_SR_PW"'
    )
    listed = run("keys", "list", "--config", str(config), "--json", env=secrets)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows == [
        {"role": "relayer", "kind": "secp256k1", "source": "env",
         "address": "0x" + address_of(KEYS[0]).hex(), "error": None},
        {"role": "attester 0", "kind": "secp256k1", "source": "env",
         "address": "0x" + address_of(KEYS[1]).hex(), "error": None},
        {"role": "attester 0", "kind": "sr25519", "source": "keystore",
         "address": KEYPAIR.ss58_address, "error": None},
    ]  # fmt: skip
    locked = run("keys", "list", "--config", str(config), env={**secrets, "PSRL_SR_PW": "no"})
    assert locked.returncode == 1 and "Traceback" not in locked.stderr
    assert "attester 0   sr25519   keystore  not loaded: cannot decrypt keystore" in locked.stdout
    assert "wrong password" in locked.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["import", "--key-env", "PSRL_BAD"], {"PSRL_BAD": "hello world"},
         "environment variable PSRL_BAD is neither a 0x… 32-byte seed nor a BIP39 mnemonic"),
        (["import", "--key-env", "PSRL_BAD"], {"PSRL_BAD": "0x1234"},
         "environment variable PSRL_BAD is 2 bytes; an sr25519 seed is 32"),
        (["import", "--key-env", "PSRL_UNSET"], {}, "environment variable PSRL_UNSET is not set"),
        (["new"], {"PSRL_SR_PW": ""}, "an empty password protects nothing"),
    ],
)  # fmt: skip
def test_keys_cli_refuses_bad_input_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    """In-process through the console entry point (``main``: the same error handling as the
    installed command, without a 2 s interpreter start per case)."""
    out = tmp_path / "k.json"
    monkeypatch.delenv("PSRL_UNSET", raising=False)
    for name, value in {"PSRL_SR_PW": PASSWORD, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(
            ["keys", *args, "--kind", "sr25519", "--out", str(out), "--password-env", "PSRL_SR_PW"]
        )
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"passerelle: {message}\n"
    assert not out.exists()
