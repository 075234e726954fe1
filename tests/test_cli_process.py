"""The command line as a real process: nothing but what was asked for on a new run (no Lance WARN
lines with LANCE_LOG unset), `| head` and a full disk, Ctrl-C during a long query."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.art_fixtures import ART_FIXTURES

ROOT = Path(__file__).resolve().parent.parent
# No LANCE_LOG: as in a user's own shell, where the Makefile's LANCE_LOG=error does not reach.
ENV = {**{k: v for k, v in os.environ.items() if k != "LANCE_LOG"}, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "artstore"]
LONG_QUERY = "SELECT sum(a.range * b.range) AS s FROM range(200000) a, range(200000) b"  # minutes of work

NEW_RUN = textwrap.dedent("""
    import sys
    import artstore as art
    model = art.TrainableModel(name="m", project="p", base_model="tiny", base_path=sys.argv[1],
                               report_metrics=[], config={"group_size": 2})
    group = art.TrajectoryGroup([art.Trajectory(messages_and_choices=[{"role": "user", "content": "hi"}],
                                                reward=r) for r in (0.0, 1.0)])
    model.log_sync([group], split="val", step=0)
    model.log_sync([group], split="train", step=0)
    model._store_config("train", art.TrainConfig(learning_rate=1e-4), 0)
    checkpoints = model.run.checkpoints_table()
    checkpoints.begin(1)
    checkpoints.mark_ready(1, size_bytes=10)
    print("ok")
""")


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=ENV, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("process") / "store")
    made = subprocess.run([sys.executable, "-c", NEW_RUN, path], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert made.returncode == 0, made.stderr
    assert made.stdout == "ok\n" and made.stderr == ""  # creating the run's tables printed nothing
    return path


def test_no_lance_warn_lines_on_a_new_run_and_its_commands(store, tmp_path):
    for args in (["runs"], ["show", "p/m"], ["history", "p/m"], ["sql", "SELECT count(*) FROM configs"],
                 ["compact", "--all"]):
        done = cli(*args, "--store", store)
        assert done.returncode == 0, done.stderr
        assert "WARN" not in done.stderr + done.stdout and done.stderr == "", args


@pytest.mark.skipif(not ART_FIXTURES.is_dir(), reason="no ART fixtures")
def test_no_lance_warn_lines_when_an_import_creates_tables(tmp_path):
    source = ART_FIXTURES / "art-0.5.23"
    done = cli("import-art", str(source), "--store", str(tmp_path / "imported"))
    assert done.returncode == 0, done.stderr
    assert "WARN" not in done.stderr + done.stdout


def test_a_reader_that_stops_early_ends_nothing_in_an_error(store):
    # `artstore sql ... | head -1`: the rest of the output meets a closed pipe
    with subprocess.Popen([*CLI, "sql", "SELECT range AS i FROM range(300000)", "--store", store],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV) as process:
        assert process.stdout.readline() == b"i\n"
        process.stdout.close()
        stderr = process.stderr.read()
        code = process.wait(timeout=300)
    assert stderr == b"" and code == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_standard_output_on_a_full_disk_is_one_line_exit_4(store):
    for args in (["runs"], ["sql", "SELECT 1 AS x", "-f", "json"], ["show", "p/m"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([*CLI, *args, "--store", store], stdout=full, stderr=subprocess.PIPE, text=True,
                                  env=ENV, timeout=300)
        assert done.returncode == 4, (args, done.stderr)
        assert done.stderr.startswith("error: ") and "No space left on device" in done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def _loaded(pid: int, library: str) -> bool:
    """Whether the process `pid` has mapped a file whose path names `library`."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_ctrl_c_stops_a_long_query_at_once(store):
    process = subprocess.Popen([*CLI, "sql", LONG_QUERY, "--store", store], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=ENV, text=True)
    try:
        # Its SIGINT handler is set before the command imports DuckDB (was: an 8 s sleep, which a
        # loaded machine can spend importing, where SIGINT is a KeyboardInterrupt traceback)
        deadline = time.monotonic() + (120 if Path("/proc/self/maps").exists() else 6)  # else: no /proc
        while not _loaded(process.pid, "duckdb") and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # DuckDB busy in native code
        assert process.poll() is None, process.communicate()
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        process.kill()
    assert process.returncode == 130 and stderr.strip() == "interrupted" and took < 5, (process.returncode, stderr, took)


def test_import_artstore_and_the_command_line_import_no_heavy_module():
    # what `artstore --help` pays for: no pyarrow, Lance, DuckDB or openai types (imported by the
    # commands that use them, when they run)
    probe = ("import sys, artstore, artstore.cli; "
             "print(sorted(m for m in ('openai', 'lance', 'duckdb', 'pyarrow', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)


@pytest.mark.parametrize("first", ["TrainableModel", "Model", "Run"])
def test_every_public_name_resolves_whichever_is_touched_first(first):
    probe = (f"import artstore as art; art.{first}; "
             "missing = [n for n in art.__all__ if getattr(art, n, None) is None]; print(missing)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)


def test_runs_reads_its_options_without_pydantic_duckdb_or_the_upkeep(store):
    # `artstore runs` must start in well under a second: typer's pydantic coercion (~0.1 s of
    # imports) is replaced for plain options (`artstore.cli.plain_params`), the upkeep's modules
    # and DuckDB are not needed to list runs
    probe = ("import sys; sys.argv = ['artstore', 'runs', '--store', sys.argv[1], '-f', 'CSV', '-o', 'k=v']\n"
             "from artstore.cli import main\n"
             "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "heavy = ('pydantic', 'duckdb', 'artstore.log.upkeep', 'artstore.log.fold', 'artstore.read.sql')\n"
             "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, store], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0 and done.stderr.strip() == "[]", (done.stdout, done.stderr)
    assert done.stdout.splitlines()[1].startswith('"p","m",0,'), done.stdout
