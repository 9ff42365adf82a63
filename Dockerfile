# syntax=docker/dockerfile:1
# One image for the gateway and the workers (the command picks the role), in two flavours:
#   CPU:    docker build -t srgan-service:cpu .
#   NVIDIA: docker build --build-arg TORCH_FLAVOR=cu128 -t srgan-service:cuda .
# torch comes from PyTorch's index of that flavour alone, so the CPU image holds no CUDA library (the build
# checks: deploy/docker/requirements.py). GPU workers need the NVIDIA driver on the host and
# nvidia-container-toolkit (the CUDA libraries are in the image).

FROM python:3.11-slim AS deps
ARG TORCH_FLAVOR=cpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SRGAN_HOST=0.0.0.0 \
    MALLOC_ARENA_MAX=2
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN useradd --create-home --uid 10001 --user-group srgan
WORKDIR /build
# Dependencies from pyproject.toml alone: a change to the code or the README does not reinstall torch.
COPY pyproject.toml deploy/docker/requirements.py ./
RUN python requirements.py torch pyproject.toml > torch.txt \
    && python requirements.py rest pyproject.toml > rest.txt \
    && pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_FLAVOR}" -r torch.txt \
    && pip install --no-cache-dir -r rest.txt \
    && python requirements.py check "${TORCH_FLAVOR}"

# The service itself, built into a wheel in a stage of its own: the image gets the installed package only.
FROM deps AS wheel
COPY README.md ./
COPY app app
COPY model model
COPY worker worker
COPY training training
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM deps
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl \
    && rm -rf /build \
    # The models and runs folders exist in the image, owned by srgan, so volumes mounted there are writable.
    && mkdir -p /var/lib/srgan/models /var/lib/srgan/runs \
    && chown -R srgan:srgan /var/lib/srgan
WORKDIR /home/srgan
USER 10001:10001

# 8000: gateway HTTP; 9100: worker Prometheus metrics.
EXPOSE 8000 9100
# Whichever role runs: a gateway answers /healthz; a worker's heartbeat is fresh (app/healthcheck.py). The
# start period covers a worker loading its models.
HEALTHCHECK --interval=30s --timeout=10s --start-period=5m --retries=3 CMD ["python", "-m", "app.healthcheck"]
# The gateway by default; workers run `srgan worker`. SIGTERM lets a worker finish its batch first.
STOPSIGNAL SIGTERM
CMD ["srgan", "serve"]
