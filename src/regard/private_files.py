"""Owner-only files and folders for what Regard keeps on disk.

The catalog holds embeddings (biometric data) and the access keys' secrets (SigV4 needs them as
issued); index checkpoints hold embeddings too. Created with the process's umask they would be
readable by every local user (0644 in a 0755 folder), which would let any account on the host
copy the biometric data or sign requests as the admin. So the folders Regard creates are 0700,
the files it creates are 0600, and a catalog file found readable by others is tightened.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("regard.files")

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) owner-only; an existing folder is left as it is
    (it may be shared on purpose; the files in it are private anyway)."""
    if not path.is_dir():
        # One level at a time: ``mkdir(parents=True)`` gives only the last folder ``mode``, the
        # parents it creates get the umask's (0755).
        if not path.parent.is_dir():
            private_dir(path.parent)
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists (empty when new) with mode 0600; tighten it, with a warning,
    when it exists readable or writable by others."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
        return path
    except FileExistsError:
        pass
    tighten(path)
    return path


def tighten(path: Path) -> None:
    """Remove group and other permissions from an existing file of ours."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            log.warning("%s was readable by other users (mode %o); it is now %o", path, mode,
                        mode & 0o700)
    except FileNotFoundError:
        pass
    except PermissionError as exc:  # not ours: say so, do not fail
        log.warning("%s is readable by other users and cannot be tightened: %s", path, exc)


def open_private(path: Path) -> int:
    """A file descriptor for writing a new private file (truncating one that exists)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd
