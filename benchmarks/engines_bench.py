"""Mean reward per run and step through each engine adapter vs Store.sql, on local disk and on S3.

    python -m benchmarks.engines_bench [--runs 4] [--logs 10] [--per-log 500] [--engines plan,daft,ray,spark]

Builds one store of `runs x logs x per-log` trajectories through `write_log` (the commit
protocol), on local disk and on S3 (a moto server on 127.0.0.1, the test suite's), then answers
"mean reward per run and step" with Store.sql (the baseline, in the same run), with the scan plan
read by plain pyarrow (`plan`), and through the Daft, Ray and Spark adapters. Engine start-up
(ray.init, the Spark session) is timed apart from the query. Every answer is checked equal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LANCE_LOG", "error")

import pyarrow as pa  # noqa: E402

import artstore as art  # noqa: E402
from artstore.log.commit import write_log  # noqa: E402
from tests.servers.moto_s3 import MotoS3Server  # noqa: E402

SQL = "SELECT project, model, step, avg(reward) AS r, count(*) AS n FROM trajectories GROUP BY ALL"


def build(uri: str, options: dict[str, str] | None, runs: int, logs: int, per_log: int) -> None:
    store = art.open_store(uri, options)
    for r in range(runs):
        loc = store.run("bench", f"run{r}").location
        for step in range(logs):
            trajectories = [art.Trajectory(messages_and_choices=[{"role": "user", "content": f"r{r} s{step} {i}"}],
                                           reward=((r * 31 + step * 7 + i) % 100) / 100) for i in range(per_log)]
            groups = [art.TrajectoryGroup(trajectories[i:i + 50]) for i in range(0, per_log, 50)]
            write_log(loc, groups, split="train", step=step)
        store.run("bench", f"run{r}").compact()  # folds the journal: every row in the data tables


def canonical(rows: list[dict[str, Any]]) -> list[tuple]:
    return sorted((r["model"], r["step"], round(r["r"], 9), r["n"]) for r in rows)


def timed(fn: Callable[[], list[dict[str, Any]]], repeat: int) -> tuple[float, list[tuple]]:
    times, answer = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        answer = canonical(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), answer


def engines(names: list[str]) -> dict[str, tuple[float, Callable[[art.Store], list[dict[str, Any]]]]]:
    """name -> (start-up seconds, query)."""
    out: dict[str, tuple[float, Callable[[art.Store], list[dict[str, Any]]]]] = {}
    out["Store.sql"] = (0.0, lambda s: s.sql(SQL).to_pylist())
    if "plan" in names:
        def plain(s: art.Store) -> list[dict[str, Any]]:
            parts = s.snapshot().scan_parts("trajectories", columns=["step", "reward"])
            t = pa.concat_tables([p.read() for p in parts])
            g = t.group_by(["project", "model", "step"]).aggregate([("reward", "mean"), ("reward", "count")])
            return g.rename_columns(["project", "model", "step", "r", "n"]).to_pylist()
        out["plan + pyarrow"] = (0.0, plain)
    if "daft" in names:
        import daft

        from artstore.engines import daft as daft_adapter

        out["Daft"] = (0.0, lambda s: daft_adapter.read(s, "trajectories", columns=["step", "reward"]).groupby(
            "project", "model", "step").agg(daft.col("reward").mean().alias("r"),
                                           daft.col("reward").count().alias("n")).to_arrow().to_pylist())
    if "ray" in names:
        import ray

        from artstore.engines import ray as ray_adapter

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray.data.DataContext.get_current().enable_progress_bars = False
        from ray.data.aggregate import Count, Mean

        out["Ray"] = (time.perf_counter() - start, lambda s: [
            {**r, "r": r["mean(reward)"], "n": r["count()"]}
            for r in ray_adapter.read(s, "trajectories", columns=["step", "reward"]).groupby(
                ["project", "model", "step"]).aggregate(Mean("reward"), Count()).take_all()])
    if "spark" in names:
        from pyspark.sql import SparkSession
        from pyspark.sql import functions as F

        from artstore.engines import spark as spark_adapter

        os.environ["PYSPARK_PYTHON"] = sys.executable
        start = time.perf_counter()
        spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                 .config("spark.sql.shuffle.partitions", "2").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
        out["Spark"] = (time.perf_counter() - start, lambda s: [r.asDict() for r in spark_adapter.read(
            spark, s, "trajectories", columns=["step", "reward"]).groupBy("project", "model", "step").agg(
            F.avg("reward").alias("r"), F.count("*").alias("n")).collect()])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--logs", type=int, default=10)
    ap.add_argument("--per-log", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engines", default="plan,daft,ray,spark")
    args = ap.parse_args()
    total = args.runs * args.logs * args.per_log
    with tempfile.TemporaryDirectory() as tmp:
        server = MotoS3Server(Path(tmp))
        server.start()
        try:
            bucket = server.create_bucket()
            targets = {"local": (str(Path(tmp) / "store"), None), "S3 (moto)": (bucket.uri, bucket.storage_options)}
            for name, (uri, options) in targets.items():
                start = time.perf_counter()
                build(uri, options, args.runs, args.logs, args.per_log)
                print(f"built {total:,} trajectories on {name} in {time.perf_counter() - start:.1f} s")
            found = engines(args.engines.split(","))
            print(f"\n{total:,} trajectories, {args.runs} runs x {args.logs} steps; median of {args.repeat}, seconds")
            print("| engine | start-up | local | S3 (moto) | local / Store.sql | S3 / local |")
            print("| --- | ---: | ---: | ---: | ---: | ---: |")
            base, truth = {}, {}
            for engine, (startup, query) in found.items():
                row = {}
                for name, (uri, options) in targets.items():
                    store = art.open_store(uri, options)
                    row[name], answer = timed(lambda q=query, s=store: q(s), args.repeat)
                    truth.setdefault(name, answer)
                    assert answer == truth[name], f"{engine} on {name} disagrees with Store.sql"
                base.setdefault("local", row["local"])
                print(f"| {engine} | {startup:.2f} | {row['local']:.3f} | {row['S3 (moto)']:.3f} | "
                      f"{row['local'] / base['local']:.1f}x | {row['S3 (moto)'] / row['local']:.1f}x |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
