"""RPC URLs as they may be shown: in logs, error messages, metrics labels and ``status``.

Provider URLs usually carry the API key, in the userinfo (``https://user:key@host``), the query
string (``?apikey=…``), a path segment (``/v3/<key>``, ``/v2/<key>``, ``/<token>/``) or, more
rarely, a host label (``<project-id>.provider.io``). Anything that leaves the process — a log
line, an exception's text, a Prometheus label — shows the redacted form; the real URL is used
only to connect. Every code path that puts a URL into text calls :func:`redact_url`, and text
from a library that may quote the URL (an exception message) goes through :func:`scrub_url`:
one rule, so a new provider's shape is fixed in one place.

What is kept: the scheme, short plain host labels and the port (so an operator can still tell
endpoints apart), and path segments that are short words or versions (``rpc``, ``ws``, ``v3``).
Everything else is replaced by ``***``: a redacted URL may hide too much, never too little.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

REDACTED = "***"
# A path segment kept as is: short words and versions ("rpc", "ws", "v3", "ext", "bsc"). Anything
# longer or with digits mixed in could be a key, and is replaced.
_PLAIN_SEGMENT = re.compile(r"^(?:[A-Za-z][A-Za-z_-]{0,11}|v\d{1,2})$")
# A host label that looks like a key rather than a name: long and mixing letters with digits
# (``0f3a…`` project ids), or long hex. Names such as ``eth-mainnet`` or ``nd-123-456`` stay.
_SECRET_LABEL = re.compile(r"^(?:(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_]{16,}|[0-9a-fA-F]{16,})$")
# Shorter fragments are not searched for in free text: they would match ordinary words.
_MIN_SECRET_CHARS = 4


def redact_url(url: str) -> str:
    """``url`` with userinfo, query, fragment and secret-looking path segments replaced.

    >>> redact_url("https://eth-mainnet.g.alchemy.com/v2/AbCdEf0123456789xyz")
    'https://eth-mainnet.g.alchemy.com/v2/***'
    >>> redact_url("https://user:pass@node.example:8545/rpc?key=s3cret")
    'https://***@node.example:8545/rpc?***'
    >>> redact_url("http://127.0.0.1:8545")
    'http://127.0.0.1:8545'
    >>> redact_url("wss://0123456789abcdef0123456789abcdef.rpc.example.io/ws")
    'wss://***.rpc.example.io/ws'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL at all: show nothing of it
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    else:
        host = ".".join(
            REDACTED if _SECRET_LABEL.match(label) else label for label in host.split(".")
        )
    netloc = host if port is None else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{REDACTED}@{netloc}"
    segments = [
        s if s == "" or _PLAIN_SEGMENT.match(s) else REDACTED for s in parts.path.split("/")
    ]
    text = f"{parts.scheme}://{netloc}{'/'.join(segments)}"
    if parts.query:
        text += f"?{REDACTED}"
    if parts.fragment:
        text += f"#{REDACTED}"
    return text


def _secret_parts(url: str) -> set[str]:
    """Every piece of ``url`` that :func:`redact_url` hides, as written and percent-decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return {url}
    found: set[str] = set()
    userinfo, at, host = parts.netloc.rpartition("@")  # host as written: hostname lowercases
    if at:
        found.add(userinfo)
        found.update(userinfo.split(":"))
    if parts.query:
        found.add(parts.query)
        # The values (the names, "apikey", are no secret and would match ordinary words).
        found.update(pair.partition("=")[2] for pair in parts.query.split("&"))
    if parts.fragment:
        found.add(parts.fragment)
    found.update(s for s in parts.path.split("/") if s and not _PLAIN_SEGMENT.match(s))
    found.update(label for label in re.split(r"[.:]", host) if _SECRET_LABEL.match(label))
    found |= {unquote(piece) for piece in found}
    return {piece for piece in found if len(piece) >= _MIN_SECRET_CHARS}


def scrub_url(text: str, url: str) -> str:
    """``text`` (say, an exception message from an RPC library) with ``url`` and every secret
    piece of it replaced: the whole URL by its redacted form, then each fragment that
    :func:`redact_url` hides wherever it still appears (a library may quote only the path or
    the query)."""
    text = text.replace(url, redact_url(url))
    # Longest first, so a key is not left half-replaced by a shorter piece of itself.
    for piece in sorted(_secret_parts(url), key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return text
