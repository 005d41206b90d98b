# shapesync developer commands.  `make run` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
PYTEST_ARGS ?=
NODE_DIR   := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.install-stamp
TANSTACK_DIR   := tests/node/tanstack
TANSTACK_STAMP := $(TANSTACK_DIR)/node_modules/.install-stamp

.PHONY: setup constraints node-setup nginx-setup run test test-all check lint type fmt bench clean

setup: $(STAMP)

CONSTRAINTS := config/constraints.txt

# Re-install only when the project metadata or the pinned versions changed; a no-op otherwise.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' -c $(CONSTRAINTS)
	@touch $(STAMP)

# Re-pin config/constraints.txt to the newest releases pyproject.toml allows (its comment header is kept).
constraints:
	d=$$(mktemp -d) && $(PYTHON) -m venv $$d/venv \
	&& $$d/venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]' \
	&& { grep '^#' $(CONSTRAINTS); $$d/venv/bin/pip freeze --exclude-editable; } > $$d/constraints.txt \
	&& mv $$d/constraints.txt $(CONSTRAINTS); status=$$?; rm -rf $$d; exit $$status

# The Node project of tests/api/test_official_client.py (the official @electric-sql/client): `npm ci` only when
# node_modules is missing or older than the lockfile; a no-op otherwise.
node-setup: $(NODE_STAMP) $(TANSTACK_STAMP)

$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

# tests/api/test_tanstack.py: TanStack DB + its electric collection, a project of its own (it pins @tanstack/db).
$(TANSTACK_STAMP): $(TANSTACK_DIR)/package-lock.json
	cd $(TANSTACK_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $(TANSTACK_STAMP)

# tests/api/test_nginx_cache.py runs the distribution's nginx in front of the service: installed (Debian's
# nginx-light) when the machine has none; a no-op otherwise.
nginx-setup:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; \
	}

# Serve the demo: uses DATABASE_URL when set, otherwise a local dev Postgres under .data/.
run: setup
	$(PY) -m sync.cli serve --dev

test: setup node-setup nginx-setup
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: setup node-setup nginx-setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

type: setup
	$(VENV)/bin/mypy

check: lint type test

fmt: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Every benchmark prints one JSON line.
bench: setup
	@for m in $$(ls bench/*.py | xargs -n1 basename | grep -v '^_' | sed 's/\.py$$//'); do \
		$(PY) -m bench.$$m || exit 1; \
	done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
