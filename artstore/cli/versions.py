"""Commands about versions: list a run's versions, and tag one."""

from __future__ import annotations

from typing import Annotated

import typer

from artstore.cli.common import (
    RunArgument,
    StorageOption,
    StoreOption,
    console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.cli.output import FormatOption, OutputOption, render


def register(app: typer.Typer) -> None:
    app.command("versions")(versions)
    app.command("tag")(tag)


@handle_errors
def versions(run: RunArgument, store: StoreOption = ".art", storage_option: StorageOption = None,
             fmt: FormatOption = None, output: OutputOption = None) -> None:
    """List a run's versions (one per commit of its logs table), oldest first: what each commit
    added (the log call's step, split and id, or `compaction`), and its tags.

    Any of them can be read back: `artstore sql --run PROJECT/MODEL --as-of N "..."`.

    Example:

        artstore versions email-search/agent-001
    """
    import pyarrow as pa

    from artstore.storage import transactions, version_map

    r = get_run(get_store(store, storage_option), run)
    listed = r.versions()
    messages = transactions.commit_messages(r.table_location("logs"), [v["version"] for v in listed])
    committed = r.logs().select(["log_id", "step", "split", "commit_seq"]).to_pylist()
    logs = {row["log_id"]: row for row in committed}
    # a version only the map holds (cleaned up): the logs whose sequence is its largest fragment
    # id are the ones it appended (a compaction's new fragment holds no log of that sequence)
    by_seq: dict[int, list[str]] = {}
    for row in committed:
        by_seq.setdefault(row["commit_seq"], []).append(row["log_id"])
    for entry in version_map.entries(r.table_location("logs")).to_pylist():
        if entry["version"] not in messages and (ids := by_seq.get(entry["seq_hi"])):
            messages[entry["version"]] = f"log {ids[0]}" if len(ids) == 1 else f"group commit of {len(ids)} logs"
    step, split, log = [], [], []
    for v in listed:
        message = messages.get(v["version"], "")
        found = logs.get(message.split()[1]) if message.startswith("log ") and len(message.split()) > 1 else None
        step.append(found["step"] if found else None)
        split.append(found["split"] if found else None)
        log.append(found["log_id"] if found else _what(message))
    table = pa.table({
        "version": pa.array([v["version"] for v in listed], pa.int64()),
        "timestamp": pa.array([v["timestamp"] for v in listed], pa.timestamp("us", tz="UTC")),
        "step": pa.array(step, pa.int64()),
        "split": pa.array(split, pa.string()),
        "log": pa.array(log, pa.string()),
        "tags": pa.array([v["tags"] for v in listed], pa.list_(pa.string())),
    })
    render(table, fmt, output, title=f"versions of {run}")


def _what(message: str) -> str | None:
    """What a commit that added no visible log was: compaction, a retried log, or unknown."""
    if not message:
        return None
    if message.startswith("log "):
        return f"{message.split()[1]} (a retry: not the first commit of this log)" if len(message.split()) > 1 else None
    return {"Rewrite": "compaction", "compact": "compaction", "Delete": "cleanup"}.get(message, message.lower())


@handle_errors
def tag(
    run: RunArgument,
    name: Annotated[str, typer.Argument(help="The tag, e.g. release-1 (ASCII letters, digits, '_', '-', '.').")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="The version to tag (default: latest).")] = None,
    pin: Annotated[bool, typer.Option("--pin", help="Also keep the physical version through cleanup (a Lance tag), "
                                      "for readers of the raw Lance dataset.")] = False,
    delete: Annotated[bool, typer.Option("--delete", "-d", help="Remove the tag instead (a pinned tag's "
                                         "version is then cleaned up after the window).")] = False,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
) -> None:
    """Name a point of a run: a version of its logs, i.e. the logs committed by then. Reading
    `--as-of NAME` answers that point even after cleanup removed the version; nothing is kept
    for it unless --pin. Moving a tag re-points it.

    Examples:

        artstore tag email-search/agent-001 paper-figures

        artstore tag email-search/agent-001 before-fix --version 41

        artstore tag email-search/agent-001 release-1 --pin

        artstore tag email-search/agent-001 release-1 --delete
    """
    if delete:
        if version is not None or pin:
            raise typer.BadParameter("--delete takes neither --version nor --pin")
        gone = get_run(get_store(store, storage_option), run).delete_tag(name)
        console.print(f"deleted tag {name!r} of {run} (it named version {int(gone)})", markup=False, highlight=False)
        return
    tagged = get_run(get_store(store, storage_option), run).tag(name, version, pin=pin)
    how = ("pinned: the version is kept through cleanup" if tagged.pinned
           else "logical: read as of it after cleanup too; the version itself is not kept")
    console.print(f"tagged version {int(tagged)} of {run} as {name!r} ({how})", markup=False, highlight=False)
