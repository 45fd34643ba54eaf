"""AWS Signature Version 4 verification for the Rekognition door.

The server recomputes the signature with botocore's own signer (``SigV4Auth``: the canonical
request, string to sign and signing-key derivation the SDKs use) from the secret stored for the
access key, over exactly the headers the client says it signed, and compares in constant time.
What it refuses, with AWS's error names:

- no ``Authorization`` header: ``MissingAuthenticationTokenException``;
- a malformed one (no Credential/SignedHeaders/Signature, ``host`` or the date not signed):
  ``IncompleteSignatureException``;
- an ``x-amz-*`` or ``x-regard-*`` header that is present but not signed:
  ``InvalidSignatureException``. AWS requires what it acts on to be signed; here
  ``X-Amz-Target`` chooses the operation and ``X-Regard-Purpose``/``-Case``/``-Consent`` go to the
  ledger and to stored faces, so a header added after signing could replay a DescribeCollection
  as a DeleteCollection or forge a purpose. botocore signs every header it sends except hop-by-hop
  and tracing ones (``User-Agent``, ``Expect``, ``X-Amzn-Trace-Id``, ...), none of which match;
- an unknown or revoked key: ``UnrecognizedClientException``;
- a timestamp more than 5 minutes from the server's clock, a credential scoped to another day or
  service, a body whose hash is not the signed one, or a signature that does not match:
  ``InvalidSignatureException``.

The region in the credential scope is taken as the client sent it (a self-hosted server has no
region to enforce; clients configured for any region work).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from regard.errors import (
    IncompleteSignatureError,
    InvalidSignatureError,
    MissingAuthenticationTokenError,
)
from regard.governance.keys import AccessKey, KeyStore

ALGORITHM = "AWS4-HMAC-SHA256"
# Headers that must be signed whenever they are present (prefixes, lower case).
MUST_BE_SIGNED = ("x-amz-", "x-regard-")
MAX_SKEW = timedelta(minutes=5)
_FIELD = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs of an HTTP request, independent of the web framework."""

    method: str
    path: str  # raw, as sent (still percent-encoded)
    query: str  # raw query string, without '?'
    headers: list[tuple[str, str]]  # as received; names in any case, repeats allowed
    body: bytes


@dataclass(frozen=True)
class ParsedHeaders:
    """What the headers alone establish: a well-formed, current signature whose every x-amz-*
    and x-regard-* header is signed. The Rekognition door checks this before it reads the body,
    so an anonymous client cannot make the server buffer one."""

    access_key_id: str
    region: str
    stamp: str
    signed: list[str]
    signature: str
    headers: dict[str, list[str]]


@dataclass(frozen=True)
class Credential:
    """Parsed headers whose key is known and active, with the secret to check the signature."""

    parsed: ParsedHeaders
    key: AccessKey
    secret: str


def verify(request: SignedRequest, keys: KeyStore, service: str = "rekognition",
           now: datetime | None = None) -> AccessKey:
    """The access key that signed ``request``, or the AWS error that explains why not."""
    credential = with_key(parse_headers(request.headers, service, now), keys)
    return verify_signature(request, credential, service)


def with_key(parsed: ParsedHeaders, keys: KeyStore) -> Credential:
    """The credential of well-formed headers, once their key is known and active (a database
    read, so the door runs it off the event loop)."""
    key, secret = keys.secret(parsed.access_key_id)
    return Credential(parsed, key, secret)


def parse_headers(raw_headers: list[tuple[str, str]], service: str = "rekognition",
                  now: datetime | None = None) -> ParsedHeaders:
    """The checks that need nothing but the headers and the clock (no I/O)."""
    headers: dict[str, list[str]] = {}
    for name, value in raw_headers:
        headers.setdefault(name.lower(), []).append(value)
    auth = ",".join(headers.get("authorization", []))
    if not auth:
        raise MissingAuthenticationTokenError("Missing Authentication Token")
    algorithm, _, rest = auth.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignatureError(
            f"Unsupported authorization algorithm {algorithm!r}; use {ALGORITHM} (SigV4)")
    fields = dict(_FIELD.findall(rest))
    missing = [f for f in ("Credential", "SignedHeaders", "Signature") if f not in fields]
    if missing:
        raise IncompleteSignatureError(
            f"Authorization header requires {', '.join(repr(m) for m in missing)} parameter(s). "
            f"Authorization={auth[:200]}")
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not scope[0]:
        raise IncompleteSignatureError(
            "Credential must have the form <AccessKeyId>/<date>/<region>/<service>/aws4_request")
    access_key_id, scope_date, region, scope_service, _ = scope
    signed = [h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip()]
    if "host" not in signed:
        raise IncompleteSignatureError("'Host' must be a signed header")
    unsigned = sorted(name for name in headers
                      if name.startswith(MUST_BE_SIGNED) and name not in signed)
    if unsigned:
        raise InvalidSignatureError(
            f"Every x-amz-* and x-regard-* header must be signed; these were not: "
            f"{', '.join(unsigned)}. Add them before signing (boto3: register the header on "
            f"'before-sign', not 'before-send').")
    timestamp = _timestamp(headers, signed)
    now = now or datetime.now(timezone.utc)
    if timestamp < now - MAX_SKEW:
        raise InvalidSignatureError(
            f"Signature expired: {timestamp.strftime(SIGV4_TIMESTAMP)} is now earlier than "
            f"{(now - MAX_SKEW).strftime(SIGV4_TIMESTAMP)} "
            f"({now.strftime(SIGV4_TIMESTAMP)} - 5 min.)")
    if timestamp > now + MAX_SKEW:
        raise InvalidSignatureError(
            f"Signature not yet current: {timestamp.strftime(SIGV4_TIMESTAMP)} is still later "
            f"than {(now + MAX_SKEW).strftime(SIGV4_TIMESTAMP)} "
            f"({now.strftime(SIGV4_TIMESTAMP)} + 5 min.)")
    stamp = timestamp.strftime(SIGV4_TIMESTAMP)
    if scope_date != stamp[:8]:
        raise InvalidSignatureError(
            f"Credential should be scoped to a valid date: {scope_date} is not {stamp[:8]}")
    if scope_service != service:
        raise InvalidSignatureError(
            f"Credential should be scoped to correct service: '{service}'.")
    return ParsedHeaders(access_key_id, region, stamp, signed, fields["Signature"], headers)


def verify_signature(request: SignedRequest, credential: Credential,
                     service: str = "rekognition") -> AccessKey:
    """The key of ``credential`` when the signature covers ``request`` (body included)."""
    parsed = credential.parsed
    headers = parsed.headers
    body_hash = hashlib.sha256(request.body).hexdigest()
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared[-1] != body_hash:
        raise InvalidSignatureError(
            "The provided 'x-amz-content-sha256' header does not match what was computed.")

    aws_request = AWSRequest(
        method=request.method,
        url=f"http://{','.join(headers.get('host', ['']))}{request.path}"
            + (f"?{request.query}" if request.query else ""),
        data=request.body,
        headers={name: ",".join(headers.get(name, [])) for name in parsed.signed},
    )
    aws_request.context["timestamp"] = parsed.stamp
    signer = SigV4Auth(Credentials(credential.key.access_key_id, credential.secret), service,
                       parsed.region)
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if not hmac.compare_digest(expected, parsed.signature):
        raise InvalidSignatureError(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.")
    return credential.key


def _timestamp(headers: dict[str, list[str]], signed: list[str]) -> datetime:
    """The request time: ``X-Amz-Date`` (or ``Date``), which must itself be signed."""
    for name in ("x-amz-date", "date"):
        if name in headers:
            if name not in signed:
                raise IncompleteSignatureError(f"'{name}' must be a signed header")
            raw = headers[name][-1].strip()
            try:
                if name == "x-amz-date":
                    return datetime.strptime(raw, SIGV4_TIMESTAMP).replace(tzinfo=timezone.utc)
                parsed = parsedate_to_datetime(raw)
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
            except (ValueError, TypeError) as exc:
                raise IncompleteSignatureError(f"Unreadable {name} header {raw!r}") from exc
    raise IncompleteSignatureError("Authorization requires an 'X-Amz-Date' or 'Date' header")
