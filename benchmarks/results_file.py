"""benchmarks/RESULTS.md: each benchmark owns a section between its own markers."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, text: str) -> None:
    """Replace the section of `path` between `<!-- {name}:start -->` and `<!-- {name}:end -->`
    with `text`, keeping the rest; append it when the markers are not there yet."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text}{end}\n"
    old = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.write_text(new)
