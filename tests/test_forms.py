"""``app.forms``: the upload route's multipart parser, against what httpx sends and what Starlette's parser reads
from the same bytes, and on bodies that are not well-formed."""

from __future__ import annotations

import asyncio
import os
import random

import httpx
import pytest
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from app.forms import MAX_PARTS, parse_form


def encoded(data: dict, files: dict) -> tuple[bytes, str]:
    """A body and Content-Type exactly as httpx (the service's client) sends them."""
    request = httpx.Request("POST", "http://x/v1/upscale", data=data, files=files)
    return request.read(), request.headers["content-type"]


def starlette_form(body: bytes, content_type: str) -> dict[str, list[bytes | str]]:
    async def stream():
        yield body

    async def parse():
        parser = MultiPartParser(Headers({"content-type": content_type}), stream(), max_part_size=1 << 30)
        form = await parser.parse()
        out: dict[str, list[bytes | str]] = {}
        for k, v in form.multi_items():
            out.setdefault(k, []).append(await v.read() if isinstance(v, UploadFile) else v)
        return out

    return asyncio.run(parse())


def test_the_parts_match_what_starlette_reads_from_the_same_bytes():
    rng = random.Random(7)
    for _ in range(200):
        # Binary content full of the bytes a parser could trip on: CR, LF, dashes, boundary-like runs.
        blob = b"".join(rng.choice([b"\r\n", b"--", b"\r\n--", b"\x00", os.urandom(rng.randint(0, 40))])
                        for _ in range(rng.randint(0, 60)))  # fmt: skip
        data = {"model": rng.choice(["bicubic", "srgan@3", "é ü"]), "scale": str(rng.randint(1, 8))}
        if rng.random() < 0.5:
            data["callback_url"] = "https://example.com/" + "x" * rng.randint(0, 300)
        body, ctype = encoded(data, {"file": (rng.choice(["a.png", "ünï code.jpg", "x"]), blob, "image/png")})
        parts = parse_form(body, ctype)
        theirs = starlette_form(body, ctype)
        assert sorted(parts) == sorted(theirs)
        assert parts["file"][0].data == theirs["file"][0] == blob
        for name in data:
            assert [p.text() for p in parts[name]] == theirs[name]
        assert parts["file"][0].filename is not None and parts["model"][0].filename is None


def test_a_field_sent_twice_is_kept_twice_in_order():
    body, ctype = encoded({"model": ["a", "b"]}, {"file": ("f", b"img", "image/png")})
    assert [p.text() for p in parse_form(body, ctype)["model"]] == ["a", "b"]


def test_preamble_epilogue_and_transport_padding_are_allowed():
    body = (b"a preamble\r\n--XX  \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
            b"--XX\r\ncontent-disposition: form-data; name=\"file\"; filename=\"f.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\r\nPNG\r\n\r\n--XX--\r\nan epilogue")  # fmt: skip
    parts = parse_form(body, 'multipart/form-data; boundary="XX"')
    assert parts["a"][0].text() == "1"
    assert parts["file"][0].data == b"\r\nPNG\r\n" and parts["file"][0].content_type == "image/png"


@pytest.mark.parametrize(
    ("body", "ctype", "why"),
    [
        (b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n", "multipart/form-data; boundary=XX",
         "no final delimiter"),
        (b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--", "multipart/form-data",
         "no boundary"),
        (b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--", "application/json", "not multipart"),
        (b"no delimiter at all", "multipart/form-data; boundary=XX", "no delimiter"),
        (b"--XX\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\n1\r\n--XX--", "multipart/form-data; boundary=XX",
         "not form-data"),
        (b"--XX\r\nContent-Disposition: form-data\r\n\r\n1\r\n--XX--", "multipart/form-data; boundary=XX", "no name"),
        (b"--XX\r\nno colon here\r\n\r\n1\r\n--XX--", "multipart/form-data; boundary=XX", "header without colon"),
        (b"--XXjunk\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--", "multipart/form-data; boundary=XX",
         "junk after the delimiter"),
        (b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n" + b"X-Pad: y\r\n" * 3000 + b"\r\n1\r\n--XX--",
         "multipart/form-data; boundary=XX", "endless part headers"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_well_formed_multipart_is_a_400(body, ctype, why):
    with pytest.raises(HTTPException) as e:
        parse_form(body, ctype)
    assert e.value.status_code == 400 and "malformed multipart" in e.value.detail, why


def test_more_parts_than_the_limit_is_a_400():
    body, ctype = encoded({f"f{i}": "x" for i in range(MAX_PARTS)}, {"file": ("f", b"img", "image/png")})
    with pytest.raises(HTTPException) as e:
        parse_form(body, ctype)
    assert e.value.status_code == 400 and f"more than {MAX_PARTS} parts" in e.value.detail
    body, ctype = encoded({f"f{i}": "x" for i in range(MAX_PARTS - 1)}, {"file": ("f", b"img", "image/png")})
    assert len(parse_form(body, ctype)) == MAX_PARTS
