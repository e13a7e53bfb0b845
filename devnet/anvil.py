"""Start and stop local anvil chains (npm ``@foundry-rs/anvil`` 1.7.1, or an anvil on PATH).

Usage::

    with start_anvil(chain_id=31337, block_time=None) as chain:
        print(chain.rpc_url)  # http://127.0.0.1:<a free port>

Every chain binds 127.0.0.1 only. ``start_anvil`` returns once ``eth_chainId`` answers with
the requested chain id, or raises :class:`AnvilError` with the tail of anvil's log (busy port,
anvil not installed, crash, timeout). Which anvil runs is :func:`devnet.tools.anvil_path`'s
choice: the checkout's ``node_modules``, PATH, or a per-user cache npm fills on first use.
``AnvilProcess.stop`` stops exactly the process it started, by PID.

The devnet uses anvil's well-known development accounts (:data:`DEV_PRIVATE_KEYS`): they hold
no value anywhere, and must never be used outside a local chain.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from adapters.jsonrpc import RpcError, call_sync
from devnet.process import HOST, NodeProcess, free_ports, log_tail, port_is_free
from devnet.tools import ToolError, anvil_path
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_quantity

__all__ = [
    "DEV_ADDRESSES",
    "DEV_PRIVATE_KEYS",
    "HOST",
    "AnvilError",
    "AnvilProcess",
    "anvil_binary",
    "free_port",
    "start_anvil",
]

DEV_PRIVATE_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
"""Private keys of anvil's ten default accounts (mnemonic "test test … junk"): devnet only."""

DEV_ADDRESSES: tuple[str, ...] = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
    "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
    "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
)
"""Checksummed addresses of :data:`DEV_PRIVATE_KEYS`, in the same order (pre-funded by anvil)."""

_STARTUP_TIMEOUT = 30.0


class AnvilError(RuntimeError):
    """anvil is missing, could not start, or did not answer in time."""


def anvil_binary() -> Path:
    """The anvil executable to run (where it comes from: :mod:`devnet.tools`).

    When the npm package's platform binary is there it is run directly, so the PID we hold is
    anvil's own (stopping the node wrapper would not stop its child on SIGKILL). Raises
    :class:`AnvilError` (one line) when anvil is nowhere and cannot be installed.
    """
    try:
        return anvil_path()
    except ToolError as error:
        raise AnvilError(str(error)) from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    return free_ports(1)[0]


def _chain_id(rpc_url: str, timeout: float) -> int | None:
    """``eth_chainId`` of the node at ``rpc_url``, or None while it does not answer (yet).

    A garbled answer is an :class:`AnvilError`: something that is not anvil holds the port.
    """
    try:
        answer = call_sync(rpc_url, "eth_chainId", timeout=timeout)
    except RpcError:
        return None
    try:
        return parse_quantity(answer, "eth_chainId", 32)
    except DecodeError as error:
        raise AnvilError(f"{rpc_url} is not anvil: {error}") from None


class AnvilProcess(NodeProcess):
    """A running anvil started by :func:`start_anvil`; a context manager that stops it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        port: int,
        chain_id: int,
        log_path: Path,
        owns_log: bool,
    ) -> None:
        """Wrap an already started anvil; use :func:`start_anvil` rather than this."""
        super().__init__(process)
        self.port: int = port
        self.chain_id: int = chain_id
        self.log_path: Path = log_path
        self._owns_log = owns_log

    @property
    def rpc_url(self) -> str:
        """HTTP JSON-RPC endpoint, ``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"

    def _cleanup(self) -> None:
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)
            self._owns_log = False

    def __repr__(self) -> str:
        """Show pid, port and chain id."""
        return f"AnvilProcess(pid={self.pid}, rpc_url={self.rpc_url!r}, chain_id={self.chain_id})"


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def start_anvil(
    *,
    port: int | None = None,
    chain_id: int,
    block_time: float | None = 1.0,
    log_path: Path | None = None,
    timeout: float = _STARTUP_TIMEOUT,
    extra_args: tuple[str, ...] = (),
) -> AnvilProcess:
    """Start anvil on 127.0.0.1 and wait until it answers ``eth_chainId`` with ``chain_id``.

    ``port`` defaults to a free one. ``block_time`` mines a block every so many seconds;
    ``None`` means automine (a block per transaction, for fast tests). anvil's output goes to
    ``log_path`` (appended) or to a temporary file removed by :meth:`AnvilProcess.stop`.
    ``extra_args`` are passed through (e.g. ``("--hardfork", "cancun")``).

    Raises :class:`AnvilError` when anvil is not installed, the port is busy, the process exits,
    or it does not answer within ``timeout`` seconds; the message includes the log tail.
    """
    if not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id <= 0:
        raise AnvilError(f"chain id must be a positive integer, got {chain_id!r}")
    if block_time is not None and block_time <= 0:
        raise AnvilError(f"block time must be positive (or None for automine), got {block_time}")
    binary = anvil_binary()
    if port is not None:
        if not port_is_free(port):
            raise AnvilError(
                f"port {port} on {HOST} is busy: stop what uses it or pick another port"
            )
        return _spawn(binary, port, chain_id, block_time, log_path, timeout, extra_args)
    # A port the OS called free can be taken by another process before anvil binds it (tests
    # on parallel workers start chains all the time): then another free port, a few times.
    attempt = 1
    while True:
        try:
            return _spawn(binary, free_port(), chain_id, block_time, log_path, timeout, extra_args)
        except _PortTaken:
            if attempt == _PORT_ATTEMPTS:
                raise
            attempt += 1


_PORT_ATTEMPTS = 3
"""Free ports tried by :func:`start_anvil` when it picks the port itself."""


class _PortTaken(AnvilError):
    """anvil exited because its port was taken after it was found free."""


def _spawn(  # noqa: PLR0917 - start_anvil's own arguments, handed on
    binary: Path,
    port: int,
    chain_id: int,
    block_time: float | None,
    log_path: Path | None,
    timeout: float,
    extra_args: tuple[str, ...],
) -> AnvilProcess:
    """One start of anvil on ``port`` (:func:`start_anvil`)."""
    owns_log = log_path is None
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix=f"anvil-{chain_id}-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    command = [
        str(binary),
        "--host",
        HOST,
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
    ]
    if block_time is not None:
        command += ["--block-time", _format_seconds(block_time)]
    command += list(extra_args)

    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Not the caller's folder: a detached chain must not keep that one busy.
            cwd=log_path.parent,
            start_new_session=True,
        )
    anvil = AnvilProcess(
        process, port=port, chain_id=chain_id, log_path=log_path, owns_log=owns_log
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                tail = log_tail(log_path)
                taken = _PortTaken if "Address already in use" in tail else AnvilError
                raise taken(
                    f"anvil exited with code {process.returncode} before answering on "
                    f"{anvil.rpc_url} (port busy?); its log ends:\n{tail}"
                )
            answered = _chain_id(anvil.rpc_url, timeout=1.0)
            if answered is not None:
                if answered != chain_id:
                    raise AnvilError(
                        f"{anvil.rpc_url} answers chain id {answered}, not {chain_id}: "
                        "another node holds the port"
                    )
                break
            if time.monotonic() > deadline:
                raise AnvilError(
                    f"anvil did not answer on {anvil.rpc_url} within {timeout:g} s; "
                    f"its log ends:\n{log_tail(log_path)}"
                )
            time.sleep(0.05)
    except BaseException:
        anvil.stop()  # also removes a temporary log; the error already quotes its tail
        raise
    return anvil
