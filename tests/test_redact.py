"""adapters/redact.py: no provider key survives into text that leaves the process (issue #8,
point 11). Property tests place a realistic key (≥ 16 characters of base62 with a digit, the shape
every provider we know uses) wherever providers put one and assert that it is gone."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.redact import REDACTED, redact_url, scrub_url

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALPHABET = string.ascii_letters + string.digits
SECRETS = st.text(ALPHABET, min_size=16, max_size=48).filter(
    lambda s: any(c.isdigit() for c in s) and any(c.isalpha() for c in s)
)
SCHEMES = st.sampled_from(["http", "https", "ws", "wss"])
HOSTS = st.sampled_from(
    ["127.0.0.1", "node.example", "eth-mainnet.g.alchemy.com", "rpc.ankr.com", "[::1]"]
)
PORTS = st.sampled_from(["", ":8545", ":443"])
WORDS = st.sampled_from(["", "/rpc", "/v2", "/v3", "/ws", "/eth", "/v1/lb"])

# Where providers put the key: userinfo, password, query value, fragment, path, host label.
PLACES = [
    "{scheme}://{secret}@{host}{port}{path}",
    "{scheme}://user:{secret}@{host}{port}{path}",
    "{scheme}://{host}{port}{path}?apikey={secret}",
    "{scheme}://{host}{port}{path}?network=main&key={secret}",
    "{scheme}://{host}{port}{path}#{secret}",
    "{scheme}://{host}{port}{path}/{secret}",
    "{scheme}://{host}{port}{path}/{secret}/",
    "{scheme}://{host}{port}/{secret}{path}",
    "{scheme}://{secret}.rpc.example.io{port}{path}",
]


@given(
    place=st.sampled_from(PLACES),
    scheme=SCHEMES,
    host=HOSTS,
    port=PORTS,
    path=WORDS,
    secret=SECRETS,
)
@PROPERTY
def test_no_secret_survives_redaction(
    place: str, scheme: str, host: str, port: str, path: str, secret: str
) -> None:
    url = place.format(scheme=scheme, host=host, port=port, path=path, secret=secret)
    shown = redact_url(url)
    assert secret not in shown
    assert secret.lower() not in shown.lower()  # hostnames come back lowercased
    assert redact_url(shown) == shown  # idempotent: redacting twice changes nothing
    # A library error quoting the URL, or only part of it, is scrubbed too.
    for text in (f"connection to {url} refused", f"bad request {secret}", f"GET {url[8:]}"):
        assert secret not in scrub_url(text, url)


@given(scheme=SCHEMES, host=HOSTS, port=PORTS, path=WORDS)
@PROPERTY
def test_a_url_without_secrets_is_shown_as_is(scheme: str, host: str, port: str, path: str) -> None:
    url = f"{scheme}://{host}{port}{path}"
    assert redact_url(url) == url
    assert scrub_url(f"cannot connect to {url}", url) == f"cannot connect to {url}"


@given(text=st.text(max_size=60))
@PROPERTY
def test_anything_that_is_not_a_url_shows_nothing_of_itself(text: str) -> None:
    shown = redact_url(text)
    if "://" not in text:
        assert shown == REDACTED


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://mainnet.infura.io/v3/9aa3d95b3bc440fa88ea12eaa4456161",
            "https://mainnet.infura.io/v3/***",
        ),
        (
            "https://eth-mainnet.g.alchemy.com/v2/AbCdEf0123456789xyz",
            "https://eth-mainnet.g.alchemy.com/v2/***",
        ),
        ("https://rpc.ankr.com/eth/0123456789abcdef0123", "https://rpc.ankr.com/eth/***"),
        (
            "https://example-name.quiknode.pro/a1b2c3d4e5f6a7b8c9d0/",
            "https://example-name.quiknode.pro/***/",
        ),
        (
            "wss://polkadot.api.onfinality.io/ws?apikey=0a1b2c3d",
            "wss://polkadot.api.onfinality.io/ws?***",
        ),
        (
            "wss://api-polkadot.dwellir.com/6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b",
            "wss://api-polkadot.dwellir.com/***",
        ),
        (
            "https://eth-mainnet.gateway.pokt.network/v1/lb/62b3a1c2d4e5f6a7b8c9d0e1",
            "https://eth-mainnet.gateway.pokt.network/v1/lb/***",
        ),
        ("https://0123456789abcdef0123456789abcdef.ipfs.example.io", "https://***.ipfs.example.io"),
        (
            "https://nd-123-456-789.p2pify.com/3c6e0b8a9c15224a8228b9a98ca1531d",
            "https://nd-123-456-789.p2pify.com/***",
        ),
        (
            "https://user:pass@node.example:8545/rpc?key=s3cret",
            "https://***@node.example:8545/rpc?***",
        ),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("ws://[::1]:9944", "ws://[::1]:9944"),
        ("http://host:notaport/", REDACTED),
    ],
)
def test_provider_shapes(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_replaces_the_url_and_its_pieces() -> None:
    url = "https://user:Zx81Qw72Er63Ty54@node.example/v2/Ab12Cd34Ef56Gh78?apikey=Kk9Ll8Mm7Nn6"
    text = (
        f"error for {url}: server said 401 for /v2/Ab12Cd34Ef56Gh78 "
        "(apikey=Kk9Ll8Mm7Nn6, user Zx81Qw72Er63Ty54)"
    )
    scrubbed = scrub_url(text, url)
    for secret in ("Zx81Qw72Er63Ty54", "Ab12Cd34Ef56Gh78", "Kk9Ll8Mm7Nn6"):
        assert secret not in scrubbed
    assert scrubbed.startswith("error for https://***@node.example/v2/***?***: server said 401")
