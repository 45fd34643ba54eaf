"""``regard collections reindex``: move a collection to another face model.

Regard stores no photos, and embeddings of two models cannot be converted into each other, so
moving a collection to a new face-model pack means indexing its source images again. The command
creates the target collection (same tags, so the same policy; bound to the new model), indexes
the images whose ExternalImageId the source collection holds (resumable: images already in the
target are skipped by their SHA-256), and recreates every user with the same faces, found again
by ExternalImageId and bounding box. Every step is an ordinary audited operation. What could not
be carried over (faces whose image was not supplied, or not found again in it) is listed; the
source collection is left as it is for the operator to delete once clients use the target.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import typer

from regard.cli.collection_commands import (
    _call,
    _call_all,
    _service,
    collections_app,
    external_image_id,
    find_images,
    index_images,
    read_id_csv,
)
from regard.cli.batch_commands import RayOpt
from regard.cli.common import CaseOpt, PurposeOpt, _fail, err, out
from regard.errors import RegardError, ResourceNotFoundError
from regard.governance.policy import FACE_MODEL
from regard.vision.packs import get_pack

MIN_BOX_OVERLAP = 0.5  # IoU for a face found again in its image to count as the same face


@collections_app.command("reindex")
def collections_reindex(
    source: str = typer.Argument(..., help="The collection to move"),
    paths: Optional[list[Path]] = typer.Argument(
        None, help="Its source images: files or folders (searched recursively)"),
    to_model: str = typer.Option(..., "--to-model", help="Target FaceModelVersion"),
    into: Optional[str] = typer.Option(None, "--into",
                                       help="Target collection (default: SOURCE-vVERSION)"),
    id_csv: Optional[Path] = typer.Option(None, "--csv",
                                          help="CSV: image path or name, ExternalImageId"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    ray_address: Optional[str] = RayOpt,
) -> None:
    """Index SOURCE's images again into a collection bound to face model --to-model, keeping
    ExternalImageIds, consent references and user associations (resumable; every step audited).
    """
    purpose = purpose or f"move {source} to face model {to_model}"
    service = _service()
    try:
        pack = get_pack(to_model)
        src = service.store.catalog.get_collection(source)
    except RegardError as exc:
        _fail(exc)
        return
    target = into or f"{source}-v{pack.version}"
    if src.face_model_version == pack.version and target == source:
        err.print(f"[red]{source} already uses face model {pack.version}[/red]")
        raise typer.Exit(code=2)
    _ensure_target(service, src, target, pack.version, purpose, case)

    faces = _call_all("ListFaces", {"CollectionId": source}, "Faces", None, None, purpose,
                      case)["Faces"]
    by_external: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for face in faces:
        if face.get("ExternalImageId"):
            by_external[face["ExternalImageId"]].append(face)
    names = read_id_csv(id_csv) if id_csv else {}
    consents = _consent_refs(service, src.name)
    groups: dict[str | None, list[Path]] = defaultdict(list)  # consent reference -> images
    for path in find_images(list(paths or [])):
        external = names.get(str(path), names.get(path.name)) or external_image_id(path.name)
        if external in by_external:
            groups[consents.get(by_external[external][0]["FaceId"])].append(path)
    for consent, images in groups.items():
        try:
            index_images(target, [str(p) for p in images], id_csv=id_csv, max_faces=None,
                         quality_filter="NONE", as_json=False, detector=None, min_face_size=0,
                         workers=0, rescan=False, purpose=purpose, case=case, consent=consent,
                         ray_address=ray_address, chunk=8)
        except typer.Exit as exit_:
            if exit_.exit_code:
                err.print("[yellow]some images failed; run the command again to retry "
                          "them[/yellow]")

    moved = _match_faces(faces, _call_all("ListFaces", {"CollectionId": target}, "Faces", None,
                                          None, purpose, case)["Faces"])
    users = _recreate_users(service, source, target, faces, moved, purpose, case)
    left = [f for f in faces if f["FaceId"] not in moved]
    out.print(f"{target} (face model {pack.version}): {len(moved)} of {len(faces)} faces of "
              f"{source} carried over, {users} user(s) recreated")
    if left:
        out.print(f"[yellow]{len(left)} face(s) not carried over[/yellow] (no image given for "
                  "their ExternalImageId, or the face was not found again in it):")
        for face in left[:20]:
            out.print(f"  {face['FaceId']}  {face.get('ExternalImageId') or '(no ExternalImageId)'}")
        raise typer.Exit(code=1)


def _ensure_target(service: Any, src: Any, target: str, version: str, purpose: str,
                   case: Optional[str]) -> None:
    """Create the target with the source's tags (its policy), bound to ``version``; an existing
    target must already use ``version`` (a resumed run)."""
    try:
        existing = service.store.catalog.get_collection(target)
    except ResourceNotFoundError:
        _call("CreateCollection", {"CollectionId": target,
                                   "Tags": {**src.tags, FACE_MODEL: version}},
              service, purpose, case)
        return
    if existing.face_model_version != version:
        err.print(f"[red]{target} exists with face model {existing.face_model_version}, not "
                  f"{version}[/red]")
        raise typer.Exit(code=2)


def _consent_refs(service: Any, collection: str) -> dict[str, str | None]:
    """FaceId -> consent reference, for faces that have one (not part of Rekognition's Face)."""
    refs: dict[str, str | None] = {}
    after: str | None = None
    while True:
        rows = service.store.catalog.list_faces(collection, after=after, limit=1000)
        refs.update({r.face_id: r.consent_ref for r in rows if r.consent_ref})
        if len(rows) < 1000:
            return refs
        after = rows[-1].face_id


def _match_faces(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, str]:
    """Old FaceId -> new FaceId: the same ExternalImageId and the best-overlapping box."""
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for face in new:
        candidates[face.get("ExternalImageId") or ""].append(face)
    moved: dict[str, str] = {}
    taken: set[str] = set()
    for face in old:
        best, best_iou = None, MIN_BOX_OVERLAP
        for other in candidates.get(face.get("ExternalImageId") or "\0", []):
            overlap = _iou(face["BoundingBox"], other["BoundingBox"])
            if other["FaceId"] not in taken and overlap >= best_iou:
                best, best_iou = other, overlap
        if best is not None:
            moved[face["FaceId"]] = best["FaceId"]
            taken.add(best["FaceId"])
    return moved


def _iou(a: dict[str, float], b: dict[str, float]) -> float:
    left, top = max(a["Left"], b["Left"]), max(a["Top"], b["Top"])
    right = min(a["Left"] + a["Width"], b["Left"] + b["Width"])
    bottom = min(a["Top"] + a["Height"], b["Top"] + b["Height"])
    inter = max(0.0, right - left) * max(0.0, bottom - top)
    union = a["Width"] * a["Height"] + b["Width"] * b["Height"] - inter
    return inter / union if union > 0 else 0.0


def _recreate_users(service: Any, source: str, target: str, faces: list[dict[str, Any]],
                    moved: dict[str, str], purpose: str, case: Optional[str]) -> int:
    """Each source user, with the carried-over faces it had (associated whatever their
    similarity: the association was decided when they were first associated)."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for face in faces:
        if face.get("UserId") and face["FaceId"] in moved:
            by_user[face["UserId"]].append(moved[face["FaceId"]])
    users = _call_all("ListUsers", {"CollectionId": source}, "Users", None, None, purpose,
                      case)["Users"]
    existing = {u["UserId"] for u in _call_all("ListUsers", {"CollectionId": target}, "Users",
                                               None, None, purpose, case)["Users"]}
    for user in users:
        user_id = user["UserId"]
        if user_id not in existing:
            _call("CreateUser", {"CollectionId": target, "UserId": user_id}, service, purpose,
                  case)
        face_ids = by_user.get(user_id, [])
        for start in range(0, len(face_ids), 100):
            _call("AssociateFaces", {"CollectionId": target, "UserId": user_id,
                                     "FaceIds": face_ids[start:start + 100],
                                     "UserMatchThreshold": 0}, service, purpose, case)
    return len(users)
