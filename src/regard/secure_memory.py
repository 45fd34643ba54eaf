"""Deleted embeddings in the server's memory.

Released memory keeps its contents until something reuses it, so a deleted face's embedding
can outlive its deletion in two kinds of memory:

- memory still held: the vector index (overwritten with ``SCRUBBED`` at once), arrays Regard
  releases (numpy keeps freed buffers under 1 KiB, one 512-byte embedding among them, in a cache
  for reuse: arrays that held stored embeddings are zeroed with ``wipe`` first), and SQLite's
  connections, whose page caches and cached statements keep the rows they read or wrote (the
  catalog closes its pooled connections after every deletion, ``Catalog.reclaim_space``);
- memory freed to the C allocator (SQLite's row buffers, Python's ``bytes``, FAISS's storage
  when it grows): glibc leaves it as it was, unless the process was started with
  ``GLIBC_TUNABLES=`` ``CLEARING_ALLOCATOR``, which makes it overwrite every freed block.
"""

from __future__ import annotations

import numpy as np

# glibc fills freed blocks with 0x55 (perturb) and keeps no small freed block aside unfilled in
# its per-thread caches (tcache); must be in the environment when the process starts.
CLEARING_ALLOCATOR = "glibc.malloc.perturb=85:glibc.malloc.tcache_count=0"


def wipe(*arrays: np.ndarray | None) -> None:
    """Zero each array in place (a view zeroes what it views). Read-only arrays, views of a
    database driver's immutable blob, are left alone: freeing the blob frees its memory."""
    for array in arrays:
        if array is not None and array.flags.writeable:
            array.fill(0)
