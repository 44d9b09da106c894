# Trellis: every target sets up its own virtualenv from the pinned requirements.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest validate clean preview browser bootstrap package package-stage deploy teardown bench

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## make demo: the local twin (moto server + API on 127.0.0.1); Ctrl-C stops it all.
demo: $(STAMP)
	$(BIN)/python -m twin.run

## make test: lint, type-check and the test suite.
test: lint typecheck validate pytest

lint: $(STAMP)
	$(BIN)/ruff check chalicelib app.py twin infra testkit tests
	$(BIN)/ruff format --check chalicelib app.py twin infra testkit tests

typecheck: $(STAMP)
	$(BIN)/mypy chalicelib app.py twin infra testkit

validate: $(STAMP)
	$(BIN)/python -m chalicelib.validate campaigns/*.yaml

pytest: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 -q

## Debian's Chromium and ChromeDriver for the real-browser test, installed when missing
## (CI runs as root; elsewhere sudo is used when there is one). Never a browser download.
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver
APT_INSTALL := apt-get install -y -q chromium chromium-driver
browser:
	@if [ -x $(CHROMIUM) ] && [ -x $(CHROMEDRIVER) ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive $(APT_INSTALL); \
	elif command -v sudo >/dev/null; then sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive $(APT_INSTALL); \
	else echo "make: the browser test needs Debian's chromium and chromium-driver: run '$(APT_INSTALL)' as root" >&2; exit 1; fi

## make bootstrap STAGE=<campaign> [CAMPAIGN=<file>] [PUBLIC_URL=<url>] [ALARM_EMAIL=<address>] [LOG_RETENTION_DAYS=30]: the stage's stack, secrets,
## policy and .chalice/config.json entry (AWS credentials from the usual places); then chalice deploy.
bootstrap: $(STAMP)
	@test -n "$(STAGE)" || { echo "make bootstrap: set STAGE=<campaign stage>" >&2; exit 2; }
	$(BIN)/python -m infra.bootstrap --stage "$(STAGE)" $(if $(CAMPAIGN),--campaign "$(CAMPAIGN)") $(if $(PUBLIC_URL),--public-url "$(PUBLIC_URL)") $(if $(ALARM_EMAIL),--alarm-email "$(ALARM_EMAIL)") $(if $(LOG_RETENTION_DAYS),--log-retention-days "$(LOG_RETENTION_DAYS)")

## make deploy STAGE=<campaign>: from any checkout, under the stage's lock: the deploy state from AWS
## (infra/deploy.py), chalice deploy, the state back to AWS, then what chalice cannot set
## (infra/after_deploy.py: the stream mapping's retries and failure queue, the API's 401 gateway
## responses). After a bootstrap.
deploy: $(STAMP)
	@test -n "$(STAGE)" || { echo "make deploy: set STAGE=<campaign stage>" >&2; exit 2; }
	$(BIN)/python -m infra.deploy --stage "$(STAGE)"

## make teardown STAGE=<campaign> [DELETE_DATA=yes]: from any checkout, what make deploy made (found by
## name too), the stack, the secrets and the stage's config; the table and bucket are kept (and
## named, also in SSM) unless DELETE_DATA=yes (backup first). It lists what it deleted and kept.
teardown: $(STAMP)
	@test -n "$(STAGE)" || { echo "make teardown: set STAGE=<campaign stage>" >&2; exit 2; }
	$(BIN)/python -m infra.teardown --stage "$(STAGE)" $(if $(filter yes,$(DELETE_DATA)),--delete-data)

## make package STAGE=<campaign> [CAMPAIGN=<file>] [PUBLIC_URL=<url>] [OUT=dist] [LOG_RETENTION_DAYS=30]: the single-stack
## path, one SAM template (app + resources) in $(OUT)/sam.json with $(OUT)/deployment.zip, cfn-linted.
## No AWS credentials needed. The stage check comes first, before the virtualenv is touched.
OUT ?= dist
package: package-stage $(STAMP)
	$(BIN)/python -m infra.package --stage "$(STAGE)" $(if $(CAMPAIGN),--campaign "$(CAMPAIGN)") $(if $(PUBLIC_URL),--public-url "$(PUBLIC_URL)") $(if $(LOG_RETENTION_DAYS),--log-retention-days "$(LOG_RETENTION_DAYS)") --out "$(OUT)"

package-stage:
	@test -n "$(STAGE)" || { echo "make package: set STAGE=<campaign stage>" >&2; exit 2; }

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache dist

## make preview: render every nurture email for a sample lead into preview/ (open the .html files in a browser).
preview: $(STAMP)
	$(BIN)/python -m chalicelib.nurture.preview --campaign demo --all --out-dir preview

## make bench: what each operation costs in AWS requests, how it scales, how close it runs to its limits
## (in-process moto, a few minutes; BENCH_QUICK=1 for small sizes). Prints and writes bench/RESULTS.md. Not part of test.
bench: $(STAMP)
	$(BIN)/python -m bench.run
