# The two commands: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench install postgres kafka chromium lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The MLflow-server tests start their own PostgreSQL from the system's server binaries
# (devstack/postgres.py); install them once where initdb is missing. Runs as root, as CI does.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "PostgreSQL's initdb is missing and there is no apt-get:" \
	    "install the PostgreSQL server binaries (initdb, pg_ctl) by hand" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The page's browser tests and bench.ui drive Debian's chromium through Playwright for Python
# (executable_path=/usr/bin/chromium: `playwright install` downloads nothing here). Runs as root, as CI does.
chromium:
	@test -x /usr/bin/chromium || { \
	  command -v apt-get >/dev/null || { echo "the browser tests need /usr/bin/chromium and there is no apt-get:" \
	    "install Chromium by hand" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Apache Kafka for the tests and the benches (devstack/kafka.py): Java and Maven where missing,
# then the broker's jars from Maven Central, once, into .loopline/kafka (never committed).
kafka: $(STAMP)
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "Apache Kafka needs java and mvn on PATH" >&2; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless maven; }
	$(BIN)/python -c "from devstack.kafka import jars; print('Apache Kafka jars:', jars())"

demo: $(STAMP)
	$(BIN)/loopline demo

# Tests marked every_broker run on Tansu and on Apache Kafka, last_broker on Apache Kafka, the
# rest on Tansu (tests/conftest.py; the README's Tests section lists the split).
test: $(STAMP) postgres kafka chromium
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -ra --durations=15 -n 2 --dist loadfile --broker embedded,kafka   # 2 cores (3 workers measured slower)

bench: $(STAMP) kafka chromium
	$(BIN)/python -m bench

clean:
	rm -rf .loopline .pytest_cache
