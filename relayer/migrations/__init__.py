"""The ledger's schema migrations (Alembic), shipped inside the package.

``relayer.ledger`` runs them programmatically (``passerelle ledger migrate``); no
``alembic.ini`` is needed, and the scripts are found next to this file, so an installed wheel
migrates exactly as a checkout does.

Adding a revision (after changing a table in ``relayer/ledger.py``):

1. Copy the newest file in ``versions/`` to ``versions/NNNN_what.py`` with the next ordinal
   ``NNNN`` as ``revision`` and the previous one as ``down_revision``: revision ids are
   zero-padded ordinals, one linear history (``tests/test_ledger_migrations.py`` checks both,
   and ``ledger_meta.schema_version`` is kept equal to the ordinal so that a Passerelle older
   than Alembic refuses a newer ledger too).
2. Write ``upgrade()`` with ``op`` calls against frozen literal names and types, never the
   model classes (a revision must create the same schema forever). Draft it with
   ``alembic.autogenerate.compare_metadata`` (the test that fails when you forgot prints it).
3. SQLite cannot ALTER most things: use ``op.batch_alter_table``. The whole upgrade runs in
   one transaction on both databases (see ``env.py``), so a failing revision changes nothing.
"""
