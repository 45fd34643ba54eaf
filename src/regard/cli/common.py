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

DetectorOpt = typer.Option(None, "--detector", help="yunet | yuface | mmod | hog (default: yunet)")
MinFaceOpt = typer.Option(0, "--min-face-size", help="Ignore faces smaller than this (pixels)")


def _engine_kwargs(detector: Optional[str], min_face_size: int) -> dict[str, Any]:
    return {"detector": detector, "min_face_size": min_face_size}


def _fail(exc: RegardError) -> None:
    _print_failure(exc)
    raise typer.Exit(code=1)


def _print_failure(exc: RegardError) -> None:
    err.print(f"[red]{exc.code}[/red]: {exc.message}")


def main() -> None:
    """The ``regard`` script: the Typer app, with a Regard error that escapes a command (the
    database unreachable when the service starts, say) printed as one line, exit status 1,
    instead of a traceback."""
    try:
        app()
    except RegardError as exc:
        _print_failure(exc)
        sys.exit(1)


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




# -- accountability: who runs a command, and why (recorded in the audit ledger) -----------------
PurposeOpt = typer.Option(None, "--purpose", help="Why (recorded in the audit ledger)")
CaseOpt = typer.Option(None, "--case", help="Case or ticket reference (audit ledger)")
ConsentOpt = typer.Option(None, "--consent",
                          help="Consent reference for the indexed faces (audit ledger, catalog)")


def local_context(purpose: Optional[str] = None, case: Optional[str] = None,
                  consent: Optional[str] = None) -> Any:
    """The CLI's call context: the operating-system user, unrestricted (they can open the
    database anyway) but audited like everyone else."""
    import getpass

    from regard.context import CallContext

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return CallContext.operator(f"local:{user}", client="cli", purpose=purpose, case=case,
                                consent=consent)
