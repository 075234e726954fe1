"""A logging process the engine tests stop at the commit of its logs row (a sync commit: the
crash and the race it makes are inside `write_log`'s own commit).

    python tests/engines/writer_proc.py '{"store": ..., "run": "p/a", "log_id": "x", "reward": 1.0,
                                          "mode": "crash" | "race", "me": path, "other": path}'

crash: writes the call's files, prints `ready` just before committing its logs row, and waits
there to be SIGKILLed (its files stay uncommitted). race: before committing its logs row it
creates the file `me` and waits for `other`, so two such processes both looked the log id up
before either committed: both append a logs row and the first commit wins.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import artstore as art  # noqa: E402
from artstore.log import commit as writer  # noqa: E402
from artstore.storage import writes  # noqa: E402


def main(spec: dict) -> None:
    project, model = spec["run"].split("/")
    original = writes.commit_files

    def stopped(loc, *args, **kwargs):
        if not loc.uri.endswith("logs.lance"):  # a run before the journal: its data tables first
            return original(loc, *args, **kwargs)
        if spec["mode"] == "crash":
            os.write(1, b"ready\n")
            time.sleep(600)
        open(spec["me"], "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(spec["other"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return original(loc, *args, **kwargs)

    writes.commit_files = stopped
    trajectories = [art.Trajectory(messages_and_choices=[{"role": "user", "content": f"{spec['log_id']} {i}"}],
                                   reward=spec["reward"] + i) for i in range(3)]
    loc = art.open_store(spec["store"]).run(project, model).location
    writer.write_log(loc, [art.TrajectoryGroup(trajectories)], split="train", step=99, log_id=spec["log_id"],
                     commit_mode="sync")
    os.write(1, b"done\n")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
