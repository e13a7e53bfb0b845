"""Measured scale (issue #12): several routes at once with 1, 2 and 4 relayers on one
PostgreSQL ledger next to 1 on SQLite, a relayer's memory with 10,000 messages waiting, and the
ledger workload of 1 to 64 relayers replayed against PostgreSQL without chains.

Run with ``.venv/bin/python -m benchmarks.bench_scale [--small]`` (``--help`` for the sizes;
``make bench`` runs it with the defaults, about 5 minutes on two cores). docs/scaling.md has
the numbers and the capacity plan built on them.

1. **Relay runs** (:mod:`~benchmarks.bench_scale.relay`), on one ``devnet up --evm-chains 3
   --postgres`` (alpha, beta and delta: six routes, nine leased tasks), three attesters
   throughout. One relayer on a SQLite ledger first (the in-run reference), then 1, 2 and 4
   ``relay --index I`` processes sharing the devnet's PostgreSQL: each run sends
   ``--per-route`` messages on all six routes at once and measures, from the chains, the
   delivered messages per second; per delivered message, the relayers' CPU, what PostgreSQL
   counted (``pg_stat_database``: transactions, rows written and read, milliseconds executing)
   and the server's CPU; each relayer's memory. Then, attesters stopped, ``--pending`` messages
   are sent and one relayer records them all (``final``, none deliverable): its memory while
   they wait.
2. **Simulation** (:mod:`~benchmarks.bench_scale.simulate`): N simulated relayers, each a
   process calling :mod:`relayer.ledger` and :mod:`relayer.leases` as ``passerelle relay``
   does (lease rounds, scan, collect, deliver, fenced), against a durable PostgreSQL of its
   own; per N the delivered rate, statements, transactions, rows written, milliseconds and CPU
   per message, how long the ledger's write lock is held per message, and the size of the
   ledger per 10,000 messages (as written, and after ``VACUUM FULL``).

Modules: ``cli`` (options, the order of the runs, the printed report), ``relay`` and
``simulate`` (the two measurements), ``pgstats`` (what the server counts). Every figure is
printed with the load average, because the machine is shared.
"""

from benchmarks.bench_scale.cli import main

__all__ = ["main"]
