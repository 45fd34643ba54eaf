"""Turn a report dict into ``report.json``, ``report.md`` and a self-contained ``report.html``.

Why a small document model: the Markdown and the HTML must say the same things, so the report is
first laid out once as blocks (headings, paragraphs, tables, figures), then each block is written
in both formats. The HTML is one file with inline CSS and inline SVG (``svg``), no JavaScript and
nothing fetched. Every string from the data (paths, group names, errors) is escaped: ``html.escape``
for HTML, and the same plus ``|`` for Markdown tables (which renderers pass through as HTML).
Only figures already in the report are shown; nothing is computed here.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Sequence, Union

from regard.evaluation import svg
from regard.evaluation.stats import fmt_rate

# -- formatting ----------------------------------------------------------------------------------


def rate_cell(r: dict[str, Any] | None, digits: int = 4) -> str:
    """``0.3044 (274/900; 0.2750-0.3355)``, ``0/900 (<= 0.0043)``, or ``-`` without trials."""
    if not r or not r.get("n"):
        return "-"
    if r["k"] == 0:
        return f"0/{r['n']} (<= {fmt_rate(r['ci95_high'], digits)})"
    return (f"{fmt_rate(r['rate'], digits)} ({r['k']}/{r['n']}; "
            f"{fmt_rate(r['ci95_low'], digits)}-{fmt_rate(r['ci95_high'], digits)})")


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def clean_json(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, Paths -> str (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- document model -------------------------------------------------------------------------------
@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    svg: str
    caption: str


Block = Union[Heading, Para, Bullets, Table, Figure]


def _thr_label(s: float | str) -> str:
    return f"{float(s):g}"


def _header_blocks(r: dict[str, Any]) -> list[Block]:
    m = r["models"]
    cal = m["calibration"]
    blocks: list[Block] = [
        Heading(1, "Regard evaluation report"),
        Para(f"Date: {r['date']}. Regard {m['regard_version']}, detector {m['detector']}, "
             f"embedder {m['embedder']}, face model version {m['face_model_version']}, at most "
             f"{m['max_faces_per_image']} faces per image."),
        Para(f"Calibration table: {cal['path']} (measured on {cal.get('measured_on')}; "
             f"data: {cal.get('data')}). A pair matches at similarity S when its calibrated "
             "similarity is >= S; each S corresponds to a distance threshold:"),
        Table(["similarity", "distance <=", "target FMR (worst group)", "set by"],
              [[_thr_label(a["similarity"]), f"{a['distance']:.4f}",
                f"{a['target_fmr']:g}" if a.get("target_fmr") else "-",
                str(a.get("set_by") or "-")]
               for a in sorted(cal["anchors"], key=lambda a: -a["similarity"])]),
        Heading(2, "Data"),
        Table(["part", "path", "format", "size"],
              [[part, d["path"], d["format"],
                ", ".join(f"{k} {v}" for k, v in d.items()
                          if k in ("pairs", "images", "faces", "identities"))]
               for part, d in r["datasets"].items()]),
    ]
    opts = r["options"]
    blocks.append(Para(
        f"Options: limit {opts['limit'] if opts['limit'] is not None else 'none'} images per "
        f"part, min age {opts['min_age']}, cache {opts['cache'] or 'none'}. Runtime "
        f"{r['timing']['seconds_total']} s ({r['timing']['images_computed']} images computed, "
        f"{r['timing']['images_from_cache']} from the cache)."))
    if r["notes"]:
        blocks += [Heading(3, "Notes"), Bullets(list(r["notes"]))]
    return blocks


def _verification_blocks(v: dict[str, Any]) -> list[Block]:
    p = v["pairs"]
    blocks: list[Block] = [
        Heading(2, "Verification (1:1)"),
        Para(f"{v['dataset']['path']} ({v['dataset']['format']}): {p['total']} pairs "
             f"({p['genuine']} genuine, {p['impostor']} impostor) over {v['images']} images. "
             f"Images without a face: {v['images_without_face']}; failed to load: "
             f"{v['images_failed']}; with several faces (central one used): "
             f"{v['images_with_several_faces']}. Pairs with a missing face (scored as "
             f"non-match): {p['with_missing_face']} ({p['genuine_with_missing_face']} genuine, "
             f"{p['impostor_with_missing_face']} impostor)."),
    ]
    allimp = v.get("all_cross_identity_impostors")
    headers = ["similarity >=", "distance <=", "TAR", "FNMR", "FMR (listed pairs)"]
    rows = [[_thr_label(t["similarity"]), f"{t['distance']:.4f}", rate_cell(t["tar"]),
             rate_cell(t["fnmr"]), rate_cell(t["fmr"])] for t in v["thresholds"]]
    if allimp:
        headers.append("FMR (all cross-identity pairs)")
        for row, t in zip(rows, v["thresholds"]):
            row.append(rate_cell(allimp["fmr"].get(_thr_label(t["similarity"]))))
        blocks.append(Para(f"FMR is given on the listed impostor pairs and on {allimp['rule']} "
                           f"({allimp['impostor_pairs']} pairs), which resolves far lower rates."))
    blocks.append(Table(headers, rows))
    acc = v["accuracy"]
    if "mean" in acc:
        blocks.append(Para(
            f"Accuracy ({acc['method']}): mean {pct(acc['mean'])} +- {pct(acc['std'])} "
            f"(pooled {rate_cell(acc['pooled'])}). This is the literature's LFW figure; it uses "
            "a per-fold best distance threshold, not a calibrated similarity threshold."))
        blocks.append(Table(["fold", "threshold distance", "= similarity", "accuracy"],
                            [[str(f["fold"]), f"{f['threshold_distance']:.4f}",
                              f"{f['threshold_similarity']:.1f}", rate_cell(f["accuracy"])]
                             for f in acc["folds"]]))
    for col, sec in v.get("by_group", {}).items():
        thresholds = [t["similarity"] for t in v["thresholds"]]
        for kind, title in (("genuine_tar", "TAR on genuine pairs"),
                            ("impostor_fmr", "FMR on impostor pairs")):
            if sec[kind]:
                blocks.append(Heading(3, f"{title} by {col}"))
                blocks.append(Table([col] + [f"S>={_thr_label(s)}" for s in thresholds],
                                    [[g] + [rate_cell(rates[_thr_label(s)]) for s in thresholds]
                                     for g, rates in sec[kind].items()]))
    blocks += _verification_figures(v)
    return blocks


def _verification_figures(v: dict[str, Any]) -> list[Block]:
    ng, ni = v["pairs"]["genuine"], v["pairs"]["impostor"]
    if not ng or not ni:
        return []
    allimp = v.get("all_cross_identity_impostors")
    sets = [("listed pairs", v["curves"], ni, svg.PALETTE[0])]
    if allimp and allimp["impostor_pairs"]:
        sets.append(("all cross-identity impostors", allimp["curves"], allimp["impostor_pairs"],
                     svg.PALETTE[1]))
    x_floor = min(1e-3, 0.5 / max(n for _, _, n, _ in sets))
    y_floor = min(1e-3, 0.5 / ng)
    # operating points from the largest impostor set (the best FMR resolution)
    best = allimp if allimp and allimp["impostor_pairs"] else None
    marks = [((best["fmr"][_thr_label(t["similarity"])]["rate"] if best else t["fmr"]["rate"]),
              t["tar"]["rate"], f"S{_thr_label(t['similarity'])}") for t in v["thresholds"]]
    figs: list[Block] = [Figure(svg.line_chart(
        "ROC: TAR against FMR",
        [svg.Series(name, [(p["fmr"], p["tar"]) for p in c["roc"]], color)
         for name, c, _, color in sets],
        svg.Scale("log10", x_floor, 1.0), svg.Scale("linear", 0.0, 1.0), "FMR (log scale)",
        "TAR", markers=marks,
        note=f"FMR of 0 drawn at {x_floor:.1e}; dots: calibrated similarity thresholds"),
        "ROC curve over distance thresholds (genuine pairs as listed).")]
    det_marks = [(x, 1 - y, label) for x, y, label in marks]
    figs.append(Figure(svg.line_chart(
        "DET: FNMR against FMR (probit axes)",
        [svg.Series(name, [(p["fmr"], p["fnmr"]) for p in c["roc"]], color)
         for name, c, _, color in sets],
        svg.Scale("probit", x_floor, 0.999), svg.Scale("probit", y_floor, 0.999),
        "FMR (probit)", "FNMR (probit)", markers=det_marks,
        note=f"rates of 0 drawn at the axis floor ({x_floor:.1e}, {y_floor:.1e})"), "DET curve."))
    series = [svg.Series(f"FMR ({name})", [(p["similarity"], p["fmr"])
                                           for p in c["vs_threshold"]], color)
              for name, c, _, color in sets]
    series.append(svg.Series("FNMR", [(p["similarity"], p["fnmr"])
                                      for p in v["curves"]["vs_threshold"]], svg.PALETTE[2], True))
    figs.append(Figure(svg.line_chart(
        "FMR and FNMR against the similarity threshold", series,
        svg.Scale("linear", 0, 100), svg.Scale("log10", min(x_floor, y_floor), 1.0),
        "similarity threshold S", "rate (log scale)",
        verticals=[(t["similarity"], _thr_label(t["similarity"])) for t in v["thresholds"]],
        note=f"rates of 0 drawn at {min(x_floor, y_floor):.1e}"),
        "Error rates against the threshold."))
    for col, sec in v.get("by_group", {}).items():
        bars = []
        for g, rates in sec["genuine_tar"].items():
            for s in ("50", "80"):
                r = rates.get(s)
                if r:
                    bars.append(svg.Bar(f"{g} @S{s}", r["rate"], r["ci95_low"], r["ci95_high"],
                                        f"{r['k']}/{r['n']}",
                                        svg.PALETTE[0] if s == "50" else svg.PALETTE[2]))
        if bars:
            figs.append(Figure(svg.bar_chart(f"TAR by {col} at similarity 50 and 80", bars,
                                             "TAR (95% CI)", x_max=1.0),
                               f"TAR on genuine pairs by {col}."))
    return figs


def _detection_blocks(d: dict[str, Any]) -> list[Block]:
    cap = d["cap"]
    blocks: list[Block] = [
        Heading(2, "Detection"),
        Para(f"{d['dataset']['path']} ({d['dataset']['format']}): {d['images']} images, "
             f"{d['valid_faces']} valid faces ({d['invalid_faces']} invalid, ignored). Matching: "
             f"one-to-one, greedy by IoU, IoU >= {d['iou']}. Recall "
             f"{rate_cell(d['recall'])}. Detections: {d['detections']}, matching no face: "
             f"{d['unmatched_detections']}, on invalid faces: {d['detections_on_invalid_faces']}. "
             f"Images that failed: {d['images_failed']}."),
        Para(f"100-face cap: {cap['note']}. Images at the cap: {cap['images_at_cap']} "
             f"({cap['valid_faces_in_images_at_cap']} valid faces); images with more valid "
             f"faces than the cap: {cap['images_with_more_valid_faces_than_cap']}."),
        Table(["face height (px)", "recall"],
              [[k, rate_cell(r)] for k, r in d["by_size"].items()]),
    ]
    if "by_difficulty" in d:
        blocks.append(Table(["WIDER difficulty", "recall"],
                            [[k, rate_cell(r)] for k, r in d["by_difficulty"].items()]))
    bars = [svg.Bar("all valid", d["recall"]["rate"], d["recall"]["ci95_low"],
                    d["recall"]["ci95_high"], f"{d['recall']['k']}/{d['recall']['n']}")]
    bars += [svg.Bar(f"height {k}", r["rate"], r["ci95_low"], r["ci95_high"],
                     f"{r['k']}/{r['n']}", svg.PALETTE[3]) for k, r in d["by_size"].items()]
    bars += [svg.Bar(k, r["rate"], r["ci95_low"], r["ci95_high"], f"{r['k']}/{r['n']}",
                     svg.PALETTE[4]) for k, r in d.get("by_difficulty", {}).items()]
    for col, sec in d["by_group"].items():
        keys = list(next(iter(sec["values"].values()), {}).keys())
        blocks.append(Heading(3, f"Recall by {col}"))
        blocks.append(Table([col] + [f"recall ({k})" for k in keys],
                            [[v] + [rate_cell(rs[k]) for k in keys]
                             for v, rs in sec["values"].items()]
                            + [["(not annotated)", rate_cell(sec["not_annotated"])]
                               + ["-"] * (len(keys) - 1)]))
        bars += [svg.Bar(f"{col}: {v}", rs["all"]["rate"], rs["all"]["ci95_low"],
                         rs["all"]["ci95_high"], f"{rs['all']['k']}/{rs['all']['n']}",
                         svg.PALETTE[2]) for v, rs in sec["values"].items()]
    blocks.append(Figure(svg.bar_chart("Detection recall (IoU >= 0.5) by subset and group",
                                       bars, "recall (95% CI)", x_max=1.0, label_width=220),
                         "Detection recall."))
    return blocks


def _identification_blocks(items: Sequence[dict[str, Any]]) -> list[Block]:
    if not items:
        return []
    blocks: list[Block] = [Heading(2, "Identification (1:N)")]
    for it in items:
        blocks.append(Heading(3, it["name"]))
        blocks.append(Para(
            f"{it['source']}: {it['identities']} identities, {it['enrolled']} enrolled "
            f"(failed to enroll: {it['failed_to_enroll']}), {it['mated_probes']} mated probes "
            f"({it['mated_probes_without_face']} without a face), {it['nonmated_probes']} "
            f"non-mated probes ({it['nonmated_probes_without_face']} without a face). "
            f"FPIR: {it['fpir_method']}. Search: {it['search']}. Rank-1 accuracy: "
            f"{rate_cell(it['rank1'])}."))
        blocks.append(Table(["similarity >=", "distance <=", "FNIR", "FPIR"],
                            [[_thr_label(t["similarity"]), f"{t['distance']:.4f}",
                              rate_cell(t["fnir"]), rate_cell(t["fpir"])]
                             for t in it["thresholds"]]))
    return blocks


def _ratio_text(r: dict[str, Any]) -> str:
    if r["measurable"]:
        return f"{r['ratio']:.2f}x: {r['note']}"
    text = r["note"]
    if r.get("ratio_among_nonzero_groups") is not None:
        text += (f"; among groups with events: {r['ratio_among_nonzero_groups']:.2f}x "
                 f"({r['highest_group']} vs {r['lowest_nonzero_group']})")
    return text


def _group_blocks(sections: Sequence[dict[str, Any]]) -> list[Block]:
    if not sections:
        return []
    blocks: list[Block] = [Heading(2, "False-match rate by group (impostor pairs)")]
    for g in sections:
        thresholds = list(g["largest_ratio"])
        blocks.append(Heading(3, g["name"]))
        age = g.get("age_filter")
        blocks.append(Para(
            f"{g['path']}: {g['images']} images, groups by {', '.join(g['group_columns'])}; "
            f"impostor pairs: {g['impostor_rule']}. Images without a face: "
            f"{g['images_without_face']}; unlabelled: {g['images_unlabelled']}"
            + (f"; below age {age['min_age']:g} (kept apart): {age['images_below']}" if age
               else "") + "."))
        blocks.append(Table(
            ["group", "images (all ages)", "used", "impostor pairs"]
            + [f"FMR S>={t}" for t in thresholds],
            [[c["group"], str(c.get("images_all_ages", c["images"])), str(c["images_used"]),
              str(c["impostor_pairs"])] + [rate_cell(c["fmr"][t]) for t in thresholds]
             for c in g["cells"]]
            + ([["all pairs (any cells)", "", str(g["all_pairs"]["images_used"]),
                 str(g["all_pairs"]["impostor_pairs"])]
                + [rate_cell(g["all_pairs"]["fmr"][t]) for t in thresholds]]
               if "all_pairs" in g else [])))
        blocks.append(Bullets([f"Largest ratio between groups at S>={t}: "
                               f"{_ratio_text(g['largest_ratio'][t])}"
                               for t in g["ratio_thresholds"]]))
        if "children" in g:
            ch = g["children"]
            blocks.append(Para(f"Children ({ch['rule']}): {ch['images']} images. Pooled FMR: "
                               + "; ".join(f"S>={t}: {rate_cell(r)}"
                                           for t, r in ch["pooled_within_cells"].items())))
            if ch["cells"]:
                blocks.append(Table(
                    ["group (children)", "images used", "pairs"]
                    + [f"FMR S>={t}" for t in thresholds],
                    [[c["group"], str(c["images_used"]), str(c["impostor_pairs"])]
                     + [rate_cell(c["fmr"][t]) for t in thresholds] for c in ch["cells"]]))
        for t in g["ratio_thresholds"]:
            bars = [svg.Bar(c["group"], c["fmr"][t]["rate"], c["fmr"][t]["ci95_low"],
                            c["fmr"][t]["ci95_high"],
                            (f"0 of {c['fmr'][t]['n']}" if c["fmr"][t]["k"] == 0
                             else f"{c['fmr'][t]['k']}/{c['fmr'][t]['n']}"),
                            svg.PALETTE[1]) for c in g["cells"]]
            blocks.append(Figure(svg.bar_chart(
                f"{g['name']}: FMR at similarity {t}", bars, "FMR (95% CI)",
                note="whiskers: 95% Wilson interval; 0 events: whisker to the upper bound"),
                f"FMR by group at similarity {t}."))
    return blocks


def document(report: dict[str, Any]) -> list[Block]:
    blocks = _header_blocks(report)
    if "verification" in report:
        blocks += _verification_blocks(report["verification"])
    blocks += _group_blocks(report.get("groups", []))
    blocks += _identification_blocks(report.get("identification", []))
    if "detection" in report:
        blocks += _detection_blocks(report["detection"])
    return blocks


# -- writers ----------------------------------------------------------------------------------------
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?\w+;)")


def _md_text(s: str) -> str:
    """Neutralize what Markdown renderers would pass through as HTML (a tag opening ``<x``, an
    entity ``&x;``) while keeping ``<=`` and ``>=`` readable."""
    return _TAG_START.sub("&lt;", _ENTITY.sub("&amp;", str(s)))


def _md_cell(s: str) -> str:
    return _md_text(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + _md_text(b.text))
        elif isinstance(b, Para):
            out.append(_md_text(b.text))
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {_md_text(i)}" for i in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.headers) + " |",
                     "|" + "|".join("---" for _ in b.headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"_Figure in report.html: {_md_text(b.caption)}_")
        out.append("")
    return "\n".join(out)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
"""


def to_html(blocks: Sequence[Block], title: str = "Regard evaluation report") -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{escape(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            out.append("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in b.headers)
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                    for row in b.rows]
            out.append("</tbody></table>")
        elif isinstance(b, Figure):
            out.append(f"<figure>{b.svg}<figcaption>{escape(b.caption)}</figcaption></figure>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few key lines for the terminal."""
    lines = []
    v = report.get("verification")
    if v:
        t80 = next((t for t in v["thresholds"] if t["similarity"] == 80.0), None)
        acc = v["accuracy"]
        line = f"verification: {v['pairs']['total']} pairs"
        if "mean" in acc:
            line += f", CV accuracy {pct(acc['mean'])}"
        if t80:
            line += (f"; at similarity 80: TAR {rate_cell(t80['tar'])}, "
                     f"FMR {rate_cell(t80['fmr'])}")
        lines.append(line)
    for g in report.get("groups", []):
        parts = [f"at {t}: {_ratio_text(g['largest_ratio'][t])}"
                 for t in g["ratio_thresholds"] if t in g["largest_ratio"]]
        if parts:
            lines.append(f"groups ({g['name']}): largest FMR ratio " + "; ".join(parts))
    for it in report.get("identification", []):
        t80 = next((t for t in it["thresholds"] if t["similarity"] == 80.0), None)
        lines.append(f"identification ({it['name']}): rank-1 {rate_cell(it['rank1'])}"
                     + (f"; at 80: FNIR {rate_cell(t80['fnir'])}, FPIR {rate_cell(t80['fpir'])}"
                        if t80 else ""))
    d = report.get("detection")
    if d:
        lines.append(f"detection: recall {rate_cell(d['recall'])}, "
                     f"{d['unmatched_detections']} unmatched detections")
    return lines


def write_reports(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = clean_json(report)
    blocks = document(clean)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md",
             "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n",
                             encoding="utf-8")
    paths["md"].write_text(to_markdown(blocks), encoding="utf-8")
    paths["html"].write_text(to_html(blocks), encoding="utf-8")
    return paths
