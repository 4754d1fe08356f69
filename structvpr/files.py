"""Files written whole or not at all.

A resumed job trusts what it finds: a job summary marks a job finished, a fold's ranks file marks its
ranking done. Written in place, a driver killed during the write leaves half a file that the next run
reads as the whole; written to a temporary file beside it and renamed over it, the next run finds the
file as it was before, or the new one whole.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    # pid and thread: jobs of one driver run in threads and may write files of the same name at once
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
