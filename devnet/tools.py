"""Where the devnet finds the node tools it runs: anvil (the EVM chains), chopsticks (Asset Hub),
and the npm package chopsticks' chain spec is read from (``@substrate/connect-known-chains``).

For each of them the first of these places that has it wins:

1. **The checkout's** ``node_modules``, when this code runs from a Passerelle checkout (the
   folder above ``devnet/`` holds our ``package.json``): ``make`` installs there, with ``npm
   ci``, exactly the versions ``package-lock.json`` pins.
2. **PATH**: ``anvil`` from foundryup or Homebrew, ``chopsticks`` from ``npm install -g``, in
   whatever version that is. An npm ``.bin`` folder on PATH works too (the tests of an installed
   package put the checkout's ``node_modules/.bin`` there). The chain-spec package has no
   command: it is taken from the ``node_modules`` the ``chopsticks`` on PATH lives in, when it
   is there at the pinned version (a ``.bin`` folder on PATH, or a global install that has it).
3. **The per-user cache** :func:`cache_dir` (``$XDG_CACHE_HOME/passerelle/node``, by default
   ``~/.cache/passerelle/node``): on first use ``npm ci --ignore-scripts`` installs there the
   tree locked by the ``package.json`` and ``package-lock.json`` shipped in ``devnet/npm/``
   (:data:`PINNED` at the top, every dependency below at the version, URL and integrity the
   lock names), announced by one line on stderr, and reused from then on. Without ``npm`` on
   PATH that step fails with one line (:class:`ToolError`) naming what to install.

Whichever place it comes from, anvil runs as its native binary when the npm package's
platform binary sits next to the node wrapper, and chopsticks as ``node chopsticks.cjs``: the
pid the devnet records is then the chain's own process (killing a wrapper would leave its
child running), and ``devnet down`` recognises it by that path in its command line.

The chain spec is never part of Passerelle itself: ``@substrate/connect-known-chains`` is
published under GPL-3.0-only, Passerelle under Apache-2.0, so it is read at run time from the
installed npm package (:func:`devnet.chopsticks.write_chain_spec` checks its sha256), like the
tools, which are not redistributed either.

The proof-of-stake chain's two tools (``passerelle devnet up --pos``, ``docs/pos-devnet.md``),
Lodestar and the EthereumJS client (:data:`POS_PINNED`), come from a separate npm project,
``devnet/npm-pos/`` (its ``package.json`` pins them and the ``overrides`` they need), installed by
``make pos-tools``; or from PATH (``lodestar``, ``ethereumjs``) when the package behind the
command is the pinned version. The per-user cache does not cover them: their install compiles
native code (g++, make; ~45 CPU s and ~450 MB even with only the three add-ons the devnet loads
rebuilt, see the Makefile's ``pos-tools``), which no first ``devnet up`` should start behind
the user's back, so outside a checkout a missing one is one line (:class:`ToolError`) saying how
to get it.

Nothing here runs at import: a lookup happens when a chain is about to start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

__all__ = [
    "CACHE_MANIFEST",
    "CHECKOUT_NODE_MODULES",
    "PINNED",
    "POS_PINNED",
    "ToolError",
    "anvil_path",
    "cache_dir",
    "chain_spec_package",
    "checkout_node_modules",
    "chopsticks_script",
    "ethereumjs_script",
    "lodestar_script",
    "node_executable",
    "pos_node_modules",
]

PINNED: Final[dict[str, str]] = {
    "@foundry-rs/anvil": "1.7.1",
    "@acala-network/chopsticks": "1.5.1",
    "@substrate/connect-known-chains": "1.10.3",
}
"""The npm packages the devnet uses, at the versions of the repository's ``package.json``
(solc aside: compiling is a checkout-only step). A cache install gets them, with every one of
their dependencies, from the lock :data:`CACHE_MANIFEST` (tests check all three agree)."""

CACHE_MANIFEST: Final = ("npm", "package.json", "package-lock.json")
"""Package data of ``devnet``: the folder, and the two files ``npm ci`` installs the cache from.
The lock is the repository's ``package-lock.json`` without solc's part (``devnet/npm/README.md``
says how it is made)."""

POS_PINNED: Final[dict[str, str]] = {
    "@chainsafe/lodestar": "1.5.1",
    "@ethereumjs/client": "0.10.5",
}
"""The proof-of-stake chain's tools, at the versions of ``devnet/npm-pos/package.json`` (a test
checks they agree). Lodestar 1.5.1 is the only one whose whole tree the registry serves; it
stops at Capella, so the chain is Shanghai (``docs/pos-devnet.md``)."""

_POS_SCRIPTS: Final[dict[str, tuple[str, str]]] = {
    # command on PATH: (npm package, its CLI script inside the package folder)
    "lodestar": ("@chainsafe/lodestar", "lib/index.js"),
    "ethereumjs": ("@ethereumjs/client", "dist/esm/bin/cli.js"),
}

_CHAIN_SPEC_PACKAGE = "@substrate/connect-known-chains"
_PROJECT_PACKAGE_NAME = "passerelle-devnet"  # the "name" in the checkout's package.json
_COMPLETE = ".passerelle-complete"  # written last into a cache install: the install finished
_NPM_TIMEOUT = 900.0  # chopsticks and its dependencies are ~100 MB on a slow line


class ToolError(RuntimeError):
    """A node tool is not installed anywhere and cannot be installed; ``str()`` is one line."""


def _find_checkout_node_modules() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    try:
        manifest = json.loads((root / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an installed package: site-packages has no package.json of ours
    if not isinstance(manifest, dict) or manifest.get("name") != _PROJECT_PACKAGE_NAME:
        return None
    return root / "node_modules"


CHECKOUT_NODE_MODULES: Path | None = _find_checkout_node_modules()
"""The checkout's ``node_modules`` (whether or not ``npm ci`` has filled it yet), or None when
Passerelle runs from an installed package. Tests point it elsewhere to hide the checkout."""


def checkout_node_modules() -> Path | None:
    """:data:`CHECKOUT_NODE_MODULES`, read at call time (so a test's replacement counts)."""
    return CHECKOUT_NODE_MODULES


def cache_dir() -> Path:
    """Where cache installs live: ``$XDG_CACHE_HOME/passerelle/node``, else
    ``~/.cache/passerelle/node``. A relative ``XDG_CACHE_HOME`` is ignored, as the XDG base
    directory specification requires."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "passerelle" / "node"


# --------------------------------------------------------------------------- one tool


def _native_anvil(node_modules: Path) -> Path | None:
    """The platform binary npm ``@foundry-rs/anvil`` installs as an optional dependency."""
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system())
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if system is None or arch is None:
        return None
    native = node_modules / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    return native if native.is_file() and os.access(native, os.X_OK) else None


def _anvil_in(node_modules: Path) -> Path | None:
    wrapper = node_modules / ".bin" / "anvil"
    return _native_anvil(node_modules) or (wrapper if wrapper.exists() else None)


def _anvil_on_path() -> Path | None:
    found = shutil.which("anvil")
    if found is None:
        return None
    resolved = Path(found).resolve()
    # An npm .bin link to the node wrapper (…/node_modules/@foundry-rs/anvil/bin.mjs): prefer
    # the native binary next to it, for the pid's sake (module docstring).
    if resolved.parent.name == "anvil" and resolved.parent.parent.name == "@foundry-rs":
        native = _native_anvil(resolved.parents[2])
        if native is not None:
            return native
    return Path(found)


def _chopsticks_in(node_modules: Path) -> Path | None:
    script = node_modules / "@acala-network" / "chopsticks" / "chopsticks.cjs"
    return script if script.is_file() else None


def _chopsticks_on_path() -> Path | None:
    found = shutil.which("chopsticks")
    if found is None:
        return None
    # npm links .bin/chopsticks to chopsticks.cjs; the devnet runs that script with node. A
    # shim that is no script (volta, pnpm) cannot be run that way: left for the cache.
    resolved = Path(found).resolve()
    return resolved if resolved.suffix in (".cjs", ".js", ".mjs") else None


def _chain_spec_in(node_modules: Path) -> Path | None:
    package = node_modules / _CHAIN_SPEC_PACKAGE
    return package if (package / "package.json").is_file() else None


def _chain_spec_beside_path_chopsticks() -> Path | None:
    """The chain-spec package in the ``node_modules`` that holds the ``chopsticks`` on PATH,
    if it is there at the pinned version (another version is passed over, for the cache)."""
    script = _chopsticks_on_path()
    if script is None or script.parent.parent.name != "@acala-network":
        return None
    package = _chain_spec_in(script.parents[2])
    if package is None:
        return None
    try:
        manifest = json.loads((package / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("version") != PINNED[_CHAIN_SPEC_PACKAGE]:
        return None
    return package


@dataclass(frozen=True)
class _Tool:
    what: str  # as error messages name it
    package: str
    in_node_modules: Callable[[Path], Path | None]
    on_path: Callable[[], Path | None]
    path_place: str  # where on_path looked, as error messages say it
    instead: str  # what else a user can do than install npm


_TOOLS: Final[dict[str, _Tool]] = {
    "anvil": _Tool(
        "anvil",
        "@foundry-rs/anvil",
        _anvil_in,
        _anvil_on_path,
        "on PATH",
        "or put anvil on PATH",
    ),
    "chopsticks": _Tool(
        "chopsticks",
        "@acala-network/chopsticks",
        _chopsticks_in,
        _chopsticks_on_path,
        "on PATH",
        "or put chopsticks on PATH",
    ),
    "chain spec": _Tool(
        f"the Asset Hub chain spec ({_CHAIN_SPEC_PACKAGE}@{PINNED[_CHAIN_SPEC_PACKAGE]})",
        _CHAIN_SPEC_PACKAGE,
        _chain_spec_in,
        _chain_spec_beside_path_chopsticks,
        "beside the chopsticks on PATH",
        "or npm-install that package beside the chopsticks on PATH",
    ),
}


def _locate(name: str) -> Path:
    tool = _TOOLS[name]
    checkout = checkout_node_modules()
    if checkout is not None:
        found = tool.in_node_modules(checkout)
        if found is not None:
            return found
    found = tool.on_path()
    if found is not None:
        return found
    node_modules = _cached_install(tool)
    found = tool.in_node_modules(node_modules)
    if found is None:
        raise ToolError(
            f"npm installed {tool.package}@{PINNED[tool.package]} into {node_modules.parent}, "
            f"but it has no {tool.what} for this platform ({platform.system()} "
            f"{platform.machine()})"
        )
    return found


def anvil_path() -> Path:
    """The anvil executable to run: native binary or npm wrapper (order: module docstring)."""
    return _locate("anvil")


def chopsticks_script() -> Path:
    """chopsticks' CLI script, to run with :func:`node_executable` (order: module docstring)."""
    return _locate("chopsticks")


def chain_spec_package() -> Path:
    """The folder of the npm package ``@substrate/connect-known-chains`` (order: module
    docstring); :func:`devnet.chopsticks.write_chain_spec` reads its export and checks it."""
    return _locate("chain spec")


def pos_node_modules() -> Path | None:
    """The checkout's ``devnet/npm-pos/node_modules`` (``make pos-tools`` fills it), or None when
    Passerelle runs from an installed package (read at call time, like
    :func:`checkout_node_modules`)."""
    checkout = checkout_node_modules()
    return None if checkout is None else checkout.parent / "devnet" / "npm-pos" / "node_modules"


def _package_version(folder: Path) -> str | None:
    try:
        manifest = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


def _pos_script(command: str) -> Path:
    """The CLI script of ``command`` (a key of :data:`_POS_SCRIPTS`) at its pinned version."""
    package, script = _POS_SCRIPTS[command]
    pinned = POS_PINNED[package]
    node_modules = pos_node_modules()
    if node_modules is not None:
        candidate = node_modules / package / script
        if candidate.is_file() and _package_version(node_modules / package) == pinned:
            return candidate
    found = shutil.which(command)
    if found is not None:
        # npm links .bin/<command> to the package's script: walk up from the script to the
        # package folder, and take it only at the pinned version (others differ in flags).
        resolved = Path(found).resolve()
        for folder in resolved.parents:
            if (folder / "package.json").is_file():
                if _package_version(folder) == pinned and resolved == folder / script:
                    return resolved
                break
    where = (
        f"run `make pos-tools` in the checkout (fills {node_modules.parent})"
        if node_modules is not None
        else f"install {package}@{pinned} with npm (see docs/pos-devnet.md) so that "
        f"`{command}` is on PATH"
    )
    raise ToolError(
        f"{command} ({package}@{pinned}) is not installed for the proof-of-stake devnet: {where}"
    )


def lodestar_script() -> Path:
    """Lodestar's CLI script (``@chainsafe/lodestar`` 1.5.1), to run with :func:`node_executable`:
    the checkout's ``devnet/npm-pos/node_modules``, else a ``lodestar`` on PATH at that version;
    :class:`ToolError` (one line) otherwise (no per-user cache: module docstring)."""
    return _pos_script("lodestar")


def ethereumjs_script() -> Path:
    """The EthereumJS client's CLI script (``@ethereumjs/client`` 0.10.5); found like
    :func:`lodestar_script`."""
    return _pos_script("ethereumjs")


def node_executable() -> str:
    """The ``node`` on PATH, which runs chopsticks (Node 20 works; chopsticks asks for 22)."""
    node = shutil.which("node")
    if node is None:
        raise ToolError("node is not on PATH: chopsticks needs Node.js (>= 20)")
    return node


# --------------------------------------------------------------------------- the cache


def _cache_manifest() -> tuple[bytes, bytes]:
    """The shipped ``package.json`` and ``package-lock.json`` a cache install is made from."""
    folder, *names = CACHE_MANIFEST
    try:
        manifest, lock = (
            resources.files("devnet").joinpath(folder, name).read_bytes() for name in names
        )
    except OSError as error:
        raise ToolError(
            f"devnet/{folder}/ of this Passerelle is incomplete ({error.strerror or error}): "
            "reinstall passerelle"
        ) from None
    return manifest, lock


def _install_key(lock: bytes | None = None) -> str:
    """The cache folder of one lock: the pinned versions, readable, and the lock's digest, so
    any change to the locked tree installs afresh beside the old one."""
    if lock is None:
        lock = _cache_manifest()[1]
    versions = "+".join(f"{name.rsplit('/', 1)[-1]}-{v}" for name, v in PINNED.items())
    return f"{versions}+lock-{hashlib.sha256(lock).hexdigest()[:12]}"


@contextlib.contextmanager
def _cache_lock(root: Path) -> Iterator[None]:
    """One installer at a time per cache (two `devnet up` at once, or tests in parallel)."""
    with (root / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached_install(tool: _Tool) -> Path:
    """The cache's ``node_modules`` holding the locked tree, installing it on first use.

    npm writes into a fresh temporary folder that is renamed into place only after it
    succeeded and was marked complete, so an interrupted install is never mistaken for one.
    """
    manifest, lock = _cache_manifest()
    root = cache_dir()
    target = root / _install_key(lock)
    if (target / _COMPLETE).is_file():
        return target / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise ToolError(
            f"{tool.what} is not installed (not in a checkout's node_modules, not "
            f"{tool.path_place}, not in {root}) and npm is not on PATH to install it: "
            f"install Node.js with npm, {tool.instead}"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ToolError(f"cannot create the tool cache {root}: {error.strerror}") from None
    with _cache_lock(root):
        if (target / _COMPLETE).is_file():  # another process installed it while we waited
            return target / "node_modules"
        work = Path(tempfile.mkdtemp(prefix=".installing-", dir=root))
        try:
            specs = ", ".join(f"{name}@{version}" for name, version in PINNED.items())
            print(
                f"passerelle: installing {specs} into {target} with npm ci (first use only)",
                file=sys.stderr,
                flush=True,
            )
            (work / "package.json").write_bytes(manifest)
            (work / "package-lock.json").write_bytes(lock)
            # npm ci installs exactly the lock (and fails rather than resolve anew).
            # --ignore-scripts as the Makefile does: anvil's binary is an optional dependency
            # (--include=optional even if the user's npm config omits those), and chopsticks
            # never loads the sqlite3 module whose install script compiles C++.
            command = [npm, "ci", "--prefix", str(work), "--ignore-scripts"]
            command += ["--include=optional", "--no-audit", "--no-fund", "--loglevel=error"]
            try:
                done = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    cwd=work,
                    capture_output=True,
                    text=True,
                    timeout=_NPM_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise ToolError(f"npm ci of {specs} took over {_NPM_TIMEOUT:.0f} s") from None
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                why = lines[-1].strip() if lines else f"exit code {done.returncode}"
                raise ToolError(f"npm ci of {specs} failed: {why[:200]}")
            (work / _COMPLETE).write_text(json.dumps(PINNED) + "\n", encoding="utf-8")
            if target.exists():  # an unfinished install of the same lock
                shutil.rmtree(target)
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target / "node_modules"
