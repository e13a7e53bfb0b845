"""Pure verification: bytes in, verdict out.

Nothing in this package performs I/O, reads a clock or imports `adapters` or `relayer`.
Every rejection is a :class:`light_clients.errors.VerificationError` subclass whose message is
one line saying why.
"""
