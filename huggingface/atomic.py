"""Writing outputs so that no reader ever sees half of one and a failed run leaves nothing that looks complete.

One file: `atomic_output` (or `write_atomic` for a string or bytes) writes under a temporary name beside the target,
syncs it to disk and renames it into place. One folder: the caller fills a staging folder beside the target, and
`publish_folder` renames it into place. Standard library only; the packages that write outputs (the data generators,
the trainer and its setup scripts, the checkpoint converter) link this one file.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_output(path, overwrite: bool = False, newline: str | None = None, binary: bool = False):
    """A file (UTF-8 text, or bytes with `binary`) written under a temporary name beside `path`, synced to disk and
    renamed to `path` only when the block succeeds (on failure the temporary file is removed). Unless `overwrite`, an
    existing `path` is an error, checked before the block and again before the rename, so a file that appeared
    meanwhile is kept."""
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; choose another output path or remove it")
    folder = os.path.dirname(os.path.abspath(path))
    text = {} if binary else dict(encoding="utf-8", newline=newline)
    temp = tempfile.NamedTemporaryFile("wb" if binary else "w", dir=folder, prefix=".partial-", delete=False, **text)
    try:
        with temp:
            yield temp
            temp.flush()
            os.fsync(temp.fileno())  # the rename must never publish a name whose data is still only in memory
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


def write_atomic(path, data: str | bytes, overwrite: bool = True) -> None:
    """Write `data` (text as UTF-8, or bytes) to `path` through `atomic_output`; by default replacing what is there."""
    with atomic_output(path, overwrite=overwrite, binary=isinstance(data, bytes)) as f:
        f.write(data)


def publish_folder(staging, target, overwrite: bool = False) -> None:
    """Rename the complete folder `staging` to `target` (both in one parent folder). An empty `target` folder is
    replaced; a non-empty one or a file is an error unless `overwrite`, and then it is renamed aside first and removed
    only once `staging` is in its place, so `target` is always either the old output or the new one."""
    staging, target = os.fspath(staging), os.fspath(target)
    occupied = os.path.isfile(target) or (os.path.isdir(target) and bool(os.listdir(target)))
    if not occupied:
        os.replace(staging, target)
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists and is not an empty folder; not overwritten")
    parent, name = os.path.split(os.path.abspath(target))
    aside = tempfile.mkdtemp(dir=parent, prefix=f".old-{name}-")
    os.replace(target, aside if os.path.isdir(target) else os.path.join(aside, name))
    os.replace(staging, target)
    shutil.rmtree(aside)
