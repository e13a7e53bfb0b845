"""The one root of every error a chain adapter raises.

Everything that goes wrong between Passerelle and a node is an :class:`AdapterError`:

- :class:`adapters.rpc.RpcError` — no endpoint gave a usable answer (transport failures,
  timeouts, JSON-RPC error objects, wrong chain, a result that does not parse:
  :class:`adapters.rpc.MalformedAnswer`);
- :class:`adapters.evm.tx.TxError` — a transaction could not be sent or was not mined
  (:class:`adapters.evm.tx.TxReverted` when it was mined and reverted);
- plain :class:`AdapterError` and the Substrate finality errors — an answer that is well-formed
  JSON but does not pass the light clients.

One root lets a caller that only needs "the chain side failed, say so in one line" write
``except AdapterError`` and the CLI map the whole family to one exit code, while callers that
must tell the cases apart (retry a dead node, record a revert) still catch the subclasses.
"""

from __future__ import annotations


class AdapterError(Exception):
    """A node's answer is missing, malformed or does not pass the light clients; str() says
    which, in one line."""
