"""MkDocs hook (``hooks:`` in mkdocs.yml): adds the reference pages, generated from the code by
``docs/reference_gen.py``, to each build. They are never written into ``docs/``, so they cannot
drift from the code; ``mkdocs build --strict`` fails if the code cannot generate them."""

from __future__ import annotations

import logging
import time

import reference_gen  # beside this file: MkDocs puts docs/ on sys.path while loading hooks
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.regard")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    start = time.perf_counter()
    for path, content in reference_gen.generate().items():
        existing = files.get_file_from_path(path)
        if existing is not None:  # a stale hand-written copy: the generated page wins
            log.warning("docs/%s is generated from the code; the file in docs/ is ignored", path)
            files.remove(existing)
        files.append(File.generated(config, path, content=content))
    log.info("generated the reference pages in %.1f s", time.perf_counter() - start)
    return files
