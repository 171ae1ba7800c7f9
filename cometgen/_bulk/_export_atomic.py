"""Stand-in for ``_files.atomic_write`` until the files branch lands (then removed)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from .._files import fsync_dir, removed_on_error, temp_name_for


@contextmanager
def atomic_write(path: str, *, fsync: bool = True) -> Iterator[BinaryIO]:
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, temp_name_for(name))
    with removed_on_error(tmp):
        with open(tmp, "xb", buffering=1 << 20) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    if fsync:
        fsync_dir(directory or ".")
