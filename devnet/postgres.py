"""A throwaway local PostgreSQL server, for the devnet and the tests.

Usage::

    directory = Path(tempfile.mkdtemp())
    directory.chmod(0o711)  # as root, the server runs as "nobody", which must reach it
    server = start_postgres(directory)
    try:
        ledger = open_ledger(server.url)  # postgresql+psycopg://passerelle@127.0.0.1:<port>/passerelle
        other = server.create_database("scratch")  # another empty database, its URL
    finally:
        server.stop()  # by PID: SIGINT (fast shutdown) to its process group, SIGKILL after a grace

What :func:`start_postgres` does, and why:

1. **Binaries** (:func:`postgres_bin_dir`). The pip package ``pgserver`` (the ``postgres`` and
   ``dev`` extras install it) carries PostgreSQL 16's ``initdb``, ``postgres`` and friends in
   ``pgserver/pginstall/bin``; they are found through the import system without importing
   ``pgserver`` (whose import runs code). Without it, Debian's ``postgresql`` package
   (``/usr/lib/postgresql/<major>/bin``, newest major first). Neither: :class:`PostgresUnavailable`,
   one line saying how to get one.
2. **A new cluster** in ``directory/data`` (``initdb``: superuser ``passerelle``, ``trust``
   authentication, UTF-8, C locale). The server listens on 127.0.0.1 only, so trust means "any
   local process", which is what a devnet wants and nothing else should. ``fsync`` is off
   unless ``durable=True``: killing a *client* loses nothing either way (the server holds every
   commit); only a machine crash would, and this server's data is thrown away with it.
3. **Not as root.** ``initdb`` and ``postgres`` refuse to run as root. When we are root, both
   run as uid/gid 65534 ("nobody") through ``setpriv``, and ``directory/data`` is given to that
   user first. ``directory`` and everything above it must be traversable by "nobody": ``/tmp``
   is, a 0700 directory (``mkdtemp``'s, pytest's ``tmp_path``) is not (checked up front).
4. **Start** ``postgres`` itself (not ``pg_ctl``, so the PID held is the server's own) in a new
   process group (:class:`devnet.process.NodeProcess`) on a free port, without a Unix socket
   (no socket directory to own). If another process took the port between the choice and the
   bind, it retries on another one.
5. **Ready** when ``pg_isready`` says the server accepts connections; then the database
   ``passerelle`` is created and :attr:`PostgresProcess.url` points at it.

Two servers on one machine (two pytest-xdist workers, two devnets) never collide: each has its
own directory and port. The server's log is ``directory/postgres.log``; errors quote its tail.
The caller owns ``directory`` and removes it after :meth:`PostgresProcess.stop`.

``passerelle devnet up --postgres`` records its server in ``devnet.json``
(:meth:`PostgresProcess.record`) and a later ``devnet down``, another process, stops it
(:func:`stop_recorded`) with the same fast shutdown as :meth:`PostgresProcess.stop`.

**Which process is "our server"** (:func:`running_server`). ``devnet.json`` is a file: anyone who
can write the state folder can make it name any pid, binary, port argument and start time, and
every one of those can be read from ``/proc`` for somebody else's server (the test suite's, a
system PostgreSQL started from the same binaries). So the record is not the identity. The data
directory is: the caller names the directory it gave :func:`start_postgres`, the data directory
is computed from it (``directory/data``), the pid comes from that cluster's own
``postmaster.pid``, and the process must have ``-D <that path>`` in its command line *and* that
path as its working directory (the postmaster chdirs there). A server of another cluster fails
both, whatever a record says; a symlinked ``postgres/`` fails the working-directory check (the
kernel reports the real path). The recorded port is only used as an int, checked against the
server's own ``-c port=N``, before ``pg_isready`` is pointed at it.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from devnet import pids
from devnet.anvil import free_port
from devnet.process import HOST, STOP_TIMEOUT, NodeProcess, log_tail
from relayer.checkpoints import read_small_file

__all__ = [
    "POSTGRES_USER",
    "PostgresError",
    "PostgresProcess",
    "PostgresUnavailable",
    "answers",
    "postgres_bin_dir",
    "running_server",
    "start_postgres",
    "stop_leftover",
    "stop_recorded",
]

POSTGRES_USER = "passerelle"  # the cluster's superuser, and the database the URL names
DEBIAN_ROOT = Path("/usr/lib/postgresql")
UNPRIVILEGED = 65534  # uid and gid "nobody": the server's owner when we are root
_STARTUP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3
_PROGRAMS = ("initdb", "postgres", "pg_isready", "createdb")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PID_FILE = "postmaster.pid"  # in the data directory; its first line is the postmaster's pid
_DECIMAL = re.compile(r"[1-9][0-9]{0,9}")  # a pid or port: ASCII digits only (int() takes "١٢")


class PostgresError(RuntimeError):
    """The server could not be set up, started or used; ``str()`` says why (with its log)."""


class PostgresUnavailable(PostgresError):
    """No PostgreSQL binaries on this machine (neither ``pgserver`` nor Debian's package)."""


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb``, ``postgres``, ``pg_isready`` and ``createdb``.

    The ``pgserver`` package's first, then Debian's newest; :class:`PostgresUnavailable` if none.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    if DEBIAN_ROOT.is_dir():
        majors = [p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(majors, key=lambda p: -int(p.name))]
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in _PROGRAMS):
            return directory
    raise PostgresUnavailable(
        "no PostgreSQL binaries: install the pip package pgserver "
        "(pip install 'passerelle[postgres]') or Debian's postgresql"
    )


class PostgresProcess(NodeProcess):
    """A running server started by :func:`start_postgres`; a context manager that stops it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        port: int,
        data_dir: Path,
        log_path: Path,
        bin_dir: Path,
    ) -> None:
        """Wrap an already started server; use :func:`start_postgres` rather than this."""
        super().__init__(process)
        self.port: int = port
        self.data_dir: Path = data_dir
        self.log_path: Path = log_path
        self.bin_dir: Path = bin_dir

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGINT to the server's process group, then SIGKILL after ``timeout`` s. Idempotent.

        SIGINT is PostgreSQL's "fast shutdown": sessions are ended, a checkpoint written, and
        the server is gone in about 15 ms. SIGTERM would be its "smart shutdown", which waits
        for every client to disconnect: a single pooled connection left open holds it forever.
        """
        if self._process.poll() is None:
            self._signal(signal.SIGINT)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait(timeout=timeout)

    def url_for(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg 3 driver, no password)."""
        return f"postgresql+psycopg://{POSTGRES_USER}@{HOST}:{self.port}/{database}"

    @property
    def url(self) -> str:
        """The URL of the database ``passerelle``, created at start."""
        return self.url_for(POSTGRES_USER)

    def create_database(self, name: str) -> str:
        """Create the empty database ``name`` (lowercase letters, digits, ``_``); its URL."""
        if not _NAME.fullmatch(name):
            raise PostgresError(f"database name {name!r} is not [a-z_][a-z0-9_]{{0,62}}")
        self._client("createdb", name)
        return self.url_for(name)

    def _client(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), "-h", HOST, "-p", str(self.port)]
        command += ["-U", POSTGRES_USER, *args]
        result = subprocess.run(
            command, capture_output=True, text=True, env=_environment(), check=False, timeout=60
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise PostgresError(f"{program} {' '.join(args)} failed: {' '.join(detail)}")

    def record(self) -> dict[str, object]:
        """This server as a ``devnet.json`` entry, for ``status`` and the operator: the pid, the
        port :func:`answers` probes and the URL. None of it identifies the server when it is
        read back (:func:`running_server` does, from the data directory)."""
        return {
            "chain": "postgres",  # the name `devnet down` prints
            "kind": "postgres",
            "program": "postgres",
            "pid": self.pid,
            "port": self.port,
            "binary": str(self.bin_dir / "postgres"),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            "start_time": pids.adopt(self),
            "url": self.url,
        }

    def __repr__(self) -> str:
        """Show pid, url and data directory."""
        return f"PostgresProcess(pid={self.pid}, url={self.url!r}, data_dir={self.data_dir})"


def start_postgres(
    directory: Path, *, durable: bool = False, timeout: float = _STARTUP_TIMEOUT
) -> PostgresProcess:
    """Create a cluster in ``directory/data``, start it on a free port, create ``passerelle``.

    ``directory`` must exist and must not yet hold ``data``. Returns once the server accepts
    connections. Raises :class:`PostgresUnavailable` without binaries, :class:`PostgresError`
    (with the log's tail) when initdb or the server fails or does not answer within
    ``timeout`` seconds.
    """
    bin_dir = postgres_bin_dir()
    directory = directory.resolve()
    data_dir = directory / "data"
    log_path = directory / "postgres.log"
    demote = os.geteuid() == 0
    if demote:
        _check_reachable(directory)
    try:
        data_dir.mkdir(mode=0o700)
    except OSError as error:
        raise PostgresError(f"cannot create the data directory {data_dir}: {error}") from None
    if demote:
        os.chown(data_dir, UNPRIVILEGED, UNPRIVILEGED)

    initdb = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", POSTGRES_USER]
    initdb += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
    with log_path.open("ab") as log:
        done = subprocess.run(
            _as_server_user(initdb, demote),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env=_environment(),
            check=False,
            timeout=120,
        )
    if done.returncode != 0:
        raise PostgresError(
            f"initdb failed (exit {done.returncode}) in {data_dir}; its log ends:\n"
            f"{log_tail(log_path)}"
        )

    for _ in range(_PORT_ATTEMPTS):
        server = _launch(bin_dir, data_dir, log_path, free_port(), durable=durable, demote=demote)
        try:
            if _wait_ready(server, timeout):
                server._client("createdb", POSTGRES_USER)
                return server
        except BaseException:
            server.stop()
            raise
    raise PostgresError(
        f"PostgreSQL could not bind a port on {HOST} in {_PORT_ATTEMPTS} attempts; its log "
        f"ends:\n{log_tail(log_path)}"
    )


def _launch(
    bin_dir: Path, data_dir: Path, log_path: Path, port: int, *, durable: bool, demote: bool
) -> PostgresProcess:
    settings = {
        "listen_addresses": HOST,
        "port": str(port),
        "unix_socket_directories": "",
        "fsync": "on" if durable else "off",
        "synchronous_commit": "on" if durable else "off",
        "full_page_writes": "on" if durable else "off",
        "lc_messages": "C",  # log lines in English, for the error messages that quote them
    }
    command = [str(bin_dir / "postgres"), "-D", str(data_dir)]
    for key, value in settings.items():
        command += ["-c", f"{key}={value}"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            _as_server_user(command, demote),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env=_environment(),
            start_new_session=True,  # its own process group: stop() signals exactly that
        )
    return PostgresProcess(
        process, port=port, data_dir=data_dir, log_path=log_path, bin_dir=bin_dir
    )


def _wait_ready(server: PostgresProcess, timeout: float) -> bool:
    """True once the server accepts connections; False if it exited because the port was
    taken (the caller retries on another); :class:`PostgresError` otherwise."""
    probe = [str(server.bin_dir / "pg_isready"), "-q", "-h", HOST, "-p", str(server.port)]
    probe += ["-U", POSTGRES_USER, "-d", "postgres"]
    deadline = time.monotonic() + timeout
    while True:
        if not server.running:
            server.stop()
            tail = log_tail(server.log_path)
            if "could not bind" in tail or "could not create any TCP/IP sockets" in tail:
                return False
            raise PostgresError(
                f"PostgreSQL exited before accepting connections on port {server.port}; its "
                f"log ends:\n{tail}"
            )
        answer = subprocess.run(probe, env=_environment(), check=False, timeout=10)
        if answer.returncode == 0:
            return True
        if time.monotonic() > deadline:
            raise PostgresError(
                f"PostgreSQL did not accept connections on port {server.port} within "
                f"{timeout:g} s; its log ends:\n{log_tail(server.log_path)}"
            )
        time.sleep(0.02)


def running_server(directory: Path) -> int | None:
    """The pid of the live PostgreSQL serving the cluster in ``directory/data``, else None.

    ``directory`` is the one given to :func:`start_postgres`. The pid is the first line of the
    cluster's ``postmaster.pid`` (read as a small regular file: a FIFO or ``/dev/zero``
    planted there is not read), and the process behind it must run in that data directory:
    ``-D <directory/data>`` in its command line and that path as its working directory. A stale
    file whose pid the kernel recycled, or one edited to name another server, fails both.
    """
    data_dir = directory / "data"
    try:
        text = read_small_file(data_dir / PID_FILE, limit=4096)
    except (OSError, UnicodeDecodeError):
        return None
    first = "" if text is None else text.partition("\n")[0].strip()
    if not _DECIMAL.fullmatch(first):
        return None
    pid = int(first)
    return pid if _runs_in(pid, data_dir) else None


def _runs_in(pid: int, data_dir: Path) -> bool:
    """``pid`` is a live process started with ``-D data_dir`` whose working directory it is."""
    seen = pids.inspect(pid)
    if seen is None or seen[0] in pids.GONE_STATES:
        return False
    want = str(data_dir)
    if not any(a == "-D" and b == want for a, b in itertools.pairwise(seen[2])):
        return False
    try:
        return str(psutil.Process(pid).cwd()) == want
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # not readable: not one we started
        return False


def _port_of(pid: int) -> int | None:
    """The port in the server's own ``-c port=N`` (as :func:`_launch` starts it), else None.
    Only ``-c port=<digits>`` counts: any other ``-c`` value (``listen_addresses=…``) does not."""
    seen = pids.inspect(pid)
    for flag, value in itertools.pairwise([] if seen is None else seen[2]):
        digits = value.removeprefix("port=")
        if flag == "-c" and digits != value and _DECIMAL.fullmatch(digits):
            return int(digits)
    return None


def answers(entry: dict[str, Any], directory: Path) -> bool:
    """The server of ``directory`` (:func:`running_server`) is the recorded pid, listens on the
    recorded port and accepts connections (this machine's ``pg_isready``).

    Nothing recorded is executed: ``devnet.json`` is a file anyone with write access to the
    state folder can edit, so the probe is the local installation's ``pg_isready``, and it is
    only pointed at a port the server of ``directory`` was started on."""
    port, recorded = entry.get("port"), entry.get("pid")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return False
    pid = running_server(directory)
    if pid is None or pid != recorded or _port_of(pid) != port:
        return False
    try:
        bin_dir = postgres_bin_dir()
    except PostgresUnavailable:
        return False
    probe = [str(bin_dir / "pg_isready"), "-q", "-h", HOST, "-p", str(port)]
    try:
        done = subprocess.run(
            [*probe, "-U", POSTGRES_USER, "-d", "postgres"],
            env=_environment(),
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def stop_recorded(entry: dict[str, Any], directory: Path, timeout: float = STOP_TIMEOUT) -> str:
    """Stop the server of ``directory`` that a ``devnet.json`` entry records; one line.

    The server signalled is the one :func:`running_server` finds in ``directory``, whatever pid
    the entry names: a record edited to name another server gets "is not ours" and no signal,
    and a record whose pid or start time went stale still stops the server that runs in our
    data directory. SIGINT (fast shutdown, see :meth:`PostgresProcess.stop`: SIGTERM would wait
    for every client, and a relayer left running would hold the server for ever) to its process
    group, SIGKILL after ``timeout`` s. :class:`PostgresError` (one line) if it cannot be
    signalled or outlives both.
    """
    recorded = entry.get("pid")
    pid = running_server(directory)
    if pid is None:
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
            pids.CHILDREN.pop(recorded, None)
            seen = pids.inspect(recorded)
            if seen is not None and seen[0] not in pids.GONE_STATES:
                return (
                    f"postgres: pid {recorded} is not ours (not the server of "
                    f"{directory / 'data'}; nothing signalled)"
                )
        return f"postgres: pid {recorded} was not running (nothing signalled)"
    return _stop(pid, directory, timeout)


def stop_leftover(directory: Path, timeout: float = STOP_TIMEOUT) -> str | None:
    """Stop a server still running in ``directory/data`` (:func:`running_server`) before that
    directory is moved away or reused; its line, or None when none runs.

    A record can be lost or no longer recognised while its server runs on; moving its data
    directory from under it would leak the server (and ``down`` would never know it).
    :class:`PostgresError` (one line) if it cannot be stopped."""
    pid = running_server(directory)
    return None if pid is None else _stop(pid, directory, timeout)


def _stop(pid: int, directory: Path, timeout: float) -> str:
    """Fast shutdown of ``pid``, the verified server of ``directory``; its line."""
    done = f"postgres pid {pid} on {HOST}:{_port_of(pid) or '?'}"
    child = pids.CHILDREN.pop(pid, None)
    if isinstance(child, PostgresProcess):  # started by this process: reap it too
        child.stop(timeout)
        return f"postgres: stopped {done}"
    how = "stopped"
    try:
        server = psutil.Process(pid)
        pids.signal_group(pid, signal.SIGINT)  # its own group (start_new_session): backends too
        try:
            server.wait(timeout)
        except psutil.TimeoutExpired:
            pids.signal_group(pid, signal.SIGKILL)
            server.wait(timeout)
            how = "killed (SIGKILL after SIGINT timed out)"
    except psutil.NoSuchProcess:
        pass  # gone between the check and the signal: what we wanted
    except (PermissionError, psutil.AccessDenied, psutil.TimeoutExpired) as error:
        raise PostgresError(
            f"a PostgreSQL (pid {pid}) still runs in {directory} and could not be stopped "
            f"({type(error).__name__}); stop it first"
        ) from None
    return f"postgres: {how} {done}"


def _as_server_user(command: list[str], demote: bool) -> list[str]:
    if not demote:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise PostgresError("running as root needs setpriv (util-linux) to start PostgreSQL")
    ids = str(UNPRIVILEGED)
    return [setpriv, f"--reuid={ids}", f"--regid={ids}", "--clear-groups", *command]


def _check_reachable(directory: Path) -> None:
    """Fail clearly when "nobody" cannot reach ``directory`` (initdb would, less clearly)."""
    for folder in (directory, *directory.parents):
        mode = folder.stat()
        owned = mode.st_uid == UNPRIVILEGED
        if not (mode.st_mode & stat.S_IXOTH or (owned and mode.st_mode & stat.S_IXUSR)):
            raise PostgresError(
                f"{folder} is not traversable by uid {UNPRIVILEGED} (PostgreSQL's user when run "
                "as root): chmod o+x it, or put the server's directory elsewhere"
            )


def _environment() -> dict[str, str]:
    """Ours without PG* variables (PGDATA, PGPORT, … would redirect the tools), C locale."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env
