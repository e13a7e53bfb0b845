"""What a `passerelle` process imports before it knows its command.

relayer.cli imports relayer.config, which imports relayer.keys: an import at the top of
relayer/keys.py is paid by every command, `--help` and `status` included. eth_account was one
(~0.23 s of CPU of a ~0.37 s start); it is imported where a V3 keystore is decrypted or written.
A fresh interpreter is used: this test process has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_PROBE = """
import sys
from pathlib import Path

import relayer.cli
import relayer.config

print("eth_account at start:", "eth_account" in sys.modules)

from relayer.keys import decrypt_keystore, encrypt_keystore

key = bytes(31) + b"\\x05"
text = encrypt_keystore(key, "pw", work=2)
print("round trip:", decrypt_keystore(text, "pw", Path("probe.json")) == key)
"""


def test_the_cli_starts_without_eth_account_and_keystores_still_work(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["eth_account at start: False", "round trip: True"]
