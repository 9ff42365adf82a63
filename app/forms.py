"""``multipart/form-data`` (RFC 7578) of a body read whole: the upload route's form in a few ``bytes.find`` calls.

Starlette's streaming parser (python-multipart's, per chunk and per byte of part headers, each file spooled)
cost the upload route more CPU than everything else it does for a small image (the overhead benchmark). The
upload's body is bounded before it is read (:class:`app.guards.BodyGuard`), so the route reads it whole and
splits it here; part headers are parsed by python-multipart's ``parse_options_header``. A body that is not
well-formed multipart is a 400 (``malformed_body``), as Starlette answers.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

__all__ = ["Part", "parse_form"]

MAX_PARTS = 64
MAX_PART_HEADERS = 16 * 1024


class Part:
    __slots__ = ("name", "filename", "content_type", "data")

    def __init__(self, name: str, filename: str | None, content_type: str | None, data: bytes):
        self.name, self.filename, self.content_type, self.data = name, filename, content_type, data

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _malformed(why: str) -> HTTPException:
    return HTTPException(400, f"malformed multipart body: {why}")


def boundary_of(content_type: str | None) -> bytes:
    from python_multipart.multipart import parse_options_header

    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not 1 <= len(boundary) <= 70:
        raise _malformed("no boundary (1 to 70 characters) in its Content-Type")
    return boundary


def parse_form(body: bytes, content_type: str | None) -> dict[str, list[Part]]:
    """The parts of ``body`` by field name, in order. Preamble and epilogue are ignored; a missing final
    delimiter, a part without ``Content-Disposition: form-data; name=...`` or over :data:`MAX_PARTS` parts is
    refused (400)."""
    from python_multipart.multipart import parse_options_header

    delimiter = b"--" + boundary_of(content_type)
    if body.startswith(delimiter):  # the first delimiter starts the body or a line (after a preamble)
        at = len(delimiter)
    else:
        at = body.find(b"\r\n" + delimiter)
        if at < 0:
            raise _malformed("no delimiter")
        at += 2 + len(delimiter)
    parts: dict[str, list[Part]] = {}
    count = 0
    while True:
        if body.startswith(b"--", at):
            return parts  # the close delimiter; the rest is epilogue
        eol = body.find(b"\r\n", at)
        if eol < 0 or body[at:eol].strip(b" \t"):  # transport padding (spaces, tabs) may follow a delimiter
            raise _malformed("a delimiter is not followed by a line break")
        end_headers = body.find(b"\r\n\r\n", eol, eol + MAX_PART_HEADERS)
        if end_headers < 0:
            raise _malformed(f"a part's headers do not end within {MAX_PART_HEADERS:,} bytes")
        end = body.find(b"\r\n" + delimiter, end_headers + 4)
        if end < 0:
            raise _malformed("the body ends inside a part (no final delimiter)")
        count += 1
        if count > MAX_PARTS:
            raise _malformed(f"more than {MAX_PARTS} parts")
        headers = {}
        for line in body[eol + 2 : end_headers].split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                raise _malformed("a part header line has no colon")
            headers[name.strip().lower()] = value.strip()
        kind, options = parse_options_header(headers.get(b"content-disposition"))
        if kind != b"form-data" or b"name" not in options:
            raise _malformed("a part without Content-Disposition: form-data; name=...")
        filename = options.get(b"filename")
        ctype = headers.get(b"content-type")
        part = Part(options[b"name"].decode("utf-8", errors="replace"),
                    None if filename is None else filename.decode("utf-8", errors="replace"),
                    None if ctype is None else ctype.decode("latin-1"), body[end_headers + 4 : end])  # fmt: skip
        parts.setdefault(part.name, []).append(part)
        at = end + 2 + len(delimiter)
