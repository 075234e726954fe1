"""Reading a store from distributed engines: a scan plan (`plan`) and thin adapters for Ray,
Daft and Spark (`ray`, `daft`, `spark`; each imports its engine on first use, from an extra).

    snap = store.snapshot(as_of="release")
    for part in snap.scan_parts("trajectories", columns=["step", "reward"]):
        table = part.read()   # on any worker: exactly the committed rows of one fragment range
"""
