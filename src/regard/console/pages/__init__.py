"""The console's screens, one module each; every module has ``routes(console, router)``."""

from __future__ import annotations

from regard.console.pages import (
    assets,
    audit,
    collections,
    faces,
    keys,
    overview,
    search,
    sign_in,
    streams,
    video,
)

PAGES = (assets, sign_in, overview, collections, faces, search, video, streams, audit, keys)
