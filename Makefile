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
# Where they are missing and there is no apt-get (a laptop), it says so and goes on: the Kafka
# runs then skip with that reason (a failure in CI, which always has apt-get). Apache Kafka 4
# needs Java 17 or newer: an older java stops here with the reason (`make test BROKERS=embedded`
# leaves the Kafka runs out).
kafka: $(STAMP)
	@if ! { command -v java >/dev/null && command -v mvn >/dev/null; }; then \
	  if command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless maven || exit 1; \
	  else \
	    missing="$$(command -v java >/dev/null || printf 'java ')$$(command -v mvn >/dev/null || printf 'mvn ')"; \
	    echo "make kafka: Apache Kafka needs java (17 or newer) and mvn on PATH, $${missing% } missing," \
	      "and there is no apt-get to install them: the Apache Kafka runs will skip with that reason" >&2; \
	    exit 0; \
	  fi; \
	fi; \
	version=$$(java -version 2>&1 | awk -F'"' '/version/ {print $$2; exit}'); \
	major=$$(echo "$$version" | awk -F. '{print ($$1 == 1 ? $$2 : $$1)}'); \
	case "$$major" in ''|*[!0-9]*) major=0;; esac; \
	if [ "$$major" -lt 17 ]; then \
	  echo "make kafka: Apache Kafka 4 needs Java 17 or newer; $$(command -v java) is version" \
	    "'$${version:-unknown}'. Install Java 17+ (or put one first on PATH), or run" \
	    "'make test BROKERS=embedded' to leave the Apache Kafka runs out" >&2; \
	  exit 1; \
	fi; \
	echo "make kafka: java $$version, mvn $$(command -v mvn)"; \
	$(BIN)/python -c "from devstack.kafka import jars; print('Apache Kafka jars:', jars())"

demo: $(STAMP)
	$(BIN)/loopline demo

# Tests marked every_broker run on Tansu and on Apache Kafka, last_broker on Apache Kafka, the
# rest on Tansu (tests/conftest.py; the README's Tests section lists the split).
BROKERS ?= embedded,kafka
test: $(STAMP) postgres kafka chromium
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -ra --durations=15 -n 2 --dist loadfile --shuffle --broker $(BROKERS)   # 2 cores (3 workers measured slower); --shuffle: tests/conftest.py

bench: $(STAMP) kafka chromium
	$(BIN)/python -m bench

clean:
	rm -rf .loopline .pytest_cache
