"""Writing an output file so that no reader ever sees half of it and a failed run leaves nothing behind."""

import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_output(path: str, overwrite: bool = False, newline: str | None = None):
    """A UTF-8 text file written under a temporary name beside `path` and renamed to `path` only when the block
    succeeds (on failure the temporary file is removed). Unless `overwrite`, an existing `path` is an error, checked
    before the block and again before the rename, so a file that appeared meanwhile is kept."""
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; choose another output path or remove it")
    folder = os.path.dirname(os.path.abspath(path))
    temp = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", newline=newline, dir=folder, prefix=".partial-", delete=False
    )
    try:
        with temp:
            yield temp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp.name, 0o666 & ~umask)  # temporary files are private (0600); outputs get the usual mode
        if not overwrite and os.path.exists(path):
            raise FileExistsError(f"{path} appeared while it was being written; not overwritten")
        os.replace(temp.name, path)
    except BaseException:
        if os.path.exists(temp.name):
            os.remove(temp.name)
        raise
