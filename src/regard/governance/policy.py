"""Collection policies: what a collection is for, how long it keeps faces, and how it may be searched.

A policy lives in the collection's tags under the ``regard:`` prefix, so it is visible and
changeable through Rekognition's own TagResource / UntagResource / ListTagsForResource (every
change is an audited operation) and there is one source of truth:

==========================  ===================================================================
``regard:purpose``          why the collection exists (required at creation; a server default
                            may supply it for Rekognition clients that cannot tag)
``regard:legal-basis``      e.g. "consent: GDPR art. 9.2.a" (tag values allow letters,
                            digits, spaces and _.:/=+-@)
``regard:retention-days``   faces older than this are deleted by the retention sweeper
``regard:consent-required`` "true": IndexFaces needs a consent reference (X-Regard-Consent)
``regard:threshold-floor``  searches with a lower match threshold are refused; no threshold
                            given means the floor (when it is above Rekognition's default 80)
``regard:max-matches``      at most this many matches per search (MaxFaces/MaxUsers capped)
``regard:human-review``     "true": matches are marked as requiring human review
``regard:max-fpir``         the highest expected false-positive identification rate a search
                            may run at (0-1): a stranger searched against N faces matches
                            somebody with probability about N x FMR, so the effective threshold
                            rises with the collection (a search that no calibrated threshold
                            can keep under the cap is refused)
``regard:live-identification`` "allowed": stream processors may search the collection on live
                            camera feeds (refused otherwise; needs a legal basis too)
==========================  ===================================================================

``regard:face-model`` chooses the face-model version at creation (CreateCollection's Tags); it is
not kept as a tag: the collection is bound to that model for good (``regard collections reindex``
moves its faces to another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from regard.errors import InvalidParameterError

PREFIX = "regard:"
PURPOSE = "regard:purpose"
LEGAL_BASIS = "regard:legal-basis"
RETENTION_DAYS = "regard:retention-days"
CONSENT_REQUIRED = "regard:consent-required"
THRESHOLD_FLOOR = "regard:threshold-floor"
MAX_MATCHES = "regard:max-matches"
HUMAN_REVIEW = "regard:human-review"
MAX_FPIR = "regard:max-fpir"
LIVE_IDENTIFICATION = "regard:live-identification"
FACE_MODEL = "regard:face-model"
KNOWN = (PURPOSE, LEGAL_BASIS, RETENTION_DAYS, CONSENT_REQUIRED, THRESHOLD_FLOOR, MAX_MATCHES,
         HUMAN_REVIEW, MAX_FPIR, LIVE_IDENTIFICATION)


@dataclass(frozen=True)
class CollectionPolicy:
    purpose: str | None = None
    legal_basis: str | None = None
    retention_days: int | None = None
    consent_required: bool = False
    threshold_floor: float | None = None
    max_matches: int | None = None
    human_review: bool = False
    max_fpir: float | None = None
    live_identification: bool = False

    @classmethod
    def from_tags(cls, tags: Mapping[str, str] | None) -> "CollectionPolicy":
        """Parse (and validate) the ``regard:`` tags; other tags are the user's own."""
        tags = tags or {}
        unknown = sorted(k for k in tags if k.startswith(PREFIX) and k not in KNOWN)
        if unknown:
            raise InvalidParameterError(
                f"Unknown policy tag(s) {', '.join(unknown)}; policy tags are {', '.join(KNOWN)}")
        return cls(
            purpose=_text(tags, PURPOSE),
            legal_basis=_text(tags, LEGAL_BASIS),
            retention_days=_number(tags, RETENTION_DAYS, int, 1, 36500),
            consent_required=_flag(tags, CONSENT_REQUIRED),
            threshold_floor=_number(tags, THRESHOLD_FLOOR, float, 0, 100),
            max_matches=_number(tags, MAX_MATCHES, int, 1, 4096),
            human_review=_flag(tags, HUMAN_REVIEW),
            max_fpir=_number(tags, MAX_FPIR, float, 1e-9, 1),
            live_identification=_choice(tags, LIVE_IDENTIFICATION, "allowed", "denied"),
        )

    def to_dict(self) -> dict[str, Any]:
        """For the native API and the transparency report."""
        return {"Purpose": self.purpose, "LegalBasis": self.legal_basis,
                "RetentionDays": self.retention_days, "ConsentRequired": self.consent_required,
                "ThresholdFloor": self.threshold_floor, "MaxMatches": self.max_matches,
                "HumanReview": self.human_review, "MaxFpir": self.max_fpir,
                "LiveIdentification": self.live_identification}


def policy_tags(purpose: str | None = None, legal_basis: str | None = None,
                retention_days: int | None = None, consent_required: bool | None = None,
                threshold_floor: float | None = None, max_matches: int | None = None,
                human_review: bool | None = None, max_fpir: float | None = None,
                live_identification: bool | None = None) -> dict[str, str]:
    """The tags that declare a policy (for the CLI's and REST's named options)."""
    tags = {PURPOSE: purpose, LEGAL_BASIS: legal_basis,
            RETENTION_DAYS: None if retention_days is None else str(retention_days),
            CONSENT_REQUIRED: None if consent_required is None else str(consent_required).lower(),
            THRESHOLD_FLOOR: None if threshold_floor is None else f"{threshold_floor:g}",
            MAX_MATCHES: None if max_matches is None else str(max_matches),
            HUMAN_REVIEW: None if human_review is None else str(human_review).lower(),
            MAX_FPIR: None if max_fpir is None else f"{max_fpir:g}",
            LIVE_IDENTIFICATION: None if live_identification is None
            else ("allowed" if live_identification else "denied")}
    return {k: v for k, v in tags.items() if v is not None}


def _text(tags: Mapping[str, str], key: str) -> str | None:
    value = tags.get(key)
    if value is None:
        return None
    if not value.strip():
        raise InvalidParameterError(f"Policy tag {key} must not be empty")
    return value.strip()


def _flag(tags: Mapping[str, str], key: str) -> bool:
    value = tags.get(key)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise InvalidParameterError(f"Policy tag {key} must be true or false, got {value!r}")
    return value.lower() == "true"


def _choice(tags: Mapping[str, str], key: str, yes: str, no: str) -> bool:
    value = tags.get(key)
    if value is None:
        return False
    if value.lower() not in (yes, no):
        raise InvalidParameterError(f"Policy tag {key} must be {yes} or {no}, got {value!r}")
    return value.lower() == yes


def _number(tags: Mapping[str, str], key: str, kind: type, low: float, high: float) -> Any:
    value = tags.get(key)
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError as exc:
        raise InvalidParameterError(f"Policy tag {key} must be a number, got {value!r}") from exc
    if not low <= number <= high:
        raise InvalidParameterError(f"Policy tag {key} must be {low:g}-{high:g}, got {value}")
    return number
