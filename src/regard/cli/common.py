"""What every ``regard`` command shares: the Typer app, the consoles, options, error exits."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from regard.errors import RegardError

app = typer.Typer(
    help="Regard: self-hosted, accountable face detection and recognition.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()

DetectorOpt = typer.Option(None, "--detector", help="yuface | mmod | hog (default: best installed)")
MinFaceOpt = typer.Option(0, "--min-face-size", help="Ignore faces smaller than this (pixels)")


def _engine_kwargs(detector: Optional[str], min_face_size: int) -> dict[str, Any]:
    return {"detector": detector, "min_face_size": min_face_size}


def _fail(exc: RegardError) -> None:
    err.print(f"[red]{exc.code}[/red]: {exc.message}")
    raise typer.Exit(code=1)


def _progress(total: int) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=total < 2 or not err.is_terminal,
    )


def _print_error(path: Path, exc: RegardError, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"Image": str(path), **exc.to_dict()}) + "\n")
    else:
        err.print(f"{path}: [red]{exc.code}[/red]: {exc.message}")


