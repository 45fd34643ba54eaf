"""(being written)"""

from __future__ import annotations

from typing import Any


def routes(console: Any, router: Any) -> None:
    pass
