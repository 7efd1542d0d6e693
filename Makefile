# Two commands on a fresh machine: `make app` (the web app on the embedded model) and `make test`.
PY := .venv/bin/python

.PHONY: app test setup

setup: .venv/.installed

.venv/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@# WordNet 3.0 for the stress test's other names (optional: without it the names come from the class lists)
	@test -f /usr/share/wordnet/data.noun || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null) \
		|| echo "note: WordNet (Debian wordnet-base) not installed; the stress test uses fewer names"; }
	touch $@

app: setup
	$(PY) app.py

test:
	bash .ci/run
