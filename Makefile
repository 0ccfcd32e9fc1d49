# dagster-taskiq-go — build, test and demo. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TOOLS  := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(CURDIR)/$(VENV)/bin:$(PATH)
export CGO_LDFLAGS_ALLOW := -fwrapv

GO_SRC := go.mod go.sum $(shell find gobridge -name '*.go' 2>/dev/null)
PY_SRC := setup.py pyproject.toml $(shell find dagster_taskiq_go pyshim -name '*.py' 2>/dev/null)

.PHONY: help venv tools install build wheel wheel-smoke test test-go test-py test-faults test-load lint demo screenshots clean check-go

help:
	@echo "make demo     set up everything and run the local demo (moto + workers + example job)"
	@echo "make test     run all tests (Go and Python)"
	@echo "make install | build | wheel | test-go | test-py | test-faults | test-load | lint | screenshots | clean"

check-go:
	@command -v go >/dev/null || { echo "Go 1.26 is required to build the core: install it and retry"; exit 1; }

venv: $(VENV)/.deps-stamp
$(VENV)/.deps-stamp: requirements/dev.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt -c requirements/constraints.txt
	touch $@

tools: $(TOOLS)/gopy $(TOOLS)/goimports
$(TOOLS)/gopy $(TOOLS)/goimports: tools/go.mod tools/go.sum | check-go
	cd tools && GOBIN=$(TOOLS) go install github.com/go-python/gopy golang.org/x/tools/cmd/goimports

# Build the gopy extension and install the package into the venv (not editable: the wheel layout).
install: $(VENV)/.install-stamp
build: install
# The built module is also copied into the source tree, so that code run from the project's root
# (where ./dagster_taskiq_go shadows the installed package) finds it too.
$(VENV)/.install-stamp: $(VENV)/.deps-stamp $(TOOLS)/gopy $(GO_SRC) $(PY_SRC)
	$(PY) -m pip install -q --no-build-isolation --no-deps --force-reinstall .
	rm -rf dagster_taskiq_go/_native
	cp -r "$$($(PY) -P -c 'import dagster_taskiq_go._native as m, os; print(os.path.dirname(m.__file__))')" \
		dagster_taskiq_go/_native
	touch $@

# A platform wheel retagged manylinux by auditwheel (the module needs only glibc >= 2.34).
wheel: venv tools
	rm -rf dist build/wheel
	$(PY) -m pip wheel --no-build-isolation --no-deps -w build/wheel .
	$(VENV)/bin/auditwheel repair --plat manylinux_2_34_x86_64 -w dist build/wheel/*.whl
	$(VENV)/bin/auditwheel show dist/*.whl

# Install the wheel into a fresh virtualenv whose PATH has no Go, and call the core through it.
SMOKE := build/smoke-venv
wheel-smoke: wheel
	rm -rf $(SMOKE)
	"$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(SMOKE)
	env PATH=$(CURDIR)/$(SMOKE)/bin:/usr/bin:/bin $(SMOKE)/bin/pip install -q -c requirements/constraints.txt dist/*.whl
	cd / && env PATH=$(CURDIR)/$(SMOKE)/bin:/usr/bin:/bin sh -c \
		'! command -v go >/dev/null && python -c "import dagster_taskiq_go as d; print(\"native_version\", d.native_version())"'

test: test-go test-py

test-go: venv check-go
	go test -race -count=1 ./gobridge/...

test-py: install
	$(PY) -m pytest -q

# Injected faults (outages, redelivery, poison, host loss, load, PostgreSQL storage); each case adds a
# row to the table printed at the end. The PostgreSQL cases need the Debian package postgresql.
test-faults: install
	FAULT_STEP_PROCESS=warm $(PY) -m pytest -q -o addopts="" tests/faults
	FAULT_STEP_PROCESS=cold $(PY) -m pytest -q -o addopts="" tests/faults

# The load case alone, with 500 steps (not run in CI).
test-load: install
	FAULT_LOAD_STEPS=500 $(PY) -m pytest -q -o addopts="" tests/faults/test_load.py

lint: venv
	go vet ./gobridge/...
	@test -z "$$(gofmt -l gobridge tools)" || { gofmt -l gobridge tools; echo "gofmt: files above need formatting"; exit 1; }
	$(VENV)/bin/ruff check dagster_taskiq_go pyshim tests examples docs/screenshots setup.py
	$(VENV)/bin/ruff format --check dagster_taskiq_go pyshim tests examples docs/screenshots setup.py

demo: install
	$(VENV)/bin/dagster-taskiq-go dev

# docs/images/ from a real run of examples/s3_project in the Dagster UI, shot by headless Chromium
# (installed with apt-get when missing and root).
screenshots: install
	command -v chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get update -q && apt-get install -y -q chromium; }
	$(PY) docs/screenshots/take.py

clean:
	rm -rf build dist *.egg-info dagster_taskiq_go/_native $(VENV)/.install-stamp

# Benchmark: taskiq_executor (warm and cold step path) vs dagster-celery (Redis) vs multiprocess_executor,
# same jobs, same slots; TaskiqRunLauncher vs DefaultRunLauncher.
# Starts moto, redis-server (apt-installed when missing and root) and workers itself; see docs/performance.md.
.PHONY: bench bench-quick
$(VENV)/.bench-stamp: bench/requirements.txt $(VENV)/.deps-stamp
	$(PY) -m pip install -q -r bench/requirements.txt -c requirements/constraints.txt
	touch $@

bench: install $(VENV)/.bench-stamp
	$(PY) bench/run.py

bench-quick: install $(VENV)/.bench-stamp
	$(PY) bench/run.py --quick
