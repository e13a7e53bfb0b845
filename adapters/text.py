"""Someone else's words, as they may be shown: one printable line of bounded length.

A node's error message, a recipient's revert reason, a file's contents: text nobody here wrote
ends up in log lines, stored reasons (``passerelle status``) and exception messages. A hostile
or broken party can put a newline in it (a forged second log line), a terminal escape, or a
megabyte. :func:`one_line` is the one rule for all of it, applied where such text enters
Passerelle: :class:`adapters.jsonrpc.RpcCallError` bounds a node's message when the error is
built, so every log line and reason quoting that error is bounded too (review of F2SEAM, L3).
"""

from __future__ import annotations

__all__ = ["ERROR_TEXT_LIMIT", "NODE_TEXT_LIMIT", "VALUE_TEXT_LIMIT", "one_line", "quoted"]

NODE_TEXT_LIMIT = 200
"""Characters of a node's (or another untrusted party's) words kept in a reason or a log.
Real nodes say what went wrong first ("execution reverted: …", "nonce too low"), so the bound
keeps what :attr:`adapters.jsonrpc.RpcCallError.reverted` looks for."""
VALUE_TEXT_LIMIT = 60
"""Characters of a malformed value (:func:`quoted`) kept in an error: enough to recognise
it, and the error stays one readable line however big the value is."""
ERROR_TEXT_LIMIT = 4 * NODE_TEXT_LIMIT
"""Characters of an error's whole text (our words around a node's, redacted URLs included)
kept in a log line or a stored error: :func:`one_line` of it."""


def one_line(text: str, limit: int = NODE_TEXT_LIMIT) -> str:
    """``text`` from a node, a recipient or a file as one printable line of at most ``limit``
    characters (plus ``…`` when cut): control characters (newline, NUL, ESC: a forged second
    line in ``status`` or the log, a terminal escape) become ``?``.

    >>> one_line("nonce too low\\nWARNING forged\\x1b[31m", 20)
    'nonce too low?WARNIN…'
    """
    line = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return line if len(line) <= limit else line[:limit] + "…"


def quoted(value: object, limit: int = VALUE_TEXT_LIMIT) -> str:
    """A value someone else sent (a node's JSON: a string, a number, a nested object) as an
    error quotes it: its ``repr`` (so a string shows as one, quotes and all) through
    :func:`one_line`.

    >>> quoted("0xzz\\n" + "a" * 500, 12)
    "'0xzz\\\\naaaaa…"
    """
    try:
        text = repr(value)
    except RecursionError:  # a value nested ~900 deep: quoting it must not be the failure
        text = f"<{type(value).__name__} nested too deep>"
    return one_line(text, limit)
