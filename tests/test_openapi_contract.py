"""``/openapi.json`` is the contract: schemathesis, with every check, against a real gateway and worker.

It generates requests from the document (valid and invalid ones, the coverage, fuzzing and stateful phases),
sends them to the running gateway with its client and admin keys, and checks each answer against the
document: no 5xx, every status and media type documented, bodies matching their schemas, invalid data
refused, undocumented methods 405 with ``Allow``, OPTIONS' ``Allow`` right, auth enforced where declared.

Two kinds of answer are configured as expected, because the document cannot express them:

- a schema-valid request may still be refused with 4xx where validity depends on content or on other
  fields: an upload whose bytes are not an image (415) or whose weights do not load (422), a training run
  whose model or recipe does not exist, ``espcn_x2?scale=4`` (422);
- ``use_after_free`` (a resource must be 404 after its DELETE) is off for jobs and training runs: DELETE
  cancels them, and the canceled record stays readable until it expires, by design.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from servicekit import PY, ClaimedDB, service_env, start_gateway, start_worker, wait_ready  # noqa: E402

pytestmark = pytest.mark.timeout(900)
CHECKS = {  # every check schemathesis has (max_response_time needs a limit; we set none)
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
}
MAX_EXAMPLES = 25  # per operation and phase: about 1,000 requests, a minute or two here
SEED = 20261201

# Every check on ([checks] enabled: `--checks all` on the command line would override the per-operation lines).
CONFIG = """
[checks]
enabled = true

[auth.openapi.AdminKey]
bearer = "{admin}"

[auth.openapi.ClientKey]
bearer = "{client}"

[[operations]]
include-path = ["/v1/upscale", "/v1/models/{{name}}/versions", "/v1/training-runs"]
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", 401, 404, 409, 413, 415, 422, 429]

[[operations]]
include-path-regex = "^/v1/models/[{{]name[}}]/"
checks.positive_data_acceptance.expected-statuses = ["2xx", 401, 404, 409, 413, 415, 422, 429]

[[operations]]
include-path-regex = "^/v1/(jobs/[{{]job_id[}}]|training-runs/[{{]run_id[}}])"
checks.use_after_free.enabled = false
"""


def test_schemathesis_finds_no_failure(tmp_path):
    db = ClaimedDB()
    admin, client = "admin-" + uuid.uuid4().hex, "client-" + uuid.uuid4().hex
    env = service_env(
        db.url,
        f"contract{uuid.uuid4().hex[:6]}",
        admin_key=admin,
        api_keys=client,
        max_upload_bytes=300_000,
        max_model_upload_bytes=2_000_000,
    )
    worker = start_worker(env, tmp_path, ["bicubic"])
    gateway, url = start_gateway(env, tmp_path)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(admin=admin, client=client))
    try:
        wait_ready(url)
        cmd = [PY, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run", f"{url}/openapi.json"]
        cmd += ["--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1"]
        cmd += ["--report", "ndjson", "--report-ndjson-path", str(tmp_path / "events.ndjson")]
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=840)
        report = run.stdout[-12000:] + run.stderr[-3000:]
        assert run.returncode == 0, report
        assert " passed" in run.stdout and " failed" not in run.stdout, report
        ran = set(re.findall(r'"name":"([a-z_]+)"', (tmp_path / "events.ndjson").read_text())) & CHECKS
        assert ran == CHECKS, f"checks that never ran: {sorted(CHECKS - ran)}"
    finally:
        gateway.stop()
        worker.stop()
        db.release()
