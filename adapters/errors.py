"""The one error type every chain adapter raises for a node problem."""

from __future__ import annotations


class AdapterError(Exception):
    """A node's answer is malformed or does not pass the light clients; str() says which."""
