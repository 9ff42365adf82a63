"""The LitServe server of ``srgan bench servers`` (needs litserve): ``python -m app.peer_litserve MODEL PORT BATCH
TIMEOUT_S``. LitServe's inference worker is a spawned process, so the LitAPI lives at module level (it is
pickled to the worker) and finds its model in the environment."""

from __future__ import annotations

import base64
import os
import sys

import litserve as ls
from fastapi import Response

from app.peer_servers import Pipeline

MODEL_ENV = "SRGAN_BENCH_MODEL"


class SRGANAPI(ls.LitAPI):
    def setup(self, device):
        self.pipe = Pipeline(os.environ[MODEL_ENV])

    def decode_request(self, request):
        return base64.b64decode(request["image"])

    def batch(self, inputs):
        return list(inputs)

    def predict(self, x):
        return self.pipe(x)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return Response(content=output, media_type="image/png")


def main(model: str, port: int, batch: int, timeout_s: float) -> None:
    os.environ[MODEL_ENV] = model  # the spawned inference worker inherits it
    api = SRGANAPI(max_batch_size=batch, batch_timeout=timeout_s)
    server = ls.LitServer(api, accelerator="auto", workers_per_device=1, timeout=600)
    server.run(host="127.0.0.1", port=port, num_api_servers=1, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python -m app.peer_litserve MODEL PORT BATCH TIMEOUT_S")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
