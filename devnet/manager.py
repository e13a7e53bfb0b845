"""``passerelle devnet up|down|status``: local anvil chains (two, or ``--evm-chains N``) with
Passerelle deployed and every pair linked both ways, chopsticks running Rococo Asset Hub with
the committee's multisig set up on it, (``--pos``) a proof-of-stake chain, Lodestar driving the
EthereumJS client, and (``--postgres``) a local PostgreSQL holding the ledger and the
attesters' checkpoint store.

Usage::

    config_path = up(Path("devnet"))   # starts alpha (domain 1) and beta (domain 2), deploys,
                                       # links; starts assethub (domain 3, chopsticks) and has
                                       # the committee's multisig create its replay-guard
                                       # collections and wrapped asset (devnet/substrate.py);
                                       # writes devnet/passerelle.toml and devnet.json
    up(Path("devnet"), pos=True)       # also gamma (domain 4, proof of stake, devnet/pos.py),
                                       # linked both ways with every chain, its config naming
                                       # a finalized beacon checkpoint (~35 s after its genesis)
    up(Path("devnet"), evm_chains=4)   # alpha, beta, delta (5) and epsilon (6): 12 EVM routes,
                                       # each chain also linked with assethub (and gamma)
    up(Path("devnet"), postgres=True)  # the ledger and the checkpoint store on a local
                                       # PostgreSQL (devnet/postgres.py), `ledger migrate` run
    status(Path("devnet"))             # {"config": …, "running": True, "chains": [...]}
    down(Path("devnet"))               # stops exactly what `up` started

This module is the orchestration; the pieces it puts together each have their own module:

- :mod:`devnet.topology`: the chains, domains, keys, committee and finality;
- :mod:`devnet.tools`: where anvil, chopsticks and Asset Hub's chain spec come from (checkout,
  PATH, per-user cache);
- :mod:`devnet.records`: the state directory's ``devnet.json`` record, lock and archive;
- :mod:`devnet.pids`: recognising a recorded process (so a recycled pid is never signalled)
  and stopping it;
- :mod:`devnet.kinds`: the one table of what differs between an anvil and a chopsticks chain;
- :mod:`devnet.config_file`: the ``passerelle.toml`` handed out;
- :mod:`devnet.evm` and :mod:`devnet.substrate`: deploying and linking contracts, setting up
  Asset Hub;
- :mod:`devnet.pos`: the proof-of-stake chain's genesis, processes and beacon API.

Everything lives in the state directory:

- ``passerelle.toml``: a ready config (relayer.config schema, ``devnet = true``).
- ``devnet.json``: the record of every process ``up`` started (pid, port, binary, log, the
  kernel's start time of the pid). ``down`` and ``status`` trust nothing else, and check each
  pid is still that anvil or chopsticks before signalling it (:func:`devnet.pids.is_ours`).
- ``anvil-<chain>.log``, ``chopsticks-assethub.log``: each chain's output, appended across runs;
  kept by ``down``. ``chopsticks/`` holds chopsticks' chain spec, funding and YAML config.
  ``gamma/`` (with ``--pos``) holds the PoS chain's genesis, Engine API secret, databases and
  its two logs, ``ethereumjs.log`` and ``lodestar.log``; ``beacon/`` is the attesters'
  light-client store.
- ``ledger.db`` and ``checkpoints/``: created by the relayer and attesters, kept by ``down``;
  a fresh ``up`` moves them into ``previous/<UTC time>/``
  (:func:`devnet.records.archive_previous_run` says why).
- ``postgres/`` (with ``--postgres``): the server's data directory and ``postgres.log``. The
  server is recorded in ``devnet.json`` under ``"postgres"`` (not among the chains). ``down``
  stops the server that runs in ``postgres/data``, found from that cluster's
  ``postmaster.pid`` and never from the record (:func:`devnet.postgres.running_server`); a
  fresh ``up`` stops one still running there before moving the folder aside. It holds two
  databases: ``passerelle``, the ledger (``[ledger] location``, migrated by ``up``), and
  ``checkpoints``, the attesters' signatures and the Substrate multisig proposals
  (``[committee] checkpoint_store``): apart, so that the ledger's migrations and ``ledger
  rebuild``, which refuse a database holding tables that are not a ledger's, never meet the
  stores' tables.

The config's attesters each get a fresh sr25519 seed (``substrate_key``), their Substrate
identity next to their secp256k1 EVM key; the 2-of-3 multisig of those keys owns the
assethub's Uniques collections (one per EVM origin domain, the replay guard) and its wrapped
asset. chopsticks funds //Alice, the attesters and the multisig through ``import-storage``.

The chains are detached (own session, stdin closed, output to the log files), so they outlive
the ``passerelle devnet up`` process; ``down`` is how they stop. Every failure of ``up`` (busy
port, anvil not installed, a reverted deployment) raises :class:`DevnetError`, whose ``str()``
is one line, after stopping whatever this call had started.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adapters.substrate import multisig_account
from devnet import pids, records
from devnet.anvil import DEV_ADDRESSES, AnvilError, AnvilProcess, anvil_binary, start_anvil
from devnet.chopsticks import (
    ALICE,
    DEV_BALANCE,
    ChopsticksError,
    ChopsticksProcess,
    check_chain_spec,
    chopsticks_entry,
    start_chopsticks,
)
from devnet.config_file import PosSection, render_config
from devnet.errors import DevnetError
from devnet.evm import (
    DeployError,
    EvmDeployment,
    deploy_evm_chain,
    link_evm_chains,
    link_substrate_remote,
)
from devnet.kinds import kind_of
from devnet.pos import FINALITY_POLICY as POS_FINALITY
from devnet.pos import (
    BeaconInfo,
    PosChain,
    PosChainError,
    beacon_info,
    start_pos_chain,
    wait_for_checkpoint,
)
from devnet.postgres import (
    PostgresError,
    PostgresProcess,
    postgres_bin_dir,
    start_postgres,
    stop_leftover,
    stop_recorded,
)
from devnet.postgres import answers as postgres_answers
from devnet.process import free_ports
from devnet.records import (
    BEACON_STORE_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LEDGER_FILE,
    POSTGRES_DIR,
    STATE_FILE,
)
from devnet.substrate import SubstrateSetupError, keypair_from_seed, setup_asset_hub
from devnet.tools import ToolError, ethereumjs_script, lodestar_script
from devnet.topology import (
    ASSETHUB,
    CHAINS,
    CLIENT_KEY,
    DEFAULT_EVM_CHAINS,
    DEPLOYER_KEY,
    FINALITY,
    POS_CHAIN,
    POS_EVM_VERSION,
    SUBSTRATE_CLIENT_URI,
    THRESHOLD,
    ChainSpec,
    attester_keys,
    substrate_seeds,
)
from devnet.topology import evm_chains as evm_chain_specs
from light_clients.committee import address_of
from light_clients.hexstr import parse_data, to_hex
from relayer.config import ConfigError, load_config
from relayer.ledger import LedgerError, migrate_ledger

__all__ = [
    "ASSETHUB",
    "CHAINS",
    "CONFIG_FILE",
    "POS_CHAIN",
    "STATE_FILE",
    "DevnetError",
    "down",
    "status",
    "up",
]


def _one_line(error: BaseException) -> str:
    """The first line of an error, plus the last line of a chain's log tail when it has one
    (that is where anvil says why it died: "Address already in use", …)."""
    text = str(error).strip() or type(error).__name__
    first, _, rest = text.partition("\n")
    first = first.removesuffix("; its log ends:").strip()
    tail = [line.strip() for line in rest.splitlines() if line.strip()]
    return f"{first}: {tail[-1][:200]}" if tail else first


POS_DEV_BALANCE = 10_000 * 10**18
"""What each development account holds in gamma's genesis (anvil's default balance)."""

CHECKPOINT_TIMEOUT = 240.0
"""How long ``up --pos`` waits for gamma's first finalized checkpoint. ~35 s after genesis on an
idle machine; a CPU shared with other work delays attestations and with them justification
(minutes have been seen with four test runs beside it: docs/pos-devnet.md)."""


def _healthy(
    state_dir: Path,
    state: dict[str, Any],
    *,
    specs: Sequence[ChainSpec],
    assethub: bool,
    pos: bool,
    postgres: bool,
) -> bool:
    """Every chain of the wanted devnet is recorded, ours, and answers as the recorded chain;
    and the PostgreSQL server is there, ours and answering exactly when ``postgres``."""
    entries = records.processes(state)
    expected = {spec.name for spec in specs} | ({ASSETHUB.name} if assethub else set())
    expected |= {POS_CHAIN.name} if pos else set()
    server = records.postgres_entry(state)
    return (
        state.get("complete") is True
        and (state_dir / CONFIG_FILE).is_file()
        and {p.get("chain") for p in entries} == expected
        and all(pids.is_ours(p) and _answers(p) for p in entries)
        and (server is not None) == postgres
        and (server is None or postgres_answers(server, state_dir / POSTGRES_DIR))
    )


def _answers(entry: dict[str, Any]) -> bool:
    kind = kind_of(entry)
    return kind is not None and kind.answers(entry)


def up(
    state_dir: Path,
    *,
    block_time: float = 1.0,
    ports: Sequence[int] | None = None,
    assethub: bool = True,
    pos: bool = False,
    evm_chains: int = DEFAULT_EVM_CHAINS,
    postgres: bool = False,
) -> Path:
    """Start the devnet (or find it running) and return the path of its config TOML.

    If ``state_dir/devnet.json`` records a complete devnet whose every process is alive, is
    still the recorded anvil or chopsticks and answers as the recorded chain
    (:mod:`devnet.kinds`), nothing is started and the existing config path is returned.
    Otherwise whatever that record names is stopped, the old run's ledger and stores are moved
    aside (:func:`devnet.records.archive_previous_run`), and a fresh devnet is started:
    ``evm_chains`` anvils (:func:`devnet.topology.evm_chains`: alpha, beta, delta, …) with
    ``block_time``-second blocks on free ports of 127.0.0.1 (or on ``ports``, one per chain,
    e.g. to test a busy port), contracts deployed and every pair linked both ways, three
    fresh attester keys with threshold 2, and - when ``assethub`` is True - chopsticks
    (:data:`ASSETHUB`, on a free port) with the committee's multisig, collections and wrapped
    asset set up (:func:`devnet.substrate.setup_asset_hub`) while the EVM contracts deploy;
    and - when ``pos`` is True - the proof-of-stake chain :data:`POS_CHAIN` (:mod:`devnet.pos`,
    started first so its wait for finality overlaps everything else), its shanghai contracts
    linked both ways with every other chain; then the config is written (gamma's beacon
    checkpoint: its first finalized block root whose bootstrap the node serves) and checked
    with :func:`relayer.config.load_config`. With ``postgres``, a PostgreSQL server starts
    beside the chains (:func:`devnet.postgres.start_postgres`, in ``postgres/``), the ledger's
    database is migrated (``passerelle ledger migrate``) and the config names it and the
    checkpoint store's database (see the module docstring).

    Raises :class:`DevnetError` (one line) on any failure, having stopped what it started;
    ``evm_chains`` outside 2..8 is refused before anything is looked at.
    """
    try:
        specs = evm_chain_specs(evm_chains)
    except ValueError as error:
        raise DevnetError(str(error)) from None
    state_dir = Path(state_dir).resolve()
    with records.locked(state_dir):
        config_path = state_dir / CONFIG_FILE
        previous = records.read_state(state_dir)
        if previous is not None:
            if _healthy(
                state_dir,
                previous,
                specs=specs,
                assethub=assethub,
                pos=pos,
                postgres=postgres,
            ):
                return config_path
            _stop_recorded(state_dir, previous)
            (state_dir / STATE_FILE).unlink(missing_ok=True)
        return _start_fresh(
            state_dir,
            specs=specs,
            block_time=block_time,
            ports=ports,
            assethub=assethub,
            pos=pos,
            postgres=postgres,
        )


def _stop_recorded(state_dir: Path, state: dict[str, Any]) -> list[str]:
    """Stop every process a record names, each only if it is still the recorded one; one line
    each (what ``down`` prints). The PostgreSQL server is the one running in this folder's
    ``postgres/data`` (:func:`devnet.postgres.running_server`), not whatever the record names.
    """
    lines = [pids.stop(entry) for entry in records.processes(state)]
    server = records.postgres_entry(state)
    if server is not None:
        try:
            lines.append(stop_recorded(server, state_dir / POSTGRES_DIR))
        except PostgresError as error:
            raise DevnetError(_one_line(error)) from None
    return lines


def _archive_previous_run(state_dir: Path) -> Path | None:
    """Stop a PostgreSQL still serving ``postgres/data`` (its record lost or not recognised:
    moving the directory from under it would leak it), then move the old run's files aside
    (:func:`devnet.records.archive_previous_run`); one-line :class:`DevnetError` on failure."""
    try:
        stop_leftover(state_dir / POSTGRES_DIR)
        return records.archive_previous_run(state_dir)
    except (PostgresError, OSError) as error:
        raise DevnetError(f"devnet setup failed: {_one_line(error)}") from None


def _start_assethub(
    state_dir: Path,
    seeds: Sequence[bytes],
    *,
    evm_origins: Sequence[int],
    state: dict[str, Any],
    state_lock: threading.Lock,
    started: list[ChopsticksProcess],
    abort: threading.Event,
) -> tuple[str, dict[str, object]]:
    """Start chopsticks (funding //Alice, the attesters and the multisig), record it, and set
    up the multisig's collections (one replay guard per domain of ``evm_origins``) and asset.
    Runs in a worker thread next to the deploys."""
    publics = [bytes(keypair_from_seed(seed).public_key) for seed in seeds]
    multisig = multisig_account(publics, THRESHOLD)
    funded = {ALICE: DEV_BALANCE, to_hex(multisig): DEV_BALANCE}
    funded.update({to_hex(public): DEV_BALANCE for public in publics})
    try:
        chain = start_chopsticks(
            funded=funded,
            state_dir=state_dir / "chopsticks",
            log_path=state_dir / f"chopsticks-{ASSETHUB.name}.log",
            block_mode="Collator",
        )
    except ChopsticksError as error:
        raise DevnetError(f"{ASSETHUB.name}: {_one_line(error)}") from None
    started.append(chain)
    started_at = pids.adopt(chain)
    with state_lock:
        state["processes"].append(
            {
                "chain": ASSETHUB.name,
                "kind": "substrate",
                "program": "chopsticks",
                "domain": ASSETHUB.domain,
                "chain_id": None,
                "pid": chain.pid,
                "port": chain.port,
                "port_arg": 0,  # started with --port 0; chopsticks announced the real one
                "config_arg": str(chain.config_path),
                "rpc": chain.ws_url,
                "binary": str(chopsticks_entry()),
                "log": str(chain.log_path),
                "start_time": started_at,
                "block_mode": chain.block_mode,
                "finality": chain.finality_policy,
                "genesis_hash": None,
            }
        )
        records.write_state(state_dir, state)
    if abort.is_set():
        raise DevnetError(f"{ASSETHUB.name}: not set up (another chain failed)")
    try:
        setup = setup_asset_hub(
            chain.ws_url,
            committee_seeds=seeds,
            threshold=THRESHOLD,
            evm_origins=list(evm_origins),
            client_seed_uri=SUBSTRATE_CLIENT_URI,
        )
    except SubstrateSetupError as error:
        raise DevnetError(f"{ASSETHUB.name}: {_one_line(error)}") from None
    with state_lock:
        for entry in state["processes"]:
            if entry["chain"] == ASSETHUB.name:
                entry["genesis_hash"] = setup["genesis_hash"]
        records.write_state(state_dir, state)
    return chain.ws_url, setup


def _start_anvils(
    state_dir: Path,
    state: dict[str, Any],
    started: list[AnvilProcess],
    *,
    specs: Sequence[ChainSpec],
    binary: Path,
    block_time: float,
    ports: Sequence[int] | None,
) -> None:
    """Start one anvil per chain of ``specs``, recording each as soon as it runs."""
    for index, spec in enumerate(specs):
        try:
            chain = start_anvil(
                port=None if ports is None else ports[index],
                chain_id=spec.chain_id,
                block_time=block_time,
                log_path=state_dir / f"anvil-{spec.name}.log",
            )
        except AnvilError as error:
            raise DevnetError(f"{spec.name}: {_one_line(error)}") from None
        started.append(chain)
        state["processes"].append(
            {
                "chain": spec.name,
                "kind": "evm",
                "program": "anvil",
                "domain": spec.domain,
                "chain_id": spec.chain_id,
                "pid": chain.pid,
                "port": chain.port,
                "rpc": chain.rpc_url,
                "binary": str(binary),
                "log": str(chain.log_path),
                "start_time": pids.adopt(chain),
                "block_time": block_time,
                "finality": FINALITY,
            }
        )
        # Recorded at once, so a `down` after a crash here still finds this process.
        records.write_state(state_dir, state)


def _pos_entries(chain: PosChain, info: BeaconInfo) -> list[dict[str, Any]]:
    """gamma's two ``devnet.json`` entries: the execution client (the chain's row in
    ``status``; kind ``pos``) and the beacon node (kind ``beacon``)."""
    common = {
        "chain": POS_CHAIN.name,
        "domain": POS_CHAIN.domain,
        "finality": POS_FINALITY,
        "genesis_validators_root": info.genesis_validators_root,
        "beacon_api": chain.beacon_api,
    }
    return [
        {
            **common,
            "kind": "pos",
            "program": "ethereumjs",
            "chain_id": POS_CHAIN.chain_id,
            "pid": chain.execution.pid,
            "port": chain.rpc_port,
            "port_flag": "--rpcPort",  # what pids.is_ours looks for in its command line
            "engine_port": chain.engine_port,
            "rpc": chain.rpc_url,
            "binary": str(chain.ethereumjs),
            "log": str(chain.execution.log_path),
            "start_time": pids.adopt(chain.execution),
            "stop_grace": chain.execution.stop_grace,
            "genesis_hash": chain.genesis_hash,
            "evm_version": POS_EVM_VERSION,
        },
        {
            **common,
            "kind": "beacon",
            "program": "lodestar",
            "chain_id": None,
            "pid": chain.beacon.pid,
            "port": chain.beacon_port,
            "port_flag": "--rest.port",
            "p2p_port": chain.p2p_port,
            "rpc": chain.beacon_api,
            "binary": str(chain.lodestar),
            "log": str(chain.beacon.log_path),
            "start_time": pids.adopt(chain.beacon),
            "stop_grace": chain.beacon.stop_grace,  # Lodestar 1.5.1 ignores SIGTERM
        },
    ]


def _start_pos(
    state_dir: Path,
    validators: Sequence[bytes],
    *,
    state: dict[str, Any],
    state_lock: threading.Lock,
    started: list[PosChain],
    abort: threading.Event,
) -> tuple[PosChain, dict[str, bytes], BeaconInfo]:
    """Start gamma (execution client, then Lodestar), record both processes, and deploy its
    contracts (shanghai). Runs in a worker thread, started before anything else."""
    funded = dict.fromkeys(DEV_ADDRESSES, POS_DEV_BALANCE)
    rpc, engine, rest, p2p = free_ports(4)
    try:
        chain = start_pos_chain(
            state_dir / POS_CHAIN.name,
            chain_id=POS_CHAIN.chain_id,
            funded=funded,
            ports=(rpc, engine, rest, p2p),
        )
    except PosChainError as error:
        raise DevnetError(f"{POS_CHAIN.name}: {_one_line(error)}") from None
    started.append(chain)
    try:
        info = beacon_info(chain.beacon_api)
    except PosChainError as error:
        raise DevnetError(f"{POS_CHAIN.name}: {_one_line(error)}") from None
    with state_lock:
        state["processes"].extend(_pos_entries(chain, info))
        records.write_state(state_dir, state)
    if abort.is_set():
        raise DevnetError(f"{POS_CHAIN.name}: not deployed (another chain failed)")
    contracts = deploy_evm_chain(
        chain.rpc_url,
        domain=POS_CHAIN.domain,
        deployer_key=DEPLOYER_KEY,
        committee=validators,
        threshold=THRESHOLD,
        home_token=POS_CHAIN.home_token,
        evm_version=POS_EVM_VERSION,
    )
    return chain, contracts, info


CHECKPOINT_DATABASE = "checkpoints"
"""The database of the attesters' checkpoint store, beside the ledger's on the same server."""


def _start_postgres(
    state_dir: Path,
    *,
    state: dict[str, Any],
    state_lock: threading.Lock,
    started: list[PostgresProcess],
) -> tuple[str, str]:
    """Start the devnet's PostgreSQL in ``postgres/``, record it, create the checkpoint
    store's database and migrate the ledger's; return (ledger URL, checkpoint store URL).
    Runs in a worker thread next to the chains (initdb and start take ~1 s)."""
    directory = state_dir / POSTGRES_DIR
    try:
        directory.mkdir()  # the old run's was moved aside: a cluster needs a new directory
        directory.chmod(0o711)  # as root the server runs as "nobody", which must reach data/
        server = start_postgres(directory)
    except (PostgresError, OSError) as error:
        raise DevnetError(f"postgres: {_one_line(error)}") from None
    started.append(server)
    with state_lock:
        state["postgres"] = server.record()
        records.write_state(state_dir, state)
    try:
        checkpoints = server.create_database(CHECKPOINT_DATABASE)
        migrate_ledger(server.url)
    except (PostgresError, LedgerError) as error:
        raise DevnetError(f"postgres: {_one_line(error)}") from None
    return server.url, checkpoints


def _start_fresh(
    state_dir: Path,
    *,
    specs: Sequence[ChainSpec],
    block_time: float,
    ports: Sequence[int] | None,
    assethub: bool,
    pos: bool,
    postgres: bool,
) -> Path:
    if ports is not None and len(ports) != len(specs):
        raise DevnetError(f"give {len(specs)} ports (one per chain), got {len(ports)}")
    # Every tool and the chain spec are looked up (and, from the per-user cache, installed),
    # and the spec's digest checked, before any chain starts: a missing chopsticks or Lodestar
    # or a wrong spec must not leave two anvils behind.
    try:
        binary = anvil_binary()
        if assethub:
            chopsticks_entry()
            check_chain_spec()
        if pos:
            lodestar_script()
            ethereumjs_script()
        if postgres:
            postgres_bin_dir()
    except (AnvilError, ChopsticksError, ToolError, PostgresError) as error:
        raise DevnetError(_one_line(error)) from None
    # Before anything starts: the old run's processes are stopped, its ledger and stores mean
    # nothing on new chains, and a new PostgreSQL cluster needs an empty data directory.
    archived = _archive_previous_run(state_dir)
    state = records.new_state(state_dir)
    started: list[AnvilProcess] = []
    hub_started: list[ChopsticksProcess] = []
    pos_started: list[PosChain] = []
    pg_started: list[PostgresProcess] = []
    state_lock = threading.Lock()  # the assethub and gamma workers record their processes too
    abort = threading.Event()
    try:
        keys = attester_keys()
        validators = [address_of(key) for key in keys]
        seeds = substrate_seeds() if assethub else None
        # The chains are independent until linked. gamma starts first, in a worker: its first
        # finalized checkpoint, which the config needs, comes ~35 s after its genesis, and that
        # wait runs while everything else happens. The anvils start here, then both deploy in
        # parallel (one block each) while assethub (the slow part) starts and is set up.
        with ThreadPoolExecutor(max_workers=len(specs) + 3) as pool:
            pos_future = (
                pool.submit(
                    _start_pos,
                    state_dir,
                    validators,
                    state=state,
                    state_lock=state_lock,
                    started=pos_started,
                    abort=abort,
                )
                if pos
                else None
            )
            pg_future = (
                pool.submit(
                    _start_postgres,
                    state_dir,
                    state=state,
                    state_lock=state_lock,
                    started=pg_started,
                )
                if postgres
                else None
            )
            try:
                with state_lock:
                    _start_anvils(
                        state_dir,
                        state,
                        started,
                        specs=specs,
                        binary=binary,
                        block_time=block_time,
                        ports=ports,
                    )
                hub_future = (
                    None
                    if seeds is None
                    else pool.submit(
                        _start_assethub,
                        state_dir,
                        seeds,
                        # gamma's messages reach assethub too: it needs a replay guard as well
                        evm_origins=[spec.domain for spec in specs]
                        + ([POS_CHAIN.domain] if pos else []),
                        state=state,
                        state_lock=state_lock,
                        started=hub_started,
                        abort=abort,
                    )
                )
                futures = [
                    pool.submit(
                        deploy_evm_chain,
                        chain.rpc_url,
                        domain=spec.domain,
                        deployer_key=DEPLOYER_KEY,
                        committee=validators,
                        threshold=THRESHOLD,
                        home_token=spec.home_token,
                        client=address_of(CLIENT_KEY),
                    )
                    for spec, chain in zip(specs, started, strict=True)
                ]
                deployed = [future.result() for future in futures]
                evm = [
                    EvmDeployment(chain.rpc_url, spec.domain, contracts)
                    for spec, chain, contracts in zip(specs, started, deployed, strict=True)
                ]
                link_evm_chains(*evm, deployer_key=DEPLOYER_KEY)  # every pair, in one block
                gamma = None if pos_future is None else pos_future.result()
                if gamma is not None:
                    gamma_deployment = EvmDeployment(gamma[0].rpc_url, POS_CHAIN.domain, gamma[1])
                    # gamma with each anvil chain (those are linked among themselves already).
                    link_evm_chains(
                        *evm,
                        gamma_deployment,
                        deployer_key=DEPLOYER_KEY,
                        pairs=[(i, len(evm)) for i in range(len(evm))],
                    )
                    evm.append(gamma_deployment)
                databases = None if pg_future is None else pg_future.result()
            except BaseException:
                abort.set()  # assethub, gamma: skip their setup; processes are stopped below
                raise
            hub = None if hub_future is None else hub_future.result()
            if hub is not None:  # the EVM inboxes and bridges learn assethub's outbox and escrow
                for deployment in evm:
                    link_substrate_remote(
                        deployment,
                        domain=ASSETHUB.domain,
                        outbox=parse_data(hub[1]["genesis_hash"], "genesis hash", 32),
                        bridge_account=parse_data(hub[1]["multisig"], "multisig", 32),
                        deployer_key=DEPLOYER_KEY,
                    )

        pos_section = None
        if gamma is not None:
            chain, contracts, info = gamma
            try:
                checkpoint = wait_for_checkpoint(chain.beacon_api, timeout=CHECKPOINT_TIMEOUT)
            except PosChainError as error:
                raise DevnetError(f"{POS_CHAIN.name}: {_one_line(error)}") from None
            pos_section = PosSection(
                spec=POS_CHAIN,
                rpc=chain.rpc_url,
                contracts=contracts,
                beacon_api=chain.beacon_api,
                checkpoint=checkpoint,
                beacon=info,
                store=str(state_dir / BEACON_STORE_DIR),
            )
        config_path = state_dir / CONFIG_FILE
        # Without --postgres: the ledger file and checkpoint directory beside the config.
        ledger, checkpoint_store = databases or (LEDGER_FILE, CHECKPOINT_DIR)
        records.write_atomic(
            config_path,
            render_config(
                [
                    (spec, chain.rpc_url, contracts)
                    for spec, chain, contracts in zip(specs, started, deployed, strict=True)
                ],
                validators,
                keys,
                seeds,
                hub,
                pos=pos_section,
                ledger=ledger,
                checkpoint_store=checkpoint_store,
            ),
        )
        load_config(config_path)  # the file we hand out must be one the relayer accepts
        with state_lock:
            state["complete"] = True
            state["archived_previous_run"] = None if archived is None else str(archived)
            records.write_state(state_dir, state)
        return config_path
    except BaseException as error:
        for process in [*started, *hub_started]:
            process.stop()
            pids.CHILDREN.pop(process.pid, None)
        for pos_chain in pos_started:
            pos_chain.stop()
            pids.CHILDREN.pop(pos_chain.execution.pid, None)
            pids.CHILDREN.pop(pos_chain.beacon.pid, None)
        for server in pg_started:
            server.stop()
            pids.CHILDREN.pop(server.pid, None)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        if isinstance(error, DevnetError):
            raise
        if isinstance(error, DeployError | ConfigError | OSError):
            raise DevnetError(f"devnet setup failed: {_one_line(error)}") from error
        if isinstance(error, Exception):
            raise DevnetError(
                f"devnet setup failed: {type(error).__name__}: {_one_line(error)}"
            ) from error
        raise  # KeyboardInterrupt and friends: cleaned up, now let them through


def down(state_dir: Path) -> list[str]:
    """Stop exactly the processes recorded in ``state_dir/devnet.json``; remove the record.

    Each pid is signalled only if it is still the recorded chain (:func:`devnet.pids.stop`):
    its process group gets SIGTERM, then SIGKILL if it is still there after a few seconds.
    Logs, the config and the ledger stay. Returns one line per recorded process saying what
    was done (an empty list when nothing was recorded, so a second ``down`` is harmless).
    """
    state_dir = Path(state_dir).resolve()
    if not (state_dir / STATE_FILE).exists():
        return []
    with records.locked(state_dir):
        state = records.read_state(state_dir)
        if state is None:
            return []
        lines = _stop_recorded(state_dir, state)
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        return lines


def status(state_dir: Path) -> dict[str, Any]:
    """What runs in ``state_dir``: JSON-ready, for ``passerelle devnet status [--json]``.

    ``{"state_dir", "config" (path or None), "running" (every recorded chain alive),
    "chains": [{"name", "domain", "chain_id", "rpc", "port", "pid", "alive", "block",
    "finality", "log"}]}`` where ``block`` is the latest block number, or None when the chain
    is not ours-and-alive or does not answer. Chains and their finality come from the config
    when it is readable, else from ``devnet.json``. The proof-of-stake chain's row describes
    its execution client and adds ``"beacon": {"api", "pid", "alive", "slot", "log"}`` for
    its beacon node; the row is alive only when both are. ``"postgres"`` is ``{"url", "pid",
    "alive", "log"}`` for the server of ``up --postgres`` (alive: ours and accepting
    connections), None without one.
    """
    state_dir = Path(state_dir).resolve()
    config_path = state_dir / CONFIG_FILE
    state = records.read_state(state_dir)
    entries = records.processes(state) if state else []
    # A chain's row is its node (anvil, chopsticks, the PoS execution client); a beacon node
    # is shown inside its chain's row.
    recorded = {str(p.get("chain")): p for p in entries if p.get("kind") != "beacon"}
    beacons = {str(p.get("chain")): p for p in entries if p.get("kind") == "beacon"}
    chains: list[dict[str, Any]] = []
    try:
        config = load_config(config_path) if config_path.is_file() else None
    except ConfigError:
        config = None
    described: list[tuple[str, Any, Any, Any, Any]]
    if config is not None:
        described = [
            (c.name, c.domain, c.chain_id, c.rpc[0], str(c.finality)) for c in config.chains
        ]
    else:
        described = [
            (name, p.get("domain"), p.get("chain_id"), p.get("rpc"), p.get("finality"))
            for name, p in recorded.items()
        ]
    for name, domain, chain_id, rpc, finality in described:
        record = recorded.get(name)
        alive = record is not None and pids.is_ours(record)
        kind = kind_of(record) if alive else None
        row: dict[str, Any] = {}
        beacon = beacons.get(name)
        if beacon is not None:
            beacon_alive = pids.is_ours(beacon)
            beacon_kind = kind_of(beacon) if beacon_alive else None
            api = str(beacon.get("rpc"))
            row["beacon"] = {
                "api": api,
                "pid": beacon.get("pid"),
                "alive": beacon_alive,
                "slot": None if beacon_kind is None else beacon_kind.block_number(api),
                "log": beacon.get("log"),
            }
            alive = alive and beacon_alive
        chains.append(
            {
                "name": name,
                "domain": domain,
                "chain_id": chain_id,
                "rpc": rpc,
                "port": None if record is None else record.get("port"),
                "pid": None if record is None else record.get("pid"),
                "alive": alive,
                "block": None if kind is None else kind.block_number(str(rpc)),
                "finality": finality,
                "log": None if record is None else record.get("log"),
                **row,
            }
        )
    server = records.postgres_entry(state) if state else None
    database = None
    if server is not None:
        database = {
            "url": server.get("url"),
            "pid": server.get("pid"),
            "alive": postgres_answers(server, state_dir / POSTGRES_DIR),
            "log": server.get("log"),
        }
    return {
        "state_dir": str(state_dir),
        "config": str(config_path) if config_path.is_file() else None,
        "running": bool(recorded)
        and all(c["alive"] for c in chains if c["name"] in recorded)
        and (database is None or database["alive"]),
        "chains": chains,
        "postgres": database,
    }
