# One image for the gateway and the workers (the command picks the role).
#   CPU:    docker build -t srgan-service .
#   NVIDIA: docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t srgan-service:cuda .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SRGAN_HOST=0.0.0.0 \
    MALLOC_ARENA_MAX=2

WORKDIR /srv
# Dependencies first, so code changes do not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir app model worker training && touch app/__init__.py model/__init__.py worker/__init__.py \
        training/__init__.py \
    && pip install --extra-index-url "$TORCH_INDEX" '.[service]' \
    && pip uninstall -y srgan-service
COPY app app
COPY model model
COPY worker worker
COPY training training
# The models and runs folders exist in the image, owned by srgan, so named volumes mounted there are writable.
RUN pip install --no-deps . && useradd --create-home --uid 10001 srgan \
    && mkdir -p /var/lib/srgan/models /var/lib/srgan/runs && chown -R srgan /var/lib/srgan
USER srgan

# 8000: gateway HTTP; 9100: worker Prometheus metrics.
EXPOSE 8000 9100
# The gateway by default; workers run `srgan worker`. SIGTERM lets a worker finish its batch first.
STOPSIGNAL SIGTERM
CMD ["srgan", "serve"]
