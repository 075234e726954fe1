"""Where the real ART run folders (written by openpipe-art 0.5.9 and 0.5.23) are found:
$ARTSTORE_ART_FIXTURES, else `shared/fixtures/art` in the checkout, beside it (a worktree's
parent), or the machine's /work/shared. Tests that need them skip when none exists."""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
_CANDIDATES = [os.environ.get("ARTSTORE_ART_FIXTURES"), _REPO / "shared" / "fixtures" / "art",
               _REPO.parent / "shared" / "fixtures" / "art", "/work/shared/fixtures/art"]
ART_FIXTURES = next((Path(c) for c in _CANDIDATES if c and Path(c).is_dir()), _REPO / "shared" / "fixtures" / "art")
