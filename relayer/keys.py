"""Signing keys at rest: key files only their owner can read, and encrypted keystores.

A relayer's or an attester's key is the bridge's money and its committee's word, so a file that
holds one (a raw key, a keystore, a keystore's password) must be a regular file readable by its
owner only: one that group or others can read is refused with the ``chmod`` that fixes it,
before it is used — a leaked key is not undone by a warning in a log.

Keystores are Ethereum's V3 JSON (scrypt or pbkdf2, AES-128-CTR), read and written by
``eth-account`` (the format every wallet and ``geth``/``clef`` speaks); the password comes from an
environment variable or a file of its own. sr25519 (Substrate) keys stay seeds in a file or
variable for now.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from eth_account import Account

__all__ = ["KeyFileError", "decrypt_keystore", "encrypt_keystore", "read_secret", "write_secret"]

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


def decrypt_keystore(text: str, password: str, where: Path) -> bytes:
    """The 32-byte private key of a V3 keystore; KeyFileError (one line) if it is not one or
    the password is wrong."""
    try:
        keystore = json.loads(text)
    except ValueError:
        raise KeyFileError(f"keystore {where} is not JSON") from None
    if not isinstance(keystore, dict) or keystore.get("version") != 3:
        raise KeyFileError(f"keystore {where} is not a version 3 keystore")
    try:
        key = bytes(Account.decrypt(keystore, password))
    except ValueError as exc:
        reason = "wrong password" if "MAC" in str(exc) else " ".join(str(exc).split())[:120]
        raise KeyFileError(f"cannot decrypt keystore {where}: {reason}") from None
    except (KeyError, TypeError, NotImplementedError):
        raise KeyFileError(f"keystore {where} is malformed") from None
    if len(key) != 32:
        raise KeyFileError(f"keystore {where} does not hold a 32-byte key")
    return key


def encrypt_keystore(key: bytes, password: str, *, work: int | None = None) -> str:
    """A V3 keystore (scrypt) of ``key`` as JSON text. ``work`` is scrypt's N (default
    eth-account's, 2^18, as wallets use); only tests pass a smaller one."""
    if not password:
        raise KeyFileError("an empty password protects nothing")
    encrypted = Account.encrypt(key, password, kdf="scrypt", iterations=work)
    return json.dumps(encrypted)
