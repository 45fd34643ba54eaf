"""`regard eval`: measure accuracy and per-group error rates on a dataset, write a report.

The command only parses options, shows progress and prints a short summary; the measuring is
``regard.evaluation`` (see its docstring for the dataset layouts and the measures), so the same
report can be produced from Python or a CI job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from regard.cli.common import DetectorOpt, _fail, _progress, app, err, out
from regard.errors import RegardError

_DESCRIPTIONS = {"embed": "embedding faces", "detect": "detecting faces"}


@app.command("eval")
def eval_command(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Dev-data root (verification/lfw, detection/wider_face_val, "
        "demographics/utkface, identification/bbt_faceapi) or one layout folder"),
    verification: Optional[Path] = typer.Option(
        None, "--verification", help="Folder with pairs.csv or LFW pairs.txt"),
    detection: Optional[Path] = typer.Option(
        None, "--detection", help="Folder with faces.csv or wider_face_val_bbx_gt.txt"),
    labels: Optional[Path] = typer.Option(
        None, "--labels", help="Folder with labels.csv (per-group impostor rates)"),
    gallery: Optional[Path] = typer.Option(
        None, "--gallery", help="Folder with gallery/<identity>/* (identification)"),
    min_age: float = typer.Option(
        18.0, "--min-age", help="Labelled images below this age are reported apart (0: keep all)"),
    out_dir: Path = typer.Option(Path("eval-report"), "--out", help="Report folder"),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Cache per-image results here (reruns skip the models)"),
    workers: int = typer.Option(0, "--workers", help="Processes (default: all cores)"),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="At most N images per part (quick runs)"),
    detector: Optional[str] = DetectorOpt,
    card: Optional[Path] = typer.Option(
        None, "--model-card", help="Also write the model card (MODEL_CARD.md) from this run"),
    remedies: Optional[Path] = typer.Option(
        None, "--remedies", help="bench/group_remedies.py's JSON, for the model card"),
) -> None:
    """Measure accuracy and per-group error rates; write report.json, report.md, report.html."""
    from regard.evaluation import EvalConfig, run, summary_lines, write_reports

    for name, path in (("--data", data), ("--verification", verification),
                       ("--detection", detection), ("--labels", labels),
                       ("--gallery", gallery)):
        if path is not None and not path.is_dir():
            err.print(f"[red]{name}[/red]: {path} is not a folder")
            raise typer.Exit(code=2)
    config = EvalConfig.from_paths(
        data, verification=verification, detection=detection, labels=labels, gallery=gallery,
        min_age=min_age if min_age > 0 else None, limit=limit, workers=workers or None,
        cache=cache, detector=detector)
    parts = config.parts()
    if not parts:
        err.print("[red]No dataset found[/red]: give --data DIR or a part folder "
                  "(--verification, --detection, --labels, --gallery)")
        raise typer.Exit(code=2)
    err.print("measuring: " + ", ".join(f"{k} ({v})" for k, v in parts.items()), markup=False,
              highlight=False, soft_wrap=True)

    with _progress(2) as progress:
        tasks: dict[str, Any] = {}

        def start(kind: str, total: int) -> None:
            tasks[kind] = progress.add_task(_DESCRIPTIONS.get(kind, kind), total=total)

        def advance(kind: str) -> None:
            if kind in tasks:
                progress.advance(tasks[kind])

        try:
            report = run(config, start, advance)
        except RegardError as exc:
            _fail(exc)
            return
        except ValueError as exc:  # a layout that does not parse
            err.print(f"[red]dataset error[/red]: {exc}")
            raise typer.Exit(code=2) from exc
    paths = write_reports(report, out_dir)
    for line in summary_lines(report):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    out.print(f"wrote {paths['json']}, {paths['md']}, {paths['html']} "
              f"in {report['timing']['seconds_total']:.0f} s",
              markup=False, highlight=False, soft_wrap=True)
    if card is not None:
        from regard.evaluation.model_card import write_model_card

        write_model_card(report, card, remedies)
        out.print(f"wrote {card}", markup=False, highlight=False)


@app.command("model-card")
def model_card_command(
    report_json: Path = typer.Argument(..., help="report.json of a `regard eval` run"),
    output: Path = typer.Option(Path("MODEL_CARD.md"), "--out"),
    remedies: Optional[Path] = typer.Option(
        None, "--remedies", help="bench/group_remedies.py's JSON (the remedies section)"),
) -> None:
    """(Re)write the model card from a saved evaluation report, without re-measuring."""
    import json

    from regard.evaluation.model_card import write_model_card

    try:
        report = json.loads(report_json.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read {report_json}[/red]: {exc}")
        raise typer.Exit(code=2) from exc
    write_model_card(report, output, remedies)
    out.print(f"wrote {output}", markup=False, highlight=False)
