"""Clients with keys and jobs that belong to them, on a real gateway, worker and Redis: a job is seen only by the
key that created it (another key gets 404, as for an unknown job), idempotency keys are scoped to the client, and
an idempotency conflict never reveals another job's id (in open mode either)."""

from __future__ import annotations

import httpx
import pytest

from tests.servicekit import assert_error, photo, png

pytestmark = pytest.mark.timeout(300)
KEY_A, KEY_B, ADMIN = "client-a-" + "a" * 24, "client-b-" + "b" * 24, "admin-" + "c" * 24


@pytest.fixture(scope="module")
def keyed(stack_factory):
    return stack_factory(["bicubic"], api_keys=f"{KEY_A},{KEY_B}", admin_key=ADMIN)


def client(st, key: str | None) -> httpx.Client:
    return st.client(headers={"Authorization": f"Bearer {key}"} if key else {})


def submit(c: httpx.Client, data: bytes, idem: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": idem} if idem else {}
    return c.post("/v1/upscale", files={"file": ("a.png", data)}, data={"model": "bicubic"}, headers=headers)


def test_a_request_without_a_valid_key_is_401(keyed):
    data = png(photo(size=(8, 8)))
    for key in (None, "not-a-key", ADMIN):  # the admin key is not a client key
        with client(keyed, key) as c:
            assert_error(submit(c, data), 401, "unauthorized")
            assert_error(c.get("/v1/jobs/whatever"), 401, "unauthorized")


def test_each_job_belongs_to_the_key_that_created_it(keyed):
    with client(keyed, KEY_A) as a, client(keyed, KEY_B) as b:
        r = submit(a, png(photo(size=(8, 9))))
        assert r.status_code == 202, r.text
        jid = r.json()["id"]
        assert a.get(f"/v1/jobs/{jid}/result", params={"wait": 60}).status_code == 200
        # To another client the job does not exist: status, long-poll, result and cancel are all 404.
        assert_error(b.get(f"/v1/jobs/{jid}"), 404, "job_not_found")
        assert_error(b.get(f"/v1/jobs/{jid}", params={"wait": 30}), 404, "job_not_found")
        assert_error(b.get(f"/v1/jobs/{jid}/result"), 404, "job_not_found")
        assert_error(b.delete(f"/v1/jobs/{jid}"), 404, "job_not_found")
        assert a.get(f"/v1/jobs/{jid}").json()["status"] == "finished"  # still the owner's


def test_idempotency_keys_are_scoped_to_the_client(keyed):
    first, other = png(photo(size=(8, 10))), png(photo(size=(8, 11)))
    with client(keyed, KEY_A) as a, client(keyed, KEY_B) as b:
        ra = submit(a, first, idem="invoice-1001")
        rb = submit(b, other, idem="invoice-1001")  # the same key from another client: its own new job
        assert ra.status_code == 202 and rb.status_code == 202, (ra.text, rb.text)
        assert ra.json()["id"] != rb.json()["id"] and "idempotent-replayed" not in rb.headers
        again = submit(a, first, idem="invoice-1001")  # a replay: the same job
        assert again.status_code == 202 and again.json()["id"] == ra.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        conflict = submit(a, other, idem="invoice-1001")  # other bytes, same key, same client
        err = assert_error(conflict, 409, "idempotency_conflict")
        assert ra.json()["id"] not in conflict.text and rb.json()["id"] not in conflict.text, err
        assert b.get(f"/v1/jobs/{rb.json()['id']}/result", params={"wait": 60}).status_code == 200


def test_an_open_mode_conflict_reveals_no_job_id(stack_factory):
    st = stack_factory(["bicubic"], workers=0, ready=False)
    with st.client() as c:
        r = submit(c, png(photo(size=(8, 12))), idem="order-7")
        assert r.status_code == 202, r.text
        conflict = submit(c, png(photo(size=(8, 13))), idem="order-7")
        assert_error(conflict, 409, "idempotency_conflict")
        assert r.json()["id"] not in conflict.text
        replay = submit(c, png(photo(size=(8, 12))), idem="order-7")
        assert replay.json()["id"] == r.json()["id"]  # the same bytes and options: the same job
