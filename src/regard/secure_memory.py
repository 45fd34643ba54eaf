"""Overwriting embeddings in this process's memory before their buffers are released.

Released memory keeps its contents: glibc's ``free``, numpy's cache of small buffers and CPython's
allocators reuse it without clearing it, so a deleted face's embedding would stay readable in the
heap until something happened to reuse those bytes. Whatever held a stored embedding (an array,
the blob a database driver returned, the blob written to it) is therefore overwritten with
zeros once the code that read or wrote it is done with it.
"""

from __future__ import annotations

import ctypes
from typing import Union

import numpy as np

Buffer = Union[np.ndarray, bytes, bytearray, memoryview, None]

_bytes_data = ctypes.pythonapi.PyBytes_AsString
_bytes_data.restype = ctypes.c_void_p
_bytes_data.argtypes = [ctypes.py_object]


def wipe(*buffers: Buffer) -> None:
    """Zero each buffer in place. A read-only array or memoryview is wiped through the object
    that owns its memory. ``bytes`` are immutable to Python but not to C: a blob is overwritten
    through CPython's C API, which is safe only for a blob whose last user is the caller and that
    was never hashed (nothing reads it afterwards, no dict holds it): the blobs a database driver
    returns for embedding columns, or ones the caller built."""
    for buf in buffers:
        if buf is None:
            continue
        if isinstance(buf, np.ndarray):
            if buf.flags.writeable:
                buf.fill(0)
            else:
                wipe(buf.base)
        elif isinstance(buf, bytes):
            if len(buf) > 1:  # the empty and one-byte bytes objects are shared singletons
                ctypes.memset(_bytes_data(buf), 0, len(buf))
        elif isinstance(buf, bytearray):
            buf[:] = bytes(len(buf))
        elif isinstance(buf, memoryview):
            if buf.readonly:
                wipe(buf.obj)
            else:
                buf.cast("B")[:] = bytes(buf.nbytes)
