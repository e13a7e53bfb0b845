"""Signing keys at rest: key files only their owner can read, and encrypted keystores.

A relayer's or an attester's key is the bridge's money and its committee's word, so a file that
holds one (a raw key, a keystore, a keystore's password) must be a regular file readable by its
owner only: one that group or others can read is refused with the ``chmod`` that fixes it,
before it is used — a leaked key is not undone by a warning in a log.

Two keystore formats, one per key type, each the one its ecosystem's wallets speak:

* secp256k1 (EVM transactions, committee signatures): Ethereum's V3 JSON (scrypt or pbkdf2,
  AES-128-CTR), read and written by ``eth-account`` (geth, clef and every wallet).
* sr25519 (Substrate extrinsics, the committee's multisig): the Polkadot JS JSON keystore
  (``encoding.version`` "3": scrypt, then xsalsa20-poly1305 over a PKCS#8 body of the 64-byte
  secret and the public key), read and written by ``substrate-interface``; what
  ``polkadot-js`` apps, ``subkey``-based tooling and wallets export.

The password comes from an environment variable, a file of its own, or (CLI) a prompt. A
keystore is parsed as hostile input: its KDF parameters are bounded before any work is done (a
file naming scrypt N = 2^40 would otherwise take the machine's memory), its embedded public key
and address must be those of its secret, and every refusal is one line naming the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

# eth_account is imported where a keystore is decrypted or written, not here: relayer.config
# imports this module, so every `passerelle` command (`--help`, `status`, `config check`) would
# pay its import (~0.23 s of CPU of a ~0.37 s start) for two functions few of them call.
if TYPE_CHECKING:
    from substrateinterface import Keypair

__all__ = [
    "SS58_FORMAT",
    "KeyFileError",
    "check_secp256k1_key",
    "decrypt_keystore",
    "decrypt_sr25519_keystore",
    "encrypt_keystore",
    "encrypt_sr25519_keystore",
    "read_secret",
    "sr25519_keypair_from_secret",
    "write_secret",
]

MAX_SECRET_BYTES = 64 * 1024
"""A key, a keystore or a password is far smaller; anything larger is not one."""


class KeyFileError(ValueError):
    """A key file that cannot be used: unreadable, not a regular file, readable by others, or
    not what it should hold. ``str()`` is one line naming the file and the fix."""


def read_secret(path: Path, what: str) -> str:
    """The text of ``path``, a secret: it must be a regular file of at most 64 KiB that
    neither group nor others can read (mode ``0600`` or stricter)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        reason = "a symlink" if exc.errno == 40 else exc.strerror  # ELOOP: O_NOFOLLOW
        raise KeyFileError(f"cannot read {what} {path}: {reason}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file")
        if info.st_mode & 0o077:
            mode = stat.S_IMODE(info.st_mode)
            raise KeyFileError(
                f"{what} {path} can be read by others (mode {mode:04o}): chmod 600 {path}"
            )
        data = file.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise KeyFileError(f"{what} {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{what} {path} is not text") from None


def refuse_existing(path: Path) -> None:
    """KeyFileError if ``path`` exists (a dangling symlink too): asked before a password prompt
    and the keystore's deliberately slow key derivation, so a wrong ``--out`` costs neither.
    :func:`write_secret` still refuses atomically (``O_EXCL``) a file created in between."""
    if os.path.lexists(path):
        raise KeyFileError(f"{path} exists: not overwriting a key file")


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` with mode ``0600`` holding ``text``; never overwrite (KeyFileError)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists: not overwriting a key file") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _load_json(text: str, where: Path) -> Any:
    """Parse a keystore's JSON; KeyFileError if it is not JSON — including nesting so deep that
    the parser runs out of stack (``[[[[…``: a RecursionError, not a ValueError)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise KeyFileError(f"keystore {where} is not JSON") from None


SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""n: a secp256k1 private key is a number in [1, n - 1]."""


def check_secp256k1_key(key: bytes, what: str) -> bytes:
    """``key`` if it is a usable secp256k1 private key (32 bytes, 1 ≤ k < n); KeyFileError
    naming ``what`` otherwise. Checked here, not left to the libraries: their messages quote
    the offending value (eth-keys prints the key in decimal)."""
    if len(key) != 32 or not 1 <= int.from_bytes(key, "big") < SECP256K1_ORDER:
        raise KeyFileError(
            f"{what} is not a secp256k1 private key (32 bytes, a number from 1 to n - 1)"
        )
    return key


def decrypt_keystore(text: str, password: str, where: Path) -> bytes:
    """The 32-byte private key of a V3 keystore; KeyFileError (one line) if it is not one or
    the password is wrong.

    eth-keyfile lower-cases every key of the JSON before reading it (``Crypto`` is ``crypto``,
    ``N`` is ``n``; of two spellings the last wins), so the bounds are checked on that
    normalised form, and exactly that form is what is decrypted: what was checked is what runs.
    """
    keystore = _load_json(text, where)
    if _is_polkadot_keystore(keystore):
        raise KeyFileError(
            f"keystore {where} is a Substrate (Polkadot JS) keystore; a secp256k1 key needs an "
            "Ethereum V3 keystore (sr25519 keystores go in substrate_key_keystore)"
        )
    try:
        keystore = _lower_keys(keystore)
    except RecursionError:  # dicts nested deeper than the stack, though json.loads got through
        raise KeyFileError(f"keystore {where} is not a version 3 keystore") from None
    if not isinstance(keystore, dict) or keystore.get("version") != 3:
        raise KeyFileError(f"keystore {where} is not a version 3 keystore")
    _bound_v3_work(keystore, where)
    from eth_account import Account  # noqa: PLC0415 (heavy import, see the top)

    try:
        key = bytes(Account.decrypt(keystore, password))
    except ValueError as exc:
        reason = "wrong password" if "MAC" in str(exc) else " ".join(str(exc).split())[:120]
        raise KeyFileError(f"cannot decrypt keystore {where}: {reason}") from None
    except (KeyError, TypeError, NotImplementedError):
        raise KeyFileError(f"keystore {where} is malformed") from None
    return check_secp256k1_key(key, f"the key in keystore {where}")


def encrypt_keystore(key: bytes, password: str, *, work: int | None = None) -> str:
    """A V3 keystore (scrypt) of ``key`` as JSON text. ``work`` is scrypt's N (default
    eth-account's, 2^18, as wallets use); only tests pass a smaller one."""
    if not password:
        raise KeyFileError("an empty password protects nothing")
    check_secp256k1_key(key, "the key to encrypt")
    from eth_account import Account  # noqa: PLC0415 (heavy import, see the top)

    encrypted = Account.encrypt(key, password, kdf="scrypt", iterations=work)
    return json.dumps(encrypted)


# --- bounds on the work a keystore may ask for ------------------------------------------------
# A keystore names its own KDF parameters, so a hostile one could ask for terabytes (scrypt's
# memory is 128·N·r bytes) or years (pbkdf2's count). The bounds admit what real wallets write:
# geth's standard scrypt (N = 2^18, r = 8, p = 1: exactly 256 MiB), its light one (N = 2^12,
# p = 6), eth-account's pbkdf2 (10^6 rounds), Polkadot JS (N = 2^15, r = 8, p = 1).
MAX_SCRYPT_MEMORY = 2**28
"""Bytes of memory (128·N·r) a keystore's scrypt may take."""
MAX_SCRYPT_WORK = 2**23
"""N·r·p: scrypt's time, in units of one 128-byte block mix."""
MAX_PBKDF2_ROUNDS = 2**22


def _scrypt_within_bounds(n: Any, r: Any, p: Any) -> bool:
    """Whether scrypt parameters are sane and cheap enough to try (see the bounds above)."""
    if not (type(n) is int and type(r) is int and type(p) is int) or min(n, r, p) < 1:
        return False  # type(...) is int: a JSON boolean is an int to isinstance
    power_of_two = n >= 2 and n & (n - 1) == 0
    return power_of_two and 128 * n * r <= MAX_SCRYPT_MEMORY and n * r * p <= MAX_SCRYPT_WORK


V3_DKLEN = 32
"""The derived key length of every V3 keystore: 16 bytes of AES key, 16 of MAC key. A larger
``dklen`` buys nothing but work (PBKDF2 runs once per 32 bytes of output)."""


def _lower_keys(value: Any) -> Any:
    """``value`` with every dict key lower-cased, recursively, the last of two spellings
    winning: eth-keyfile's ``normalize_keys``, which is what it decrypts (lists are left as
    they are, as it leaves them)."""
    if not isinstance(value, dict):
        return value
    return {
        (key.lower() if isinstance(key, str) else key): _lower_keys(item)
        for key, item in value.items()
    }


def _bound_v3_work(keystore: dict[str, Any], where: Path) -> None:
    """KeyFileError if a normalised (:func:`_lower_keys`) V3 keystore names a KDF other than
    scrypt or pbkdf2 (with HMAC-SHA256), a ``dklen`` other than 32, or more KDF work than any
    wallet writes."""
    crypto = keystore.get("crypto")
    if not isinstance(crypto, dict) or not isinstance(crypto.get("kdfparams"), dict):
        raise KeyFileError(f"keystore {where} is malformed (no crypto.kdfparams)")
    params = crypto["kdfparams"]
    kdf = crypto.get("kdf")
    if kdf == "scrypt":
        fine = _scrypt_within_bounds(params.get("n"), params.get("r"), params.get("p"))
    elif kdf == "pbkdf2":
        rounds = params.get("c")
        fine = type(rounds) is int and 1 <= rounds <= MAX_PBKDF2_ROUNDS
        fine = fine and params.get("prf") == "hmac-sha256"
    else:
        raise KeyFileError(f"keystore {where} uses an unknown KDF (scrypt or pbkdf2 expected)")
    dklen = params.get("dklen")
    if not fine or type(dklen) is not int or dklen != V3_DKLEN:
        raise KeyFileError(f"keystore {where} asks for out-of-bounds {kdf} parameters")


# --- sr25519: the Polkadot JS keystore ------------------------------------------------------

SS58_FORMAT = 42
"""The SS58 address format Passerelle shows and signs with (the generic Substrate one, as
``substrate-interface`` and the devnet's Asset Hub use). An account is its public key; the
format only changes how the address is spelled, so a keystore written for another network
(Polkadot 0, Kusama 2, …) opens too."""

_SCRYPT_PARAMS = 32 + 3 * 4  # salt, then N, p, r as little-endian u32 (this order)
_NONCE = 24
_MAC = 16
_PKCS8_BODY = 16 + 64 + 5 + 32  # header, the 64-byte secret, divider, the public key
_ENCODED_LENGTH = _SCRYPT_PARAMS + _NONCE + _MAC + _PKCS8_BODY
_KEY_TYPES = ("sr25519", "ed25519", "ecdsa", "ethereum")


def _is_polkadot_keystore(keystore: Any) -> bool:
    """Whether parsed JSON looks like a Polkadot JS keystore (whatever its key type)."""
    return isinstance(keystore, dict) and isinstance(keystore.get("encoding"), dict)


def _strings(value: Any) -> list[str] | None:
    """``value`` if it is a list of strings (as ``encoding.content`` and ``type`` are)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def decrypt_sr25519_keystore(text: str, password: str, where: Path) -> Keypair:
    """The sr25519 keypair of a Polkadot JS keystore, with its addresses in :data:`SS58_FORMAT`.

    KeyFileError (one line naming ``where``) for: not JSON; an Ethereum V3 keystore; another key
    type (ed25519, ecdsa: "holds an ed25519 key"); a keystore not encrypted with scrypt and
    xsalsa20-poly1305 (Polkadot JS's unencrypted and pre-scrypt forms are refused: a password
    with no KDF is no protection); scrypt parameters out of bounds; a body of the wrong size;
    the wrong password; a public key or address that is not the secret's own.
    """
    from nacl.exceptions import CryptoError  # noqa: PLC0415 (heavy imports, only when needed)
    from scalecodec.utils.ss58 import ss58_decode  # noqa: PLC0415
    from sr25519 import public_from_secret_key  # noqa: PLC0415
    from substrateinterface import Keypair  # noqa: PLC0415

    keystore = _load_json(text, where)
    if not _is_polkadot_keystore(keystore):
        if isinstance(keystore, dict) and keystore.get("version") == 3:
            raise KeyFileError(
                f"keystore {where} is an Ethereum V3 keystore (secp256k1); an sr25519 keystore "
                "is needed"
            )
        raise KeyFileError(f"keystore {where} is not a Polkadot JS keystore")
    encoding = keystore["encoding"]
    content, kinds = _strings(encoding.get("content")), _strings(encoding.get("type"))
    if encoding.get("version") != "3" or content is None or kinds is None:
        raise KeyFileError(f"keystore {where} is not a version 3 Polkadot JS keystore")
    key_type = next((t for t in _KEY_TYPES if t in content), None)
    if key_type != "sr25519":
        held = f"an {key_type}" if key_type else "no known"
        raise KeyFileError(f"keystore {where} holds {held} key; an sr25519 key is needed")
    if "pkcs8" not in content or set(kinds) != {"scrypt", "xsalsa20-poly1305"}:
        raise KeyFileError(
            f"keystore {where} is not a pkcs8 keystore encrypted with scrypt and xsalsa20-poly1305"
        )
    encoded = keystore.get("encoded")
    try:
        body = base64.b64decode(encoded if isinstance(encoded, str) else "", validate=True)
    except binascii.Error:
        body = b""
    if len(body) != _ENCODED_LENGTH:
        raise KeyFileError(f"keystore {where} does not hold an encrypted sr25519 key")
    n, p, r = (int.from_bytes(body[i : i + 4], "little") for i in (32, 36, 40))
    if not _scrypt_within_bounds(n, r, p):
        raise KeyFileError(f"keystore {where} asks for out-of-bounds scrypt parameters")
    try:
        keypair = Keypair.create_from_encrypted_json(keystore, password, ss58_format=SS58_FORMAT)
    except CryptoError:
        raise KeyFileError(f"cannot decrypt keystore {where}: wrong password") from None
    except UnicodeEncodeError:
        raise KeyFileError(f"cannot decrypt keystore {where}: the password is not text") from None
    except ValueError:
        # Decrypted under the password, yet not PKCS#8: written by something else, or forged.
        raise KeyFileError(f"keystore {where} is malformed") from None
    except AssertionError:  # the library's own check of the stored public key (next comment)
        raise KeyFileError(f"keystore {where}: its public key is not its secret's") from None
    public = bytes(keypair.public_key)
    # The library checks this with `assert`, which `python -O` removes: check it here too. A
    # public key not of the secret would sign as one account and claim to be another.
    if bytes(public_from_secret_key(bytes(keypair.private_key))) != public:
        raise KeyFileError(f"keystore {where}: its public key is not its secret's")
    address = keystore.get("address")
    if address is not None:
        try:
            labelled = bytes.fromhex(str(ss58_decode(address)))
        except (ValueError, TypeError, IndexError):
            raise KeyFileError(f"keystore {where}: its address is not an SS58 address") from None
        if labelled != public:
            raise KeyFileError(f"keystore {where}: its address is not its key's")
    return keypair


def encrypt_sr25519_keystore(keypair: Keypair, password: str) -> str:
    """A Polkadot JS keystore (scrypt N = 2^15, as Polkadot JS writes) of an sr25519
    ``keypair`` with its secret, as JSON text."""
    from substrateinterface import KeypairType  # noqa: PLC0415 (heavy import)

    if not password:
        raise KeyFileError("an empty password protects nothing")
    if keypair.crypto_type != KeypairType.SR25519 or not keypair.private_key:
        raise KeyFileError("only an sr25519 keypair with its secret can go in an sr25519 keystore")
    return json.dumps(keypair.export_to_encrypted_json(password))


def sr25519_keypair_from_secret(text: str, what: str) -> Keypair:
    """The sr25519 keypair of an operator's secret: a ``0x`` 32-byte mini-secret seed, or a
    BIP39 mnemonic (what ``subkey`` and Polkadot JS show at creation). Derivation paths
    (``//hard``, ``/soft``) and development URIs (``//Alice``) are refused: an imported key is
    the key itself, and a development key is public. KeyFileError names ``what``, never the
    secret."""
    from substrateinterface import Keypair, KeypairType  # noqa: PLC0415 (heavy imports)

    from adapters.substrate.client import keypair_from_seed  # noqa: PLC0415

    text = text.strip()
    if text.startswith(("0x", "0X")):
        try:
            seed = bytes.fromhex(text[2:])
        except ValueError:
            raise KeyFileError(f"{what} is not hex after 0x") from None
        if len(seed) != 32:
            raise KeyFileError(f"{what} is {len(seed)} bytes; an sr25519 seed is 32")
        return keypair_from_seed(seed)
    words = " ".join(text.split())
    if len(words) > MAX_SECRET_BYTES or not Keypair.validate_mnemonic(words):
        raise KeyFileError(f"{what} is neither a 0x… 32-byte seed nor a BIP39 mnemonic")
    return Keypair.create_from_mnemonic(words, crypto_type=KeypairType.SR25519)
