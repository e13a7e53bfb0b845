"""Start and stop a local Substrate chain: chopsticks running Rococo Asset Hub from its chain spec.

Usage::

    with start_chopsticks(funded={ALICE: DEV_BALANCE}) as chain:
        print(chain.ws_url)  # ws://127.0.0.1:<port>; chain.http_url serves plain JSON-RPC too

chopsticks 1.5.1 (npm ``@acala-network/chopsticks``) builds blocks on top of the raw genesis
state of Rococo Asset Hub, exported by npm ``@substrate/connect-known-chains@1.10.3`` as
``rococo_v2_2_asset_hub``. Both npm packages are found by :mod:`devnet.tools` (checkout, PATH,
per-user cache) and neither is part of Passerelle (the chain-spec package is GPL-3.0-only):
:func:`write_chain_spec` reads the export at run time and refuses bytes whose sha256 is not
:data:`CHAIN_SPEC_SHA256`. Nothing is fetched from any remote endpoint: chopsticks is given the
spec as a local file (``genesis:``), which makes it serve storage from the spec instead of an
upstream node. Signatures are verified for real (no
``mock-signature-host``). Accounts are funded by writing ``System.Account`` through
chopsticks' ``import-storage``.

What this chain is, and is not (details and measurements in ``docs/substrate-devnet.md``):

- The runtime is the *genesis* runtime of Rococo Asset Hub: ``statemine`` spec version 900
  (metadata V14, SS58 prefix 2, 12 decimals, weights are plain ``u64``, Uniques still speaks of
  ``class``/``instance``).
- Every block is final as soon as it is built (``chain_getFinalizedHead`` is the best head):
  the finality policy is :data:`FINALITY_POLICY`, to be named in configs, never assumed.
- Header state roots are all zero (chopsticks does not compute them) and block 0 is a
  placeholder (hash ``0x4545…45``, not blake2-256 of the genesis header); the hash of every
  built block is blake2-256 of its SCALE header. ``state_getReadProof`` and
  ``grandpa_proveFinality`` do not work.

Every chain binds 127.0.0.1 only. :func:`start_chopsticks` returns once chopsticks announces
its RPC server on the requested port and answers ``system_chain``, or raises
:class:`ChopsticksError` with the tail of its log. :meth:`ChopsticksProcess.stop` stops exactly
the process it started, by PID (chopsticks is a single node process).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from scalecodec.utils.ss58 import ss58_decode

from adapters.jsonrpc import RpcError, call_sync
from devnet.process import ANSI_CODES, HOST, NodeProcess, log_tail, port_is_free
from devnet.tools import (
    PINNED,
    ToolError,
    chain_spec_package,
    chopsticks_script,
    node_executable,
)

__all__ = [
    "ALICE",
    "BLOCK_MODES",
    "CHAIN_NAME",
    "CHAIN_SPEC_EXPORT",
    "CHAIN_SPEC_PACKAGE",
    "CHAIN_SPEC_SHA256",
    "CHAIN_SPEC_VERSION",
    "CHOPSTICKS_PACKAGE",
    "DEV_BALANCE",
    "DEV_URIS",
    "EXISTENTIAL_DEPOSIT",
    "FINALITY_POLICY",
    "GENESIS_HASH",
    "HOST",
    "SS58_FORMAT",
    "TOKEN_DECIMALS",
    "ChopsticksError",
    "ChopsticksProcess",
    "account_id",
    "chain_spec_source",
    "check_chain_spec",
    "chopsticks_entry",
    "node_binary",
    "start_chopsticks",
    "write_chain_spec",
]

CHOPSTICKS_PACKAGE: Final = "@acala-network/chopsticks"
CHAIN_SPEC_PACKAGE: Final = "@substrate/connect-known-chains"
CHAIN_SPEC_EXPORT: Final = "rococo_v2_2_asset_hub"
"""The export of :data:`CHAIN_SPEC_PACKAGE` holding the raw chain spec, as a JSON string."""

CHAIN_SPEC_VERSION: Final = PINNED[CHAIN_SPEC_PACKAGE]
"""The version of :data:`CHAIN_SPEC_PACKAGE` the devnet uses (package.json's)."""

CHAIN_SPEC_SHA256: Final = "75380d2835f80582d634390eb052fe9df4a84bc3754feadbd9baee9783d7f77c"
"""sha256 of that version's export, 1,219,284 bytes: :func:`write_chain_spec` refuses any other
bytes (another version, or an edited copy, would start another chain). To move to another
version: bump it in package.json, ``make``, and take the new digest of the export."""

CHAIN_NAME: Final = "asset-hub-rococo"
"""What ``system_chain`` answers (the spec's ``id``; ``system_name`` is "Rococo Asset Hub")."""

SS58_FORMAT: Final = 2
"""``System.SS58Prefix`` of the runtime (the spec's properties do not say; Kusama's prefix)."""

TOKEN_DECIMALS: Final = 12
"""ROC has 12 decimals: 1 ROC = 10**12 planck."""

EXISTENTIAL_DEPOSIT: Final = 3_333_333
"""``Balances.ExistentialDeposit`` in planck; a funded balance must be at least this."""

DEV_BALANCE: Final = 10**18
"""A generous devnet balance: one million ROC."""

FINALITY_POLICY: Final = "devnet-instant"
"""chopsticks finalizes every block it builds, at once; no GRANDPA, no justifications."""

GENESIS_HASH: Final = "0x" + "45" * 32
"""What chopsticks reports as block 0's hash (and what ``CheckGenesis`` signs): frame_system's
``hash69`` placeholder, not blake2-256 of a header. Block 1's parent hash is this too."""

BLOCK_MODES: Final = ("Collator", "Instant", "Batch", "Manual")
"""How blocks are built. ``Collator`` (the devnet's): as a collator does, whenever no block is
being built and extrinsics are pending, one block with all of them; an extrinsic that did not
fit (or whose nonce follows one that did not) waits for the next block instead of being
dropped — chopsticks' Manual mode driven by ``devnet/collator.cjs``, a preload that patches its
transaction pool. The others are chopsticks' own ``build-block-mode``: a block per submitted
extrinsic; a block per burst (100 ms debounce; an extrinsic that does not fit is dropped); only
on ``dev_newBlock``."""

_COLLATOR_PRELOAD = Path(__file__).with_name("collator.cjs")

DEV_URIS: Final = ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve", "//Ferdie")
"""The well-known sr25519 development accounts (devnet only; fund them explicitly)."""

ALICE: Final = "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
"""The public key (account id) of sr25519 ``//Alice``."""

_STARTUP_TIMEOUT = 90.0
_MAX_BALANCE = 2**128 - 1
_SPEC_FILE = "rococo-asset-hub.json"
_STORAGE_FILE = "import-storage.json"
_CONFIG_FILE = "chopsticks.yml"
_LOG_FILE = "chopsticks.log"
_LISTENING = re.compile(r"RPC listening on http://([0-9.]+):(\d+)")
_HEX_ACCOUNT = re.compile(r"0x[0-9a-fA-F]{64}")
# chopsticks passes its config file through a lodash template (``<%= %>`` and ``${…}``).
_TEMPLATE_MARKERS = ("<%", "${")


class ChopsticksError(RuntimeError):
    """chopsticks is missing, could not start, or did not answer in time."""


def node_binary() -> str:
    """The ``node`` executable that runs chopsticks (Node 20 works; chopsticks asks for 22)."""
    try:
        return node_executable()
    except ToolError as error:
        raise ChopsticksError(str(error)) from None


def chopsticks_entry() -> Path:
    """chopsticks' CLI script (where it comes from: :mod:`devnet.tools`).

    ``node_modules/.bin/chopsticks`` is a symlink to this file; running it with ``node``
    directly means the PID we hold is chopsticks' own (it spawns no child processes). Raises
    :class:`ChopsticksError` (one line) when chopsticks is nowhere and cannot be installed.
    """
    try:
        return chopsticks_script()
    except ToolError as error:
        raise ChopsticksError(str(error)) from None


def account_id(key: str) -> str:
    """The 32-byte account id, as ``0x``-hex, of an SS58 address (any prefix) or a hex key."""
    if not isinstance(key, str):
        raise ChopsticksError(f"an account must be an SS58 address or 0x-hex key, got {key!r}")
    if _HEX_ACCOUNT.fullmatch(key):
        return key.lower()
    try:
        public = str(ss58_decode(key))
    except (ValueError, IndexError, TypeError) as error:
        raise ChopsticksError(
            f"not an SS58 address or 32-byte hex key: {key!r} ({error})"
        ) from error
    if len(public) != 64:
        raise ChopsticksError(
            f"{key!r} is not a 32-byte account (decoded to {len(public) // 2} bytes)"
        )
    return "0x" + public.lower()


def _funding_storage(funded: Mapping[str, int]) -> dict[str, object]:
    """The ``import-storage`` object that sets ``System.Account`` of each funded account."""
    entries: list[object] = []
    seen: dict[str, str] = {}
    for key, amount in funded.items():
        account = account_id(key)
        if account in seen:
            raise ChopsticksError(f"{key!r} and {seen[account]!r} are the same account")
        seen[account] = key
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ChopsticksError(f"balance of {key} must be an integer (planck), got {amount!r}")
        if not EXISTENTIAL_DEPOSIT <= amount <= _MAX_BALANCE:
            raise ChopsticksError(
                f"balance of {key} must be between the existential deposit "
                f"({EXISTENTIAL_DEPOSIT} planck) and 2**128 - 1, got {amount}"
            )
        # A string, not a number: chopsticks reads numbers as JS doubles (exact only to 2**53).
        entries.append([[account], {"providers": 1, "data": {"free": str(amount)}}])
    return {"System": {"Account": entries}}


def chain_spec_source() -> Path:
    """The installed npm :data:`CHAIN_SPEC_PACKAGE` the spec is read from (where it comes from:
    :mod:`devnet.tools`; from the per-user cache it is installed on first use). Raises
    :class:`ChopsticksError` (one line) when it is nowhere and cannot be installed."""
    try:
        return chain_spec_package()
    except ToolError as error:
        raise ChopsticksError(str(error)) from None


def check_chain_spec() -> Path:
    """Find the chain spec and check its digest without writing it (what ``devnet up`` does
    before any chain starts); the package folder it came from. Raises :class:`ChopsticksError`
    (one line) as :func:`write_chain_spec` does."""
    return _read_chain_spec()[0]


def write_chain_spec(path: Path) -> Path:
    """Write the Rococo Asset Hub raw chain spec (about 1.2 MB of JSON) to ``path``.

    The bytes are the :data:`CHAIN_SPEC_EXPORT` export of the installed
    :data:`CHAIN_SPEC_PACKAGE` (:func:`chain_spec_source`), read with ``node`` as chopsticks'
    own tooling would, and checked against :data:`CHAIN_SPEC_SHA256` before anything is
    written: a truncated, edited or other version's spec would start another chain.
    """
    spec = _read_chain_spec()[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(spec)
    return path


def _read_chain_spec() -> tuple[Path, bytes]:
    """The package folder and the checked bytes of its export (:func:`write_chain_spec`)."""
    package = chain_spec_source()
    node = node_binary()
    # require() of the package's own folder: no search up the tree for another copy of it. A
    # missing export writes nothing (refused by the digest); a failing require, its message.
    script = (
        "try { process.stdout.write(require(process.argv[1])"
        f"[{json.dumps(CHAIN_SPEC_EXPORT)}] ?? '') }} catch (error) {{ "
        "process.stderr.write(String(error?.message ?? error)); process.exit(1) }"
    )
    try:
        done = subprocess.run(
            [node, "-e", script, str(package)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ChopsticksError(
            f"cannot read the chain spec from {package} with node: {error}"
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.decode(errors="replace").splitlines() if line]
        why = lines[0].strip()[:200] if lines else f"exit code {done.returncode}"
        raise ChopsticksError(f"cannot read the chain spec from {package} with node: {why}")
    if hashlib.sha256(done.stdout).hexdigest() != CHAIN_SPEC_SHA256:
        raise ChopsticksError(
            f"the {CHAIN_SPEC_EXPORT} export of {package} is not the one of "
            f"{CHAIN_SPEC_PACKAGE}@{CHAIN_SPEC_VERSION} (sha256 differs): reinstall that "
            "version there (in a checkout: `make`)"
        )
    return package, done.stdout


def _write_config(
    state_dir: Path, *, spec_path: Path, storage_path: Path, block_mode: str, entry: Path
) -> Path:
    """Write chopsticks' YAML config (host and port are given on the command line)."""
    for path in (spec_path, storage_path):
        if any(marker in str(path) for marker in _TEMPLATE_MARKERS):
            raise ChopsticksError(f"chopsticks cannot take a path containing '<%' or '${{': {path}")
    preload = f"--require {_COLLATOR_PRELOAD} " if block_mode == "Collator" else ""
    lines = [
        "# Written by devnet/chopsticks.py; run by hand with:",
        f"#   node {preload}{entry} \\",
        f"#     --config {state_dir / _CONFIG_FILE} --host {HOST} --port <port>",
        f"genesis: {json.dumps(str(spec_path))}",
        f"import-storage: {json.dumps(str(storage_path))}",
        f"build-block-mode: {'Manual' if block_mode == 'Collator' else block_mode}",
        "",
    ]
    config_path = state_dir / _CONFIG_FILE
    config_path.write_text("\n".join(lines), encoding="utf-8")
    return config_path


def _system_chain(http_url: str, timeout: float) -> str | None:
    """``system_chain`` of the node at ``http_url``, or None while it does not answer (yet)."""
    try:
        answer = call_sync(http_url, "system_chain", timeout=timeout)
    except RpcError:
        return None
    if not isinstance(answer, str):
        raise ChopsticksError(f"{http_url} answers system_chain with {answer!r:.60}, not a name")
    return answer


class ChopsticksProcess(NodeProcess):
    """A running chopsticks started by :func:`start_chopsticks`; a context manager that stops it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        state_dir: Path,
        config_path: Path,
        log_path: Path,
        block_mode: str,
        owns_state_dir: bool,
    ) -> None:
        """Wrap an already started chopsticks; use :func:`start_chopsticks` rather than this."""
        super().__init__(process)
        self.port: int = 0  # set by start_chopsticks once chopsticks announces it
        self.state_dir: Path = state_dir
        self.config_path: Path = config_path
        self.log_path: Path = log_path
        self.block_mode: str = block_mode
        self.finality_policy: str = FINALITY_POLICY
        self._owns_state_dir = owns_state_dir

    @property
    def ws_url(self) -> str:
        """WebSocket JSON-RPC endpoint (subscriptions work here), ``ws://127.0.0.1:<port>``."""
        return f"ws://{HOST}:{self.port}"

    @property
    def http_url(self) -> str:
        """Plain HTTP JSON-RPC (POST only, no subscriptions) on the same port."""
        return f"http://{HOST}:{self.port}"

    def _cleanup(self) -> None:
        """A state directory this object created itself (none was given) is removed."""
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self._owns_state_dir = False

    def __repr__(self) -> str:
        """Show pid, endpoint and block mode."""
        return (
            f"ChopsticksProcess(pid={self.pid}, ws_url={self.ws_url!r}, "
            f"block_mode={self.block_mode!r})"
        )


def start_chopsticks(
    *,
    port: int | None = None,
    funded: Mapping[str, int] | None = None,
    log_path: Path | None = None,
    block_mode: str = "Collator",
    state_dir: Path | None = None,
    timeout: float = _STARTUP_TIMEOUT,
) -> ChopsticksProcess:
    """Start chopsticks (Rococo Asset Hub) on 127.0.0.1 and wait until it serves RPC.

    ``port`` defaults to one the OS picks (chopsticks is started with port 0 and the port is read
    from its log, so there is no race for a free port). A given port must be free: chopsticks
    itself would silently move to one of the next nine ports, which is treated as an error.

    ``funded`` maps accounts (SS58 address of any prefix, or ``0x`` 32-byte public key) to free
    balances in planck, written into ``System.Account`` before the RPC server starts; it
    defaults to //Alice with :data:`DEV_BALANCE`. Pass ``{}`` to fund nobody.

    ``block_mode`` is chopsticks' ``build-block-mode``, one of :data:`BLOCK_MODES`.

    The chain spec, ``import-storage`` file and YAML config are written to ``state_dir`` (a new
    temporary directory, removed by :meth:`ChopsticksProcess.stop`, when not given); the
    process runs there. Output goes to ``log_path`` (appended), by default
    ``state_dir/chopsticks.log``.

    Raises :class:`ChopsticksError` when node or chopsticks is missing, an argument is invalid,
    the port is busy, the process exits, or it does not serve within ``timeout`` seconds
    (start-up takes 10-20 s: the runtime is compiled and block 1 built first); the message
    includes the log tail.
    """
    if block_mode not in BLOCK_MODES:
        raise ChopsticksError(
            f"block mode must be one of {', '.join(BLOCK_MODES)}, got {block_mode!r}"
        )
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
    ):
        raise ChopsticksError(f"port must be in 1..65535, got {port!r}")
    storage = _funding_storage({ALICE: DEV_BALANCE} if funded is None else funded)
    node = node_binary()
    entry = chopsticks_entry()
    if port is not None and not port_is_free(port):
        raise ChopsticksError(
            f"port {port} on {HOST} is busy: stop what uses it or pick another port"
        )

    owns_state_dir = state_dir is None
    if state_dir is None:
        state_dir = Path(tempfile.mkdtemp(prefix="chopsticks-"))
    state_dir = state_dir.resolve()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        spec_path = write_chain_spec(state_dir / _SPEC_FILE)
        storage_path = state_dir / _STORAGE_FILE
        storage_path.write_text(json.dumps(storage, indent=1), encoding="utf-8")
        config_path = _write_config(
            state_dir,
            spec_path=spec_path,
            storage_path=storage_path,
            block_mode=block_mode,
            entry=entry,
        )
        log_path = (state_dir / _LOG_FILE) if log_path is None else log_path.resolve()
        log_path.parent.mkdir(parents=True, exist_ok=True)
    except BaseException:
        if owns_state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
        raise

    preload = ["--require", str(_COLLATOR_PRELOAD)] if block_mode == "Collator" else []
    command = [
        node,
        *preload,
        str(entry),
        "--config",
        str(config_path),
        "--host",
        HOST,
        "--port",
        str(port or 0),
    ]
    # chopsticks lets $PORT override --port, and loads a .env from its working directory.
    env = {key: value for key, value in os.environ.items() if key != "PORT"}
    env.setdefault("LOG_LEVEL", "info")
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            env=env,
            start_new_session=True,
        )
    chain = ChopsticksProcess(
        process,
        state_dir=state_dir,
        config_path=config_path,
        log_path=log_path,
        block_mode=block_mode,
        owns_state_dir=owns_state_dir,
    )
    deadline = time.monotonic() + timeout
    try:
        _wait_until_serving(chain, process, log_offset, requested=port, deadline=deadline)
    except BaseException as error:
        tail = log_tail(log_path)
        chain.stop()  # also removes a temporary state directory; the error quotes the log tail
        if isinstance(error, ChopsticksError):
            raise ChopsticksError(f"{error}; its log ends:\n{tail}") from None
        raise
    return chain


def _wait_until_serving(
    chain: ChopsticksProcess,
    process: subprocess.Popen[bytes],
    log_offset: int,
    *,
    requested: int | None,
    deadline: float,
) -> None:
    """Poll the log for the listening line, then ``system_chain`` over HTTP."""
    while True:
        if process.poll() is not None:
            raise ChopsticksError(
                f"chopsticks exited with code {process.returncode} while starting"
            )
        if chain.port == 0:
            announced = _listening_port_after(chain.log_path, log_offset)
            if announced is not None:
                if requested is not None and announced != requested:
                    raise ChopsticksError(
                        f"port {requested} on {HOST} was taken while chopsticks started "
                        f"(it moved to {announced})"
                    )
                chain.port = announced
        if chain.port != 0:
            answered = _system_chain(chain.http_url, timeout=2.0)
            if answered is not None:
                if answered != CHAIN_NAME:
                    raise ChopsticksError(
                        f"{chain.http_url} answers system_chain {answered!r}, not {CHAIN_NAME!r}"
                    )
                return
        if time.monotonic() > deadline:
            where = chain.http_url if chain.port else "its RPC port"
            raise ChopsticksError(f"chopsticks did not serve on {where} in time")
        time.sleep(0.1)


def _listening_port_after(log_path: Path, offset: int) -> int | None:
    """:func:`_listening_port` in what was appended to ``log_path`` after ``offset``."""
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    match = _LISTENING.search(ANSI_CODES.sub("", text))
    return int(match.group(2)) if match else None
