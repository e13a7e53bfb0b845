"""Alembic revisions of the ledger schema, ``NNNN_*.py``, one linear history."""
