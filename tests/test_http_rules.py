"""The HTTP rules of the API as pure logic: byte ranges and entity tags (``app/results.py``), the ``Prefer``
header (``app/prefer.py``), the webhook address policy and signature (``app/webhooks.py``). The same rules
against a real gateway: ``tests/test_api_conventions.py`` and ``tests/test_webhooks.py``."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from app.prefer import preferred_wait
from app.results import Unsatisfiable, byte_range, matches
from app.webhooks import refused_reason, sign


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=90-500", (90, 99)),
        ("BYTES = 1-2", (1, 2)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole
        ("items=0-5", None),  # another unit: ignored
        ("bytes=9-2", None),  # invalid: ignored
        ("bytes=a-b", None),
        ("bytes=-", None),
        ("bytes", None),
    ],
)
def test_byte_range(header, expected):
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header):
    with pytest.raises(Unsatisfiable):
        byte_range(header, 100)
    with pytest.raises(Unsatisfiable):
        byte_range("bytes=0-", 0)


def test_entity_tag_comparison():
    strong, weak = '"abc"', 'W/"abc"'
    assert matches('"abc"', strong) and matches('W/"abc"', strong) and matches('"x", "abc"', strong)
    assert matches("*", strong) and not matches('"abcd"', strong) and not matches(None, strong)
    assert matches('"abc"', weak) and matches('W/"abc"', weak)  # If-None-Match compares weakly
    assert matches('"abc"', strong, weak=False) and not matches('W/"abc"', strong, weak=False)
    assert not matches('"abc"', weak, weak=False)  # If-Range: a weak tag never matches


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("wait=10", 10.0),
        ("respond-async, wait=5", 5.0),
        ("wait=5; foo=bar", 5.0),
        ('wait="7"', 7.0),
        ("Wait=3", 3.0),
        ("wait=100", 30.0),  # capped
        ("wait=soon", None),
        ("wait=-1", None),
        ("wait=1.5", None),  # delta-seconds are whole
        ("return=minimal", None),
    ],
)
def test_prefer_wait(header, expected):
    assert preferred_wait(header, 30.0) == expected


def test_webhook_address_policy():
    def reason(a: str) -> str | None:
        return refused_reason(ipaddress.ip_address(a))

    for a in ("8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"):
        assert reason(a) is None, a
    for a in ("127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
              "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1", "2002:7f00:1::1", "64:ff9b::7f00:1",
              "198.18.0.1", "203.0.113.9"):  # fmt: skip
        assert reason(a) is not None, a


def test_webhook_signature():
    body = b'{"id": "x"}'
    mac = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, body) == f"t=1700000000,v1={mac}"
