"""Body limits and media types, enforced before FastAPI parses a request: :class:`BodyGuard`.

Each request with a body is held to its route's limit, from ``Content-Length`` at once (a request that
announces 300 MB is answered 413 before a byte of it is read) and by counting the body as it streams in (a
chunked upload is cut off at the limit, never read whole):

==================================  ======================================================  =====================
route                               limit                                                   body media type
==================================  ======================================================  =====================
``POST /v1/upscale``                SRGAN_MAX_UPLOAD_BYTES (+64 KiB of multipart framing)   multipart/form-data
``POST /v1/models/{name}/versions`` SRGAN_MAX_MODEL_UPLOAD_BYTES + the card's 1 MB (+64 KiB) multipart/form-data
other ``POST`` routes               1 MiB                                                   application/json
anything else                       1 MiB
==================================  ======================================================  =====================

Refusals are 413 ``upload_too_large`` / ``request_too_large`` or 415 ``unsupported_media_type``, with
``Connection: close`` (the rest of the body is not drained).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import errors, metrics
from app.config import Settings

__all__ = ["BodyGuard", "body_rules", "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 1 << 20
_FRAMING = 64 * 1024  # multipart boundaries, part headers and the small form fields


@dataclass(frozen=True)
class BodyRule:
    method: str
    path: re.Pattern
    limit: int
    media_type: str | None  # the body's required media type (None: any)
    what: str  # "upload" (an image), "weights" (a model upload) or "body"
    limit_text: str


def body_rules(s: Settings) -> list[BodyRule]:
    from model.card import MAX_CARD_BYTES

    return [
        BodyRule(
            "POST",
            re.compile(r"/v1/upscale"),
            s.max_upload_bytes + _FRAMING,
            "multipart/form-data",
            "upload",
            f"uploads are limited to {s.max_upload_bytes:,} bytes (SRGAN_MAX_UPLOAD_BYTES)",
        ),
        BodyRule(
            "POST",
            re.compile(r"/v1/models/[^/]+/versions"),
            s.max_model_upload_bytes + MAX_CARD_BYTES + _FRAMING,
            "multipart/form-data",
            "weights",
            f"weights are limited to {s.max_model_upload_bytes:,} bytes (SRGAN_MAX_MODEL_UPLOAD_BYTES) "
            f"and a card to {MAX_CARD_BYTES:,}",
        ),
        BodyRule(
            "POST",
            re.compile(r"/v1/.*"),
            MAX_JSON_BYTES,
            "application/json",
            "body",
            f"JSON bodies are limited to {MAX_JSON_BYTES:,} bytes",
        ),
    ]


_DEFAULT = BodyRule("*", re.compile(".*"), MAX_JSON_BYTES, None, "body", f"bodies are limited to {MAX_JSON_BYTES:,}")


class BodyGuard:
    """Refuses a body that is too large (413) or of the wrong media type (415) before anything parses it."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.rules = body_rules(settings)

    def rule(self, method: str, path: str) -> BodyRule:
        return next((r for r in self.rules if r.method == method and r.path.fullmatch(path)), _DEFAULT)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is None and not chunked:  # no body
            await self.app(scope, receive, send)
            return
        rule = self.rule(scope["method"], scope["path"])
        if length is not None and length.isdigit() and int(length) > rule.limit:
            await self._refuse(scope, receive, send, rule, 413, self._too_large(rule, f"is {int(length):,} bytes"))
            return
        if rule.media_type and (chunked or length not in (b"0", None)):
            ctype = headers.get(b"content-type", b"").decode("latin-1")
            if ctype.split(";", 1)[0].strip().lower() != rule.media_type:
                message = f"send the body as {rule.media_type}, not {ctype or 'no media type'}"
                if rule.what == "upload":
                    message = f"send the image as multipart/form-data (field `file`), not {ctype or 'no type'}"
                await self._refuse(scope, receive, send, rule, 415, ("unsupported_media_type", message))
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > rule.limit:
                    code, text = self._too_large(rule, f"passed {rule.limit:,} bytes")
                    _count(rule, code)
                    raise errors.ApiError(413, code, text, {"Connection": "close"})
            return message

        await self.app(scope, counted, send)

    @staticmethod
    def _too_large(rule: BodyRule, size: str) -> tuple[str, str]:
        code = "request_too_large" if rule.what == "body" else "upload_too_large"
        return code, f"the request {size}; {rule.limit_text}"

    @staticmethod
    async def _refuse(scope, receive, send, rule: BodyRule, status: int, refusal: tuple[str, str]) -> None:
        code, message = refusal
        _count(rule, code)
        await errors.error_response(status, code, message, {"Connection": "close"})(scope, receive, send)


def _count(rule: BodyRule, code: str) -> None:
    if rule.what == "upload":
        metrics.JOBS_REJECTED.labels(code).inc()
    elif rule.what == "weights":
        metrics.REGISTRY_ACTIONS.labels("upload", code).inc()
