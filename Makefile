# Two commands on a fresh machine: `make app` (the web app on the embedded model) and `make test`.
PY := .venv/bin/python

.PHONY: app test setup

setup: .venv/.installed

.venv/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

app: setup
	$(PY) app.py

test:
	bash .ci/run
