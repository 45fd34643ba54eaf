"""`regard collections | index | search | faces | users`: collections from the command line."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from regard.analysis import DEFAULT_SIMILARITY_THRESHOLD, Engine
from regard.batch import default_workers, map_images
from regard.cli.batch_commands import ChunkOpt, RayOpt, ray_index
from regard.cli.common import (
    CaseOpt,
    ConsentOpt,
    DetectorOpt,
    MinFaceOpt,
    PurposeOpt,
    _engine_kwargs,
    _fail,
    _print_error,
    _print_failure,
    _progress,
    app,
    err,
    local_context,
    out,
)
from regard.cluster.sources import is_s3
from regard.errors import CatalogCorruptError, InvalidImageFormatError, RegardError
from regard.service import EFFECTIVE_THRESHOLD, EXPECTED_FPIR
from regard.vision.packs import get_pack

# ==============================================================================================
# Collections: `regard collections|index|search|faces|users`. Each command calls one
# RegardService operation (or a paginated series of them) and, with --json, prints its Rekognition
# response body (pages of a listing merged into one body, as the AWS CLI does). The service and
# store are imported lazily so that `regard detect` does not pay for SQLAlchemy and FAISS.
# ==============================================================================================
collections_app = typer.Typer(help="Create, list, describe and delete collections.",
                              no_args_is_help=True)
faces_app = typer.Typer(help="List and delete the faces of a collection.", no_args_is_help=True)
users_app = typer.Typer(help="Users: named groups of faces, searched as one.",
                        no_args_is_help=True)
app.add_typer(collections_app, name="collections")
app.add_typer(faces_app, name="faces")
app.add_typer(users_app, name="users")

JsonOpt = typer.Option(False, "--json", help="Print the Rekognition response body")
MaxResultsOpt = typer.Option(None, "--max-results", help="One page of at most N (default: all)")
NextTokenOpt = typer.Option(None, "--next-token", help="Continue a listing from this token")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def _service(detector: Optional[str] = None, min_face_size: int = 0) -> Any:
    from regard.service import RegardService

    return RegardService(Engine(**_engine_kwargs(detector, min_face_size)))


def _call(operation: str, params: dict[str, Any], service: Any = None,
          purpose: Optional[str] = None, case: Optional[str] = None,
          consent: Optional[str] = None) -> dict[str, Any]:
    """One service call, audited with the command's purpose and case; a RegardError ends the
    command with its Rekognition name, exit code 1."""
    try:
        return (service or _service()).call(operation, params,
                                            local_context(purpose, case, consent))
    except RegardError as exc:
        _fail(exc)
        raise  # unreachable: _fail exits


def _call_all(operation: str, params: dict[str, Any], items: str,
              max_results: Optional[int], next_token: Optional[str],
              purpose: Optional[str] = None, case: Optional[str] = None) -> dict[str, Any]:
    """A listing: one page when --max-results is given, else every page merged into one body."""
    service = _service()
    params = {**params, **({"NextToken": next_token} if next_token else {})}
    if max_results is not None:
        return _call(operation, {**params, "MaxResults": max_results}, service, purpose, case)
    body = _call(operation, params, service, purpose, case)
    merged = dict(body)
    while body.get("NextToken"):
        body = _call(operation, {**params, "NextToken": body["NextToken"]}, service, purpose,
                     case)
        for key in items.split(","):
            merged[key] = merged.get(key, []) + body.get(key, [])
    merged.pop("NextToken", None)
    return merged


def _emit(body: dict[str, Any]) -> None:
    """A response body as the JSON 1.1 wire has it (timestamps as epoch seconds, blobs base64)."""
    from regard.spec import to_wire

    sys.stdout.write(to_wire(body).decode() + "\n")


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    out.print(table)


def _image_param(path: Path) -> dict[str, Any]:
    try:
        return {"Bytes": path.read_bytes()}
    except OSError as exc:
        err.print(f"[red]cannot read {path}[/red]: {exc.strerror}")
        raise typer.Exit(code=1) from exc


def _threshold_used(body: dict[str, Any]) -> str:
    """The threshold a search ran at and what it means for the collection's size."""
    return (f"{body[EFFECTIVE_THRESHOLD]:g} (expected false-positive identification rate "
            f"{_percent(body[EXPECTED_FPIR])} for a stranger at this collection's size)")


def _percent(rate: float) -> str:
    return f"{rate:.2%}" if rate >= 1e-4 else f"{rate:.1e}"


def _face_rows(faces: list[dict[str, Any]]) -> list[list[Any]]:
    return [[f["FaceId"], f.get("ExternalImageId"), f.get("UserId"), f"{f['Confidence']:.1f}"]
            for f in faces]


# -- collections ---------------------------------------------------------------------------------
@collections_app.command("create")
def collections_create(
    collection: str = typer.Argument(..., help="CollectionId ([a-zA-Z0-9_.-]+)"),
    purpose: str = typer.Option(..., "--purpose",
                                help="What the collection is for (required; its policy)"),
    legal_basis: Optional[str] = typer.Option(None, "--legal-basis"),
    retention_days: Optional[int] = typer.Option(None, "--retention-days",
                                                 help="Faces are deleted this long after indexing"),
    consent_required: bool = typer.Option(False, "--consent-required",
                                          help="IndexFaces needs a consent reference"),
    threshold_floor: Optional[float] = typer.Option(None, "--threshold-floor",
                                                    help="Searches below it are refused"),
    max_matches: Optional[int] = typer.Option(None, "--max-matches"),
    human_review: bool = typer.Option(False, "--human-review",
                                      help="Matches must be reviewed by a person"),
    max_fpir: Optional[float] = typer.Option(
        None, "--max-fpir", help="Highest expected false-positive identification rate a "
                                 "search may run at (0-1); the threshold rises with the "
                                 "collection's size"),
    live_identification: bool = typer.Option(
        False, "--live-identification",
        help="Stream processors may search it on live camera feeds (needs --legal-basis)"),
    face_model: Optional[str] = typer.Option(
        None, "--face-model", help="Face-model version (default: the default pack; see "
                                   "`regard models list`)"),
    tags: Optional[list[str]] = typer.Option(None, "--tag", help="KEY=VALUE (repeatable)"),
    case: Optional[str] = CaseOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a collection with its policy (CreateCollection; the policy is kept in regard:
    tags)."""
    from regard.governance.policy import FACE_MODEL, policy_tags

    params: dict[str, Any] = {"CollectionId": collection}
    declared = dict(t.split("=", 1) if "=" in t else (t, "") for t in tags or [])
    declared.update(policy_tags(purpose, legal_basis, retention_days, consent_required or None,
                                threshold_floor, max_matches, human_review or None, max_fpir,
                                live_identification or None))
    if face_model:
        declared[FACE_MODEL] = face_model
    params["Tags"] = declared
    body = _call("CreateCollection", params, purpose=purpose, case=case)
    if as_json:
        _emit(body)
    else:
        out.print(f"created {body['CollectionArn']}")


@collections_app.command("list")
def collections_list(max_results: Optional[int] = MaxResultsOpt,
                     next_token: Optional[str] = NextTokenOpt, as_json: bool = JsonOpt) -> None:
    """List collections (ListCollections)."""
    body = _call_all("ListCollections", {}, "CollectionIds,FaceModelVersions", max_results,
                     next_token)
    if as_json:
        _emit(body)
        return
    _table("collections", ["CollectionId", "FaceModelVersion"],
           [list(r) for r in zip(body["CollectionIds"], body["FaceModelVersions"])])
    if body.get("NextToken"):
        out.print(f"next token: {body['NextToken']}")


@collections_app.command("describe")
def collections_describe(collection: str = typer.Argument(...), as_json: bool = JsonOpt) -> None:
    """Face and user counts, ARN, creation time (DescribeCollection)."""
    body = _call("DescribeCollection", {"CollectionId": collection})
    if as_json:
        _emit(body)
        return
    _table(collection, ["field", "value"], [[k, v] for k, v in body.items()])


@collections_app.command("check")
def collections_check(collection: Optional[str] = typer.Argument(None, help="default: all"),
                      as_json: bool = JsonOpt) -> None:
    """Check the database file (SQLite's integrity check) and the store's invariants (counts,
    change log, embeddings and their checksums, index); exit 1 on a problem. Run it after a
    crash, a restore, a disk fault or a manual repair."""
    service: Any = None
    try:
        service = _service()
        report = service.call("CheckCollections",
                              {"CollectionId": collection} if collection else {}, local_context())
    except CatalogCorruptError as exc:
        # The damage may be in the audit ledger, which the check itself writes to: still say
        # where SQLite finds it (pages and tables, never faces).
        _print_failure(exc)
        for problem in service.store.database.integrity_problems() if service else []:
            out.print(f"  - {problem}")
        raise typer.Exit(code=1) from exc
    except RegardError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        if report["Database"]:
            out.print(f"[red]database file: {len(report['Database'])} problem(s)[/red]")
            for problem in report["Database"]:
                out.print(f"  - {problem}")
        for c in report["Collections"]:
            if c["Problems"]:
                out.print(f"[red]{c['CollectionId']}: {len(c['Problems'])} problem(s)[/red]")
                for problem in c["Problems"]:
                    out.print(f"  - {problem}")
            else:
                out.print(f"[green]{c['CollectionId']}: consistent[/green] "
                          f"({c['FaceCount']} faces)")
    if not report["Ok"]:
        raise typer.Exit(code=1)


@collections_app.command("delete")
def collections_delete(collection: str = typer.Argument(...), purpose: Optional[str] = PurposeOpt,
                       case: Optional[str] = CaseOpt, as_json: bool = JsonOpt) -> None:
    """Delete a collection with all its faces and users (DeleteCollection)."""
    body = _call("DeleteCollection", {"CollectionId": collection}, purpose=purpose, case=case)
    if as_json:
        _emit(body)
    else:
        out.print(f"deleted {collection}")


# -- index ---------------------------------------------------------------------------------------
def _index_task(engine: Engine, item: tuple[str, str]) -> Any:
    """Runs in a worker: decode, detect and embed every face with the collection's face model
    (``item``: path, FaceModelVersion); the parent writes."""
    path, face_model_version = item
    return engine.detect(path, embed=True, pack=get_pack(face_model_version))


def external_image_id(name: str) -> str:
    """A file name made acceptable as an ExternalImageId (letters, digits, ``_.-:``; <= 255)."""
    import re

    return (re.sub(r"[^a-zA-Z0-9_.\-:]", "_", name) or "_")[:255]


def find_images(paths: list[Path]) -> list[Path]:
    """Image files among ``paths``, folders searched recursively, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            err.print(f"[red]no such file or folder[/red]: {path}")
            raise typer.Exit(code=2)
    return list(dict.fromkeys(p.resolve() for p in found))


def _csv_rows(path: Path) -> list[list[str]]:
    """The CSV's rows, blank lines and an optional header row left out."""
    import csv

    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        err.print(f"[red]cannot read {path}[/red]: {exc}")
        raise typer.Exit(code=2) from None
    if rows and rows[0][0].strip().lower() in ("path", "file", "image", "filename"):
        rows = rows[1:]
    return rows


def csv_images(path: Path) -> list[str]:
    """The images a CSV lists (a manifest): resolved paths (relative ones taken from the CSV's
    folder) and ``s3://`` references, in its order."""
    images = [row[0].strip() for row in _csv_rows(path)]
    return [image if is_s3(image) else str((path.parent / image).resolve())
            for image in images if image]


def read_id_csv(path: Path) -> dict[str, str]:
    """CSV of (image path or file name, ExternalImageId); a header row is optional. Keys are
    resolved paths (relative ones taken from the CSV's folder) and bare file names."""
    mapping: dict[str, str] = {}
    rows = _csv_rows(path)
    for row in rows:
        if len(row) < 2:
            err.print(f"[red]{path}[/red]: each row needs an image and an ExternalImageId: {row}")
            raise typer.Exit(code=2)
        image, ext = row[0].strip(), row[1].strip()
        if is_s3(image):  # an object of a --ray batch: by its reference and its name
            mapping[image] = ext
            mapping.setdefault(image.rsplit("/", 1)[-1], ext)
            continue
        mapping[str((path.parent / image).resolve())] = ext
        mapping.setdefault(Path(image).name, ext)
    return mapping


def _sha256(path: Path) -> str:

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@app.command("index")
def index_images(
    collection: str = typer.Argument(..., help="CollectionId (must exist)"),
    paths: Optional[list[str]] = typer.Argument(
        None, help="Image files or folders (searched recursively); with --ray also "
                   "s3://BUCKET/PREFIX. None: the images the --csv lists"),
    id_csv: Optional[Path] = typer.Option(
        None, "--csv", help="CSV: image path or name, ExternalImageId (without PATHS: the "
                            "images to index)"),
    max_faces: Optional[int] = typer.Option(None, "--max-faces", help="MaxFaces per image"),
    quality_filter: str = typer.Option("AUTO", "--quality-filter",
                                       help="NONE | AUTO | LOW | MEDIUM | HIGH"),
    as_json: bool = typer.Option(False, "--json",
                                 help="One IndexFaces body per image, with an added Image member"),
    detector: Optional[str] = DetectorOpt,
    min_face_size: int = MinFaceOpt,
    workers: int = typer.Option(0, "--workers", help="Processes (default: all cores)"),
    rescan: bool = typer.Option(False, "--rescan",
                                help="Process again the images earlier runs stored no face from "
                                     "(e.g. with another --quality-filter or --detector)"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    consent: Optional[str] = ConsentOpt,
    ray_address: Optional[str] = RayOpt,
    chunk: int = ChunkOpt,
) -> None:
    """Index the faces of images and folders into a collection (IndexFaces per image).

    Resumable: images already indexed into the collection (by SHA-256: those with faces there,
    and those an earlier run stored no face from, unless --rescan) are skipped, so re-running
    after an interruption does only the rest. Faces are detected and embedded in worker
    processes; this process writes, one transaction per image. With --ray the batch runs on a
    Ray cluster: its workers read, detect and write into the shared catalog, each image once."""
    names = read_id_csv(id_csv) if id_csv else {}
    if not paths and id_csv is None:
        err.print("[red]give image files or folders, or a --csv that lists the images[/red]")
        raise typer.Exit(code=2)
    sources = [str(p) for p in paths] if paths else csv_images(id_csv)  # type: ignore[arg-type]
    if ray_address:
        if rescan:
            err.print("[red]--rescan is not available with --ray[/red] (run it without --ray)")
            raise typer.Exit(code=2)
        ray_index(collection, sources, names, address=ray_address,
                  quality_filter=quality_filter, max_faces=max_faces, detector=detector,
                  min_face_size=min_face_size, chunk_size=chunk, as_json=as_json,
                  context=local_context(purpose, case, consent), csv=id_csv,
                  manifest=not paths)
        return
    if any(is_s3(p) for p in sources):
        err.print("[red]s3:// sources need --ray[/red] (or a local copy of the images)")
        raise typer.Exit(code=2)
    service = _service(detector, min_face_size)
    catalog = service.store.catalog
    try:
        with_faces = catalog.image_hashes(collection)
        empty = set() if rescan else catalog.images_without_faces(collection)
        face_model = get_pack(catalog.get_collection(collection).face_model_version).version
    except RegardError as exc:
        _fail(exc)
        return
    todo: list[tuple[Path, str]] = []
    queued: set[str] = set()
    skipped = skipped_empty = unreadable = 0
    for path in find_images([Path(p) for p in sources]):
        try:
            digest = _sha256(path)
        except OSError as exc:  # gone since the listing, or not readable: report, go on
            unreadable += 1
            _print_error(path, InvalidImageFormatError(f"Cannot read the file: {exc.strerror}"),
                         as_json)
            continue
        if digest in with_faces or digest in queued:  # (a copy of an image queued already)
            skipped += 1
        elif digest in empty:
            skipped_empty += 1
        else:
            queued.add(digest)
            todo.append((path, digest))
    n_workers = workers or min(default_workers(), max(1, len(todo)))
    results = map_images(_index_task, [(str(p), face_model) for p, _ in todo], workers=n_workers,
                         engine_kwargs=_engine_kwargs(detector, min_face_size))
    indexed = unindexed = failed = 0
    with _progress(len(todo)) as progress:
        task = progress.add_task("indexing", total=len(todo))
        for (path, digest), detected in zip(todo, results):
            progress.advance(task)
            if not isinstance(detected, RegardError):
                params: dict[str, Any] = {
                    "CollectionId": collection, "QualityFilter": quality_filter,
                    "ExternalImageId": names.get(str(path), names.get(path.name))
                    or external_image_id(path.name)}
                if max_faces is not None:
                    params["MaxFaces"] = max_faces
                try:
                    body = service.index_detected_faces(
                        detected, digest, local_context(purpose, case, consent), **params)
                except RegardError as exc:
                    if exc.code == "ResourceNotFoundException":
                        _fail(exc)  # the collection went away: stop
                    detected = exc
            if isinstance(detected, RegardError):
                failed += 1
                _print_error(path, detected, as_json)
                continue
            indexed += len(body["FaceRecords"])
            unindexed += len(body["UnindexedFaces"])
            if as_json:
                _emit({"Image": str(path), **body})
    err.print(f"{len(todo) - failed} image(s) indexed: {indexed} face(s) added, {unindexed} not "
              f"indexed; {skipped} already indexed; {skipped_empty} without faces in an "
              f"earlier run (--rescan to process them again); {failed + unreadable} failed")
    if indexed:
        service.store.indexes.checkpoint_if_large(collection)  # the next search starts warm
    if failed or unreadable:
        raise typer.Exit(code=1)


# -- search --------------------------------------------------------------------------------------
@app.command("search")
def search(
    collection: str = typer.Argument(...),
    image: Optional[Path] = typer.Argument(None, help="Search with the largest face of IMAGE"),
    face_id: Optional[str] = typer.Option(None, "--face-id",
                                          help="Search with an indexed face instead"),
    threshold: Optional[float] = typer.Option(
        None, "--threshold",
        help=f"FaceMatchThreshold, 0-100 (default {DEFAULT_SIMILARITY_THRESHOLD:g}, or the "
             "collection's threshold floor when that is higher)"),
    max_faces: int = typer.Option(100, "--max-faces", help="MaxFaces"),
    quality_filter: str = typer.Option("NONE", "--quality-filter",
                                       help="NONE | AUTO | LOW | MEDIUM | HIGH (image only)"),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print the SearchFacesByImage (or SearchFaces) body"),
    detector: Optional[str] = DetectorOpt,
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
) -> None:
    """Search a collection with an image's largest face, or with an indexed face.

    SearchFacesByImage (IMAGE) or SearchFaces (--face-id); matches best first."""
    if (image is None) == (face_id is None):
        err.print("[red]give either IMAGE or --face-id[/red]")
        raise typer.Exit(code=2)
    params: dict[str, Any] = {"CollectionId": collection, "MaxFaces": max_faces}
    if threshold is not None:
        params["FaceMatchThreshold"] = threshold
    if image is not None:
        params.update(Image=_image_param(image), QualityFilter=quality_filter)
        body = _call("SearchFacesByImage", params, _service(detector), purpose, case)
    else:
        body = _call("SearchFaces", {**params, "FaceId": face_id}, purpose=purpose, case=case)
    if as_json:
        _emit(body)
        return
    rows = [[f"{m['Similarity']:.2f}", *_face_rows([m["Face"]])[0][:3]]
            for m in body["FaceMatches"]]
    _table(f"{collection}: {len(rows)} match(es) at >= {_threshold_used(body)}",
           ["similarity", "FaceId", "ExternalImageId", "UserId"], rows)


# -- faces ---------------------------------------------------------------------------------------
@faces_app.command("list")
def faces_list(
    collection: str = typer.Argument(...),
    user_id: Optional[str] = typer.Option(None, "--user-id", help="Only this user's faces"),
    face_ids: Optional[list[str]] = typer.Option(None, "--face-id", help="Only these (repeatable)"),
    max_results: Optional[int] = MaxResultsOpt,
    next_token: Optional[str] = NextTokenOpt,
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List faces (ListFaces)."""
    params: dict[str, Any] = {"CollectionId": collection}
    if user_id:
        params["UserId"] = user_id
    if face_ids:
        params["FaceIds"] = face_ids
    body = _call_all("ListFaces", params, "Faces", max_results, next_token, purpose, case)
    if as_json:
        _emit(body)
        return
    _table(f"{collection}: {len(body['Faces'])} face(s)",
           ["FaceId", "ExternalImageId", "UserId", "confidence"], _face_rows(body["Faces"]))
    if body.get("NextToken"):
        out.print(f"next token: {body['NextToken']}")


@faces_app.command("delete")
def faces_delete(collection: str = typer.Argument(...),
                 face_ids: list[str] = typer.Argument(..., help="FaceIds to delete"),
                 purpose: Optional[str] = PurposeOpt, case: Optional[str] = CaseOpt,
                 as_json: bool = JsonOpt) -> None:
    """Delete faces (DeleteFaces); faces associated with a user are refused."""
    body = _call("DeleteFaces", {"CollectionId": collection, "FaceIds": face_ids},
                 purpose=purpose, case=case)
    if as_json:
        _emit(body)
        return
    out.print(f"deleted {len(body['DeletedFaces'])} face(s)")
    for f in body["UnsuccessfulFaceDeletions"]:
        err.print(f"{f['FaceId']}: {', '.join(f['Reasons'])}")


# -- users ---------------------------------------------------------------------------------------
@users_app.command("create")
def users_create(collection: str = typer.Argument(...), user_id: str = typer.Argument(...),
                 purpose: Optional[str] = PurposeOpt, case: Optional[str] = CaseOpt,
                 as_json: bool = JsonOpt) -> None:
    """Create a user (CreateUser)."""
    body = _call("CreateUser", {"CollectionId": collection, "UserId": user_id}, purpose=purpose,
                 case=case)
    if as_json:
        _emit(body)
    else:
        out.print(f"created user {user_id}")


@users_app.command("delete")
def users_delete(collection: str = typer.Argument(...), user_id: str = typer.Argument(...),
                 purpose: Optional[str] = PurposeOpt, case: Optional[str] = CaseOpt,
                 as_json: bool = JsonOpt) -> None:
    """Delete a user; its faces stay, disassociated (DeleteUser)."""
    body = _call("DeleteUser", {"CollectionId": collection, "UserId": user_id}, purpose=purpose,
                 case=case)
    if as_json:
        _emit(body)
    else:
        out.print(f"deleted user {user_id}")


@users_app.command("list")
def users_list(collection: str = typer.Argument(...), max_results: Optional[int] = MaxResultsOpt,
               next_token: Optional[str] = NextTokenOpt, purpose: Optional[str] = PurposeOpt,
               case: Optional[str] = CaseOpt, as_json: bool = JsonOpt) -> None:
    """List users (ListUsers)."""
    body = _call_all("ListUsers", {"CollectionId": collection}, "Users", max_results, next_token,
                     purpose, case)
    if as_json:
        _emit(body)
        return
    _table(f"{collection}: {len(body['Users'])} user(s)", ["UserId", "UserStatus"],
           [[u["UserId"], u["UserStatus"]] for u in body["Users"]])


@users_app.command("associate")
def users_associate(
    collection: str = typer.Argument(...), user_id: str = typer.Argument(...),
    face_ids: list[str] = typer.Argument(..., help="FaceIds (at most 100)"),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="UserMatchThreshold (default 75)"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Associate faces with a user (AssociateFaces)."""
    params: dict[str, Any] = {"CollectionId": collection, "UserId": user_id, "FaceIds": face_ids}
    if threshold is not None:
        params["UserMatchThreshold"] = threshold
    body = _call("AssociateFaces", params, purpose=purpose, case=case)
    if as_json:
        _emit(body)
        return
    out.print(f"{len(body['AssociatedFaces'])} face(s) associated; user {body['UserStatus']}")
    for f in body["UnsuccessfulFaceAssociations"]:
        err.print(f"{f['FaceId']}: {', '.join(f['Reasons'])}")


@users_app.command("disassociate")
def users_disassociate(collection: str = typer.Argument(...), user_id: str = typer.Argument(...),
                       face_ids: list[str] = typer.Argument(...),
                       purpose: Optional[str] = PurposeOpt, case: Optional[str] = CaseOpt,
                       as_json: bool = JsonOpt) -> None:
    """Disassociate faces from a user (DisassociateFaces)."""
    body = _call("DisassociateFaces", {"CollectionId": collection, "UserId": user_id,
                                       "FaceIds": face_ids}, purpose=purpose, case=case)
    if as_json:
        _emit(body)
        return
    out.print(f"{len(body['DisassociatedFaces'])} face(s) disassociated")
    for f in body["UnsuccessfulFaceDisassociations"]:
        err.print(f"{f['FaceId']}: {', '.join(f['Reasons'])}")


@users_app.command("search")
def users_search(
    collection: str = typer.Argument(...),
    image: Optional[Path] = typer.Option(None, "--image", help="SearchUsersByImage"),
    face_id: Optional[str] = typer.Option(None, "--face-id", help="SearchUsers by FaceId"),
    user_id: Optional[str] = typer.Option(None, "--user-id", help="SearchUsers by UserId"),
    threshold: Optional[float] = typer.Option(
        None, "--threshold",
        help="UserMatchThreshold (default 80, or the collection's threshold floor)"),
    max_users: int = typer.Option(100, "--max-users", help="MaxUsers"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Users matching an image's largest face, an indexed face, or another user."""
    if sum(x is not None for x in (image, face_id, user_id)) != 1:
        err.print("[red]give exactly one of --image, --face-id, --user-id[/red]")
        raise typer.Exit(code=2)
    params: dict[str, Any] = {"CollectionId": collection, "MaxUsers": max_users}
    if threshold is not None:
        params["UserMatchThreshold"] = threshold
    if image is not None:
        body = _call("SearchUsersByImage", {**params, "Image": _image_param(image)},
                     purpose=purpose, case=case)
    elif face_id is not None:
        body = _call("SearchUsers", {**params, "FaceId": face_id}, purpose=purpose, case=case)
    else:
        body = _call("SearchUsers", {**params, "UserId": user_id}, purpose=purpose, case=case)
    if as_json:
        _emit(body)
        return
    _table(f"{collection}: {len(body['UserMatches'])} user(s) at >= {_threshold_used(body)}",
           ["similarity", "UserId", "UserStatus"],
           [[f"{m['Similarity']:.2f}", m["User"]["UserId"], m["User"]["UserStatus"]]
            for m in body["UserMatches"]])


