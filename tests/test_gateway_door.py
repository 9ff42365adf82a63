"""The gateway's door, as a real process on a real Redis, tried as a hostile client would: client keys, bodies
refused before they are read, malformed cards, strict fields, one problem shape, OPTIONS and Allow."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from servicekit import ClaimedDB, assert_error, photo, png, service_env, start_gateway, wait_for  # noqa: E402

from app.auth import needs_client_key  # noqa: E402
from model.zoo import SHIPPED_WEIGHTS_DIR  # noqa: E402

pytestmark = pytest.mark.timeout(180)
ADMIN = "admin-" + uuid.uuid4().hex
ALICE = "alice-" + uuid.uuid4().hex  # an inline key (SRGAN_API_KEYS)
BOB = "bob-" + uuid.uuid4().hex  # in the keys file as its sha256
MODEL_LIMIT = 2_000_000  # SRGAN_MAX_MODEL_UPLOAD_BYTES here, so the streamed-upload test stays quick
WEIGHTS = SHIPPED_WEIGHTS_DIR / "espcn_x4.safetensors"


def short(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("door")
    db = ClaimedDB()
    keys_file = tmp / "client-keys"
    keys_file.write_text(f"# one client, stored hashed\nsha256:{hashlib.sha256(BOB.encode()).hexdigest()}\n")
    env = service_env(
        db.url,
        f"door{uuid.uuid4().hex[:6]}",
        admin_key=ADMIN,
        api_keys=ALICE,
        api_keys_file=keys_file,
        max_model_upload_bytes=MODEL_LIMIT,
        max_upload_bytes=300_000,
    )
    svc, url = start_gateway(env, tmp)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            yield {"url": url, "c": c, "svc": svc, "keys_file": keys_file}
    finally:
        svc.stop()
        db.release()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upscale(c: httpx.Client, key: str | None, **fields) -> httpx.Response:
    data = png(photo(size=(16, 16)))
    return c.post(
        "/v1/upscale",
        files={"file": ("a.png", data, "image/png")},
        data=fields,
        headers=bearer(key) if key else {},
    )


# -- client keys -------------------------------------------------------------------------------------------------


def test_without_a_valid_client_key_the_client_routes_answer_401(gw):
    c = gw["c"]
    for headers in ({}, bearer("wrong"), bearer(ADMIN), {"Authorization": ALICE}, {"Authorization": f"Basic {ALICE}"}):
        for method, path in (("POST", "/v1/upscale"), ("GET", "/v1/jobs/abc"), ("GET", "/v1/jobs/abc/result")):
            r = c.request(method, path, headers=headers, files={"file": ("a", b"x")} if method == "POST" else None)
            e = assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == 'Bearer realm="srgan"', r.headers
            assert "Authorization: Bearer" in e["message"]
        assert_error(c.delete("/v1/jobs/abc", headers=headers), 401, "unauthorized")


def test_each_client_key_works_and_public_routes_need_none(gw):
    c = gw["c"]
    for key in (ALICE, BOB):
        r = upscale(c, key, model="bicubic")
        assert r.status_code == 202, r.text
        assert c.get(r.json()["links"]["self"], headers=bearer(key)).json()["status"] == "queued"
    for path in ("/healthz", "/v1/models", "/openapi.json", "/metrics", "/"):
        assert c.get(path).status_code == 200, path
    assert_error(c.get("/readyz"), 503, "no_workers")  # not 401: no worker in this module


def test_the_admin_key_is_no_client_key_and_a_client_key_no_admin_key(gw):
    c = gw["c"]
    assert c.get("/v1/models/espcn/versions", headers=bearer(ADMIN)).status_code == 200
    assert_error(upscale(c, ADMIN), 401, "unauthorized")
    assert_error(c.get("/v1/models/espcn/versions", headers=bearer(ALICE)), 401, "unauthorized")


def test_requests_are_counted_per_client_by_a_short_hash_and_keys_never_show(gw):
    c = gw["c"]
    for key in (ALICE, ALICE, BOB, BOB, None):
        upscale(c, key, model="bicubic")
    text = c.get("/metrics").text
    counts = dict(re.findall(r'srgan_client_requests_total\{client="([0-9a-f]+)"\} ([0-9.]+)', text))
    assert float(counts[short(ALICE)]) >= 2 and float(counts[short(BOB)]) >= 2, counts
    assert float(re.search(r'srgan_client_auth_failures_total\{reason="missing"\} ([0-9.]+)', text)[1]) >= 1
    log = gw["svc"].output()
    for secret in (ALICE, BOB, ADMIN):
        assert secret not in text and secret not in log


def test_a_key_added_to_the_file_works_without_a_restart(gw):
    carol = "carol-" + uuid.uuid4().hex
    f = gw["keys_file"]
    f.write_text(f.read_text() + carol + "\n")

    def admitted() -> bool:
        return upscale(gw["c"], carol, model="bicubic").status_code == 202

    wait_for(admitted, 20, "the gateway to read the new key", interval=0.2)
    f.write_text(f.read_text().replace(carol, ""))
    wait_for(lambda: upscale(gw["c"], carol).status_code == 401, 20, "the key to be withdrawn", interval=0.2)


def test_openapi_declares_the_client_key_where_it_is_needed(gw):
    spec = gw["c"].get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["ClientKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    ops = {(p, m): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert ops[("/v1/upscale", "post")]["security"] == [{"ClientKey": []}]
    assert "401" in ops[("/v1/jobs/{job_id}", "get")]["responses"]
    assert "security" not in ops[("/v1/models", "get")] and "security" not in ops[("/healthz", "get")]
    assert ops[("/v1/models/{name}/promote", "post")]["security"] == [{"AdminKey": []}]


# -- bodies refused before they are read ------------------------------------------------------------------------


def raw_request(url: str, head: str, body_chunks=(), chunked: bool = False, timeout: float = 30):
    """Send a request by hand; stop sending as soon as the server answers. Returns (status line, response
    bytes, seconds until the answer, body bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=timeout)
    t0 = time.monotonic()
    s.sendall(head.encode())
    sent = 0
    s.setblocking(False)
    for chunk in body_chunks:
        try:
            if s.recv(1, socket.MSG_PEEK):  # answered
                break
        except BlockingIOError:
            pass
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
        try:
            s.setblocking(True)
            s.sendall(frame)
            s.setblocking(False)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(chunk)
    s.setblocking(True)
    s.settimeout(timeout)
    data = b""
    try:
        while got := s.recv(65536):  # the answer says Connection: close
            data += got
    except (ConnectionResetError, TimeoutError):
        pass
    elapsed = time.monotonic() - t0
    s.close()
    return data.split(b"\r\n", 1)[0].decode(), data, elapsed, sent


def head(path: str, key: str | None, length: int | None, ctype: str = "multipart/form-data; boundary=b") -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: door", f"Content-Type: {ctype}"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.mark.parametrize(
    "path,key,code",
    [
        ("/v1/models/espcn/versions", ADMIN, "upload_too_large"),
        ("/v1/upscale", ALICE, "upload_too_large"),
        ("/v1/models/espcn/promote", ADMIN, "request_too_large"),
        ("/v1/models/espcn/versions", None, "unauthorized"),
    ],
)
def test_a_huge_content_length_without_a_body_is_answered_at_once(gw, path, key, code):
    """The issue's probe: ``Content-Length: 300000000`` and no body hung for 20 s; now the answer comes from the
    header alone (401 for a stranger, 413 for a key holder), the connection closed."""
    ctype = "application/json" if path.endswith("promote") else "multipart/form-data; boundary=b"
    status, data, elapsed, _ = raw_request(gw["url"], head(path, key, 300_000_000, ctype))
    assert status.split()[1] == ("401" if code == "unauthorized" else "413"), data
    assert f'"code":"{code}"'.encode() in data and b"connection: close" in data.lower()
    assert elapsed < 10, elapsed


def test_an_oversized_upload_is_refused_before_it_is_read(gw):
    """Announced (the issue's 210 MB upload, here over the module's 2 MB limit): refused before a byte of the
    body is sent. Chunked, with no length to go by: cut off once the count passes the limit, never read whole."""
    part = b'--b\r\nContent-Disposition: form-data; name="weights"; filename="w"\r\n\r\n'  # then 20x the limit
    chunks = [part] + [b"\0" * 65536] * (20 * MODEL_LIMIT // 65536)
    total = sum(map(len, chunks))
    status, data, _, sent = raw_request(
        gw["url"], head("/v1/models/espcn/versions", ADMIN, 210_000_000), body_chunks=chunks
    )
    assert status.split()[1] == "413" and b"upload_too_large" in data and sent < total // 2, (status, sent)
    status, data, _, sent = raw_request(
        gw["url"], head("/v1/models/espcn/versions", ADMIN, None), body_chunks=chunks, chunked=True
    )
    assert status.split()[1] == "413" and b"upload_too_large" in data, (status, data[:300])
    # the server stops reading at the limit (3.1 MB with the card and framing); socket buffers take a few MB more
    assert sent < total // 2, f"{sent:,} of {total:,} bytes sent before the answer"
    assert gw["c"].get("/healthz").status_code == 200


def test_the_wrong_body_media_type_is_415(gw):
    c = gw["c"]
    r = c.post(
        "/v1/models/espcn/promote", content=b"version=2", headers={**bearer(ADMIN), "content-type": "text/plain"}
    )
    assert_error(r, 415, "unsupported_media_type")
    r = c.post("/v1/upscale", json={"file": "x"}, headers=bearer(ALICE))
    assert_error(r, 415, "unsupported_media_type")


def test_a_body_that_cannot_be_parsed_is_400_in_the_problem_shape(gw):
    c = gw["c"]
    r = c.post(
        "/v1/upscale",
        content=b"garbage, not multipart",
        headers={**bearer(ALICE), "content-type": "multipart/form-data; boundary=yyy"},
    )
    assert_error(r, 400, "malformed_body")
    r = c.post(
        "/v1/models/espcn/promote", content=b"\xff\xfe{", headers={**bearer(ADMIN), "content-type": "application/json"}
    )
    assert_error(r, 400, "malformed_body")


# -- model cards ------------------------------------------------------------------------------------------------


def upload(c: httpx.Client, card: bytes, **fields) -> httpx.Response:
    return c.post(
        "/v1/models/espcn/versions",
        headers=bearer(ADMIN),
        data=fields,
        files={
            "weights": ("espcn_x4.safetensors", WEIGHTS.read_bytes(), "application/octet-stream"),
            "card": ("card.json", card, "application/json"),
        },
    )


def shipped_card(**changes) -> dict:
    d = json.loads(WEIGHTS.with_suffix(".json").read_text())
    d["sha256"] = ""
    for k, v in changes.items():
        if k.startswith("arch_params."):
            d["arch_params"][k.split(".", 1)[1]] = v
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(
    "case,field",
    [
        ("nested 200k deep", "recipe[][][]"),
        ("scale 1e400", "scale"),
        ("num_feat -1", "arch_params.num_feat"),
        ("n1 -1", "arch_params.n1"),
        ("unknown arch", "arch"),
        ("NaN metric", "metrics.Set5.psnr_y"),
        ("f1 even", "arch_params.f1"),
    ],
)
def test_each_malformed_card_is_422_naming_its_field(gw, case, field):
    """The issue's probes (each was a 500) and their kin: 422 ``invalid_card`` naming the field; nothing built."""
    d = shipped_card()
    if case == "nested 200k deep":
        raw = json.dumps(d)[:-1].encode() + b', "recipe": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    elif case == "scale 1e400":
        raw = json.dumps(d).replace('"scale": 4,', '"scale": 1e400,', 1).encode()
    elif case == "NaN metric":
        raw = json.dumps(d).replace('"psnr_y": 30.0642', '"psnr_y": NaN').encode()
    else:
        changes = {
            "num_feat -1": {"arch": "srresnet", "arch_params.num_feat": -1},
            "n1 -1": {"arch_params.n1": -1},
            "unknown arch": {"arch": "vdsr"},
            "f1 even": {"arch_params.f1": 4},
        }[case]
        raw = json.dumps(shipped_card(**changes)).encode()
    e = assert_error(upload(gw["c"], raw), 422, "invalid_card")
    assert f"invalid: {field}" in e["message"], e["message"]
    assert gw["c"].get("/v1/models/espcn/versions", headers=bearer(ADMIN)).json()["history"] == [1]


# -- strict fields ----------------------------------------------------------------------------------------------


def test_booleans_are_booleans_and_numbers_are_numbers(gw):
    c, h = gw["c"], bearer(ADMIN)
    run = {"stage": "espcn", "data": ["/nowhere"]}
    for bad, field in (
        ({**run, "auto_promote": 0}, "auto_promote"),
        ({**run, "auto_promote": "true"}, "auto_promote"),
        ({**run, "steps": "100"}, "steps"),
        ({**run, "stpes": 100}, "stpes"),
        ({**run, "data": [""]}, "data.0"),
        ({**run, "model": ""}, "model"),
    ):
        r = c.post("/v1/training-runs", json=bad, headers=h)
        e = assert_error(r, 422, "invalid_request")
        assert [f["field"] for f in r.json()["errors"]] == [field], (bad, e)
    assert_error(c.post("/v1/models/espcn/promote", json={"version": True}, headers=h), 422, "invalid_request")
    assert_error(c.post("/v1/models/espcn/promote", json={"version": "2"}, headers=h), 422, "invalid_request")
    # 2.0 is the integer 2 (JSON Schema says so): accepted, and there is no version 2
    assert_error(c.post("/v1/models/espcn/promote", json={"version": 2.0}, headers=h), 404, "unknown_version")
    assert_error(c.post("/v1/models/espcn/promote", json={"version": 1, "by": ""}, headers=h), 422, "invalid_request")
    r = upload(c, json.dumps(shipped_card()).encode(), force="1")
    assert_error(r, 422, "invalid_request")
    assert r.json()["errors"][0]["field"] == "force"


@pytest.mark.parametrize("field", ["model", "scale", "format", "quality"])
def test_an_empty_upload_field_is_refused_not_taken_for_the_default(gw, field):
    r = upscale(gw["c"], ALICE, **{field: ""})
    assert_error(r, 422, "invalid_request")
    assert r.json()["errors"] == [{"field": field, "message": "empty: leave it out for the default"}]


# -- methods ----------------------------------------------------------------------------------------------------


def test_options_and_405_list_every_method_of_the_path(gw):
    """Each documented path: OPTIONS answers 204 with ``Allow`` = its documented methods (+ OPTIONS; HEAD where
    GET), and an undocumented method gets 405 in the problem shape with the same ``Allow``."""
    c = gw["c"]
    spec = c.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        concrete = path.replace("{job_id}", "abc").replace("{run_id}", "abc").replace("{name}", "espcn")
        concrete = concrete.replace("{version}", "1")
        documented = {m.upper() for m in item}
        r = c.options(concrete)
        assert r.status_code == 204, (path, r.status_code, r.text)
        allowed = {m.strip() for m in r.headers["allow"].split(",")}
        assert allowed - {"OPTIONS", "HEAD"} == documented - {"HEAD"}, (path, allowed, documented)
        assert "HEAD" not in documented or "HEAD" in allowed, (path, allowed)  # a result's HEAD is its own route
        wrong = next(m for m in ("PUT", "PATCH", "DELETE", "POST") if m not in documented)
        e = c.request(wrong, concrete, headers=bearer(ALICE if needs_client_key(concrete) else ADMIN))
        assert_error(e, 405, "method_not_allowed")
        assert {m.strip() for m in e.headers["allow"].split(",")} == allowed, path
