"""Every ``REGARD_*`` setting, typed and documented in one place.

Regard needs no config file: an operator sets environment variables (and a few ``regard serve``
flags, which win over them). Each variable is declared once, below, as a ``Setting`` inside
``Settings``: its name, type, default, the flag that overrides it, and a paragraph saying what it
does. ``SETTINGS`` lists them, ``settings_markdown()`` turns them into the README's table, and a
test checks that every ``REGARD_*`` name the package reads is declared here, so the docs cannot
drift from the code.

Design: ``current()`` takes a snapshot of the ``REGARD_*`` variables at each call (tests and the
CLI change the environment at run time, so nothing is cached across calls) and returns a frozen
``Settings``. Each setting is a descriptor that parses its own variable the first time it is read
from that snapshot: a malformed value raises ``InvalidParameterError`` naming the variable and
what it must be, only when that setting is read, so a bad ``REGARD_HNSW_THRESHOLD`` never stops
a command that only needs ``REGARD_HOME``. ``Settings.problems()`` reads them all, for a start-up
check. An empty variable counts as unset.

    >>> from regard import config
    >>> config.current().home            # doctest: +SKIP
    PosixPath('/home/me/.regard')

``python -m regard.config --markdown`` prints the settings table, from which the documentation's
settings reference is generated (``--update FILE`` rewrites a file's block between the settings
markers).
"""

from __future__ import annotations

import os
import re
import sys
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, TypeVar, overload

from regard.errors import InvalidParameterError

PREFIX = "REGARD_"

# Rekognition's default FaceMatchThreshold / UserMatchThreshold / SimilarityThreshold (0-100).
# A request without a threshold gets this one, as it would from AWS; our calibration tables state
# what it means as a false-match rate (see the README, Similarity and error rates).
DEFAULT_MATCH_THRESHOLD = 80.0

T = TypeVar("T")


class _Bad(ValueError):
    """A value that does not parse; the text says what it must be (``Setting`` adds the name)."""


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: what it is called, what it holds and why it exists.

    Declared as a class attribute of ``Settings``, where it reads as the typed field ``field``:
    ``Settings.<field>`` is this record, ``current().<field>`` the parsed value."""

    env: str
    type: str  # how the docs name the type ("integer >= 1", "path", "FULL | NORMAL | EXTRA")
    default: T  # the value when the variable is unset or empty (None: Regard decides, see doc)
    doc: str
    parse: Callable[[str], T] = dataclasses.field(repr=False, compare=False)
    flag: str | None = None  # the CLI flag that overrides it, if any
    secret: bool = False  # never echoed in errors or reprs
    default_text: str | None = None  # how the docs show the default, when not plain
    # computes the value when unset, at read time (``~`` expands with HOME as it is then)
    compute_default: Callable[[], T] | None = dataclasses.field(default=None, repr=False,
                                                                compare=False)
    field: str = ""  # set from the attribute name by ``__set_name__``

    def __set_name__(self, owner: type, name: str) -> None:
        expected = self.env[len(PREFIX):].lower()
        if not self.env.startswith(PREFIX) or name != expected:
            raise TypeError(f"Setting {self.env} must be declared as Settings.{expected}")
        object.__setattr__(self, "field", name)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, obj: Settings, owner: type | None = None) -> T: ...

    def __get__(self, obj: Settings | None, owner: type | None = None) -> Setting[T] | T:
        if obj is None:
            return self
        value = self.read(obj.environ)
        obj.__dict__[self.field] = value  # parsed once per snapshot; the instance stays frozen
        return value

    def read(self, environ: Mapping[str, str]) -> T:
        """The value in ``environ``, or the default; ``InvalidParameterError`` if malformed."""
        raw = (environ.get(self.env) or "").strip()
        if not raw:
            return self.compute_default() if self.compute_default else self.default
        try:
            return self.parse(raw)
        except _Bad as exc:
            got = "" if self.secret else f", got {raw!r}"
            raise InvalidParameterError(f"{self.env} {exc}{got}") from None

    @property
    def default_doc(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        return "unset" if self.default is None else str(self.default)


# -- kinds of setting: each builds the parser and the type's name for the docs ------------------
def _to_int(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise _Bad("must be an integer") from None
        if value < minimum:
            raise _Bad(f"must be at least {minimum}")
        return value
    return parse


def _int(env: str, default: int, doc: str, *, minimum: int = 1,
         default_text: str | None = None, flag: str | None = None) -> Setting[int]:
    return Setting(env, f"integer >= {minimum}", default, doc, _to_int(minimum),
                   default_text=default_text, flag=flag)


def _optional_int(env: str, doc: str, *, default_text: str,
                  minimum: int = 1) -> Setting[int | None]:
    return Setting(env, f"integer >= {minimum}", None, doc, _to_int(minimum),
                   default_text=default_text)


def _str(env: str, default: str, doc: str, *, pattern: str | None = None,
         must_be: str = "", type_name: str = "string") -> Setting[str]:
    def parse(raw: str) -> str:
        if pattern is not None and not re.fullmatch(pattern, raw):
            raise _Bad(f"must be {must_be}")
        return raw
    return Setting(env, type_name, default, doc, parse)


def _optional_str(env: str, doc: str, *, flag: str | None = None, secret: bool = False,
                  default_text: str | None = None, type_name: str = "string"
                  ) -> Setting[str | None]:
    return Setting(env, type_name, None, doc, lambda raw: raw, flag=flag, secret=secret,
                   default_text=default_text)


def _choice(env: str, default: str, choices: tuple[str, ...], doc: str, *,
            upper: bool = False) -> Setting[str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw
        if value not in choices:
            raise _Bad(f"must be {', '.join(choices[:-1])} or {choices[-1]}")
        return value
    return Setting(env, " | ".join(choices), default, doc, parse)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _bool(env: str, default: bool, doc: str) -> Setting[bool]:
    def parse(raw: str) -> bool:
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise _Bad("must be 1 or 0 (true/false, yes/no, on/off)")
    return Setting(env, "0 | 1", default, doc, parse)


def _webhooks(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in raw.split():
        arn, sep, url = pair.partition("=")
        if not sep or not re.fullmatch(r"arn:aws:sns:[^:]*:\w{12}:.+", arn) \
                or not re.match(r"https?://[^/\s]+", url):
            raise _Bad("must be SNS topic ARN=http(s) URL pairs separated by spaces, e.g. "
                       "arn:aws:sns:us-east-1:000000000000:jobs=https://hooks.example/regard")
        found[arn] = url
    return found


def _path(env: str, default: Path, doc: str, *, flag: str | None = None,
          default_text: str | None = None) -> Setting[Path]:
    # ``default`` may start with ``~``: expanded when read, so HOME is looked up then, not here.
    return Setting(env, "path", default, doc, lambda raw: Path(raw).expanduser(), flag=flag,
                   default_text=default_text, compute_default=default.expanduser)


def _optional_path(env: str, doc: str, *, default_text: str | None = None) -> Setting[Path | None]:
    return Setting(env, "path", None, doc, lambda raw: Path(raw).expanduser(),
                   default_text=default_text)


def _hex_key(raw: str) -> bytes:
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        raise _Bad("must be hex") from None
    if len(key) < 16:
        raise _Bad("must hold at least 16 bytes (32 hex digits)")
    return key


@dataclass(frozen=True, repr=False)
class Settings:
    """Regard's settings as read from one snapshot of the environment (``current()``).

    Each attribute below is a ``Setting`` that parses its variable when first read, so a
    malformed variable raises only where it is used. To change a setting, change the
    environment (or pass the CLI flag) and call ``current()`` again."""

    environ: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)

    # -- where data lives ---------------------------------------------------------------------
    home = _path(
        "REGARD_HOME", Path("~/.regard"),
        "Data directory, created owner-only on first use: the SQLite catalog (`regard.db`), the "
        "ledger's signing key (`ledger.key`), converted models (`models/`), face-model packs you "
        "install (`models/packs/`) and index checkpoints (`index/`).",
        flag="`--home` (`regard serve`, `regard keys`)")
    database_url = _optional_str(
        "REGARD_DATABASE_URL",
        "SQLAlchemy URL of the catalog. Unset: SQLite at `$REGARD_HOME/regard.db` (WAL mode). "
        "Set `postgresql+psycopg://...` (`pip install 'regard[postgres]'`) for several replicas "
        "sharing one catalog; they must then share `REGARD_LEDGER_KEY` too.",
        type_name="URL", secret=True,  # may hold a password
        default_text="unset (SQLite under `REGARD_HOME`)")
    db_busy_timeout_ms = _int(
        "REGARD_DB_BUSY_TIMEOUT_MS", 60_000,
        "Milliseconds a SQLite connection waits for another writer's lock before the request "
        "fails with `InternalServerError` (\"unavailable or busy; retry with backoff\", which the "
        "AWS SDKs retry) instead of hanging. SQLite only.", minimum=0)
    sqlite_synchronous = _choice(
        "REGARD_SQLITE_SYNCHRONOUS", "FULL", ("FULL", "NORMAL", "EXTRA"),
        "SQLite's `PRAGMA synchronous` for the catalog (case-insensitive). `FULL` syncs every "
        "commit to disk, so an acknowledged face survives a power cut; `NORMAL` skips that "
        "fsync (faster writes, still consistent after a crash, but the last commits can be lost "
        "when the power goes); `EXTRA` also syncs the journal's directory.", upper=True)
    change_log_keep = _int(
        "REGARD_CHANGE_LOG_KEEP", 100_000,
        "Changes kept per collection so that loaded vector indexes (other replicas, restored "
        "checkpoints) catch up by replaying them; an index further behind reloads the collection "
        "from the catalog instead.")
    min_free_bytes = _int(
        "REGARD_MIN_FREE_BYTES", 16 * 1024 * 1024,
        "Free bytes beside the SQLite file below which `/healthz` answers 503 (`\"storage\": "
        "\"full\"`), so that a load balancer moves traffic away before writes start failing. "
        "0 turns the early warning off.", minimum=0, default_text="`16777216` (16 MiB)")
    data = _optional_path(
        "REGARD_DATA",
        "The research evaluation data (`regard eval`, benchmarks, data-marked tests). It is "
        "research-licensed and never shipped; tests that need it skip when it is absent.",
        default_text="`../shared/data/dev` next to the checkout, then `/work/shared/data/dev`")

    # -- vector indexes -----------------------------------------------------------------------
    hnsw_threshold = _int(
        "REGARD_HNSW_THRESHOLD", 50_000,
        "Live faces from which a collection's vector index switches from exact search to HNSW "
        "(approximate; sub-millisecond at a million faces). Below it exact search is fast "
        "enough and its recall is perfect (measured by `bench/collections_scale.py`).")
    hnsw_ef_search = _int(
        "REGARD_HNSW_EF_SEARCH", 256,
        "HNSW search breadth (`efSearch`) up to 500,000 faces, doubled above: more is better "
        "recall for more latency (at a million faces, recall@1 of strangers' probes was 0.897 "
        "at 128, 0.953 at 256, 0.993 at 512).")
    index_build_threads = _optional_int(
        "REGARD_INDEX_BUILD_THREADS",
        "OpenMP threads FAISS uses to build indexes and run large batch searches; lower it to "
        "leave cores to image operations while a large collection loads.",
        default_text="unset (one per CPU core)")

    # -- accountability -----------------------------------------------------------------------
    ledger_key = Setting[bytes | None](
        env="REGARD_LEDGER_KEY", type="hex, >= 16 bytes", default=None, parse=_hex_key,
        secret=True, default_text="unset (`$REGARD_HOME/ledger.key`, created on first use)",
        doc="HMAC key signing the audit ledger's head. Replicas sharing a database need the same "
            "key, so set it on each of them (`regard serve` refuses to start when the ledger's "
            "head does not verify with its key).")
    default_purpose = _optional_str(
        "REGARD_DEFAULT_PURPOSE",
        "Purpose given to collections created without one (a Rekognition CreateCollection "
        "without a `regard:purpose` tag). Unset: such requests are refused, since every "
        "collection must say why it holds biometric data.",
        flag="`regard serve --default-purpose`", default_text="unset (refused)")
    audit_detect = _bool(
        "REGARD_AUDIT_DETECT", True,
        "Whether DetectFaces is recorded in the audit ledger. Detection stores and identifies "
        "nobody, so a deployment running it at volume may turn its logging off with 0; every "
        "operation that compares, stores or searches faces is logged regardless.")
    clearing_allocator = _choice(
        "REGARD_CLEARING_ALLOCATOR", "1", ("1", "0", "restarted"),
        "`regard serve` restarts itself with glibc set to overwrite freed memory, so that no "
        "copy of an erased embedding lingers in the server's memory; 0 opts out. `restarted` is "
        "what Regard sets in the restarted process, so that it never restarts twice.")

    # -- images -------------------------------------------------------------------------------
    max_image_bytes = _int(
        "REGARD_MAX_IMAGE_BYTES", 5 * 1024 * 1024,
        "Largest inline image accepted, in bytes (Rekognition's limit for image bytes; S3 "
        "objects may reach 15 MB).", default_text="`5242880` (5 MiB)")
    max_image_pixels = _int(
        "REGARD_MAX_IMAGE_PIXELS", 40_000_000,
        "Largest image accepted, in pixels, checked from the header before decoding, so that a "
        "decompression bomb never allocates its pixels.", default_text="`40000000` (40 MP)")
    max_analysis_pixels = _int(
        "REGARD_MAX_ANALYSIS_PIXELS", 1920 * 1080,
        "Larger images are analysed on a reduced copy, as Rekognition does (JPEGs are decoded "
        "at reduced scale), so the work per image is bounded by this, not by what a header "
        "claims. Boxes on the wire are ratios and do not change.",
        default_text="`2073600` (1920x1080)")
    face_model = _optional_str(
        "REGARD_FACE_MODEL",
        "Face-model pack (version) that new collections get; existing collections keep theirs. "
        "`regard models list` shows the installed packs.",
        flag="`regard collections create --face-model`",
        default_text="unset (the best measured pack that ships)")

    # -- Image.S3Object -----------------------------------------------------------------------
    s3_root = _optional_path(
        "REGARD_S3_ROOT",
        "A folder whose sub-folders are buckets (`$ROOT/<Bucket>/<Name>`), for `Image.S3Object` "
        "references; names escaping it, FIFOs and devices are refused. Wins over "
        "`REGARD_S3_ENDPOINT_URL`.", default_text="unset (S3 references refused)")
    s3_endpoint_url = _optional_str(
        "REGARD_S3_ENDPOINT_URL",
        "Any S3-compatible server (MinIO, Ceph, SeaweedFS, AWS) to read `Image.S3Object` "
        "references from.", type_name="URL", default_text="unset (S3 references refused)")
    s3_region = _optional_str(
        "REGARD_S3_REGION", "Region passed to the S3-compatible server.",
        default_text="unset (botocore's default)")
    s3_access_key_id = _optional_str(
        "REGARD_S3_ACCESS_KEY_ID", "Access key for `REGARD_S3_ENDPOINT_URL`.",
        default_text="unset (botocore's usual chain)")
    s3_secret_access_key = _optional_str(
        "REGARD_S3_SECRET_ACCESS_KEY", "Secret key for `REGARD_S3_ENDPOINT_URL`.", secret=True,
        default_text="unset (botocore's usual chain)")

    # -- the Rekognition door -----------------------------------------------------------------
    region = _str(
        "REGARD_REGION", "us-east-1",
        "AWS region named in the ARNs Regard returns (CreateCollection's `CollectionArn`); set "
        "it to your clients' region so that ARNs read as Rekognition's would.",
        pattern=r"[a-z0-9-]+", must_be="a region name such as us-east-1",
        type_name="region name")
    account_id = _str(
        "REGARD_ACCOUNT_ID", "000000000000",
        "AWS account ID named in the ARNs Regard returns.",
        pattern=r"\d{12}", must_be="12 digits", type_name="12 digits")

    # -- background jobs ----------------------------------------------------------------------
    job_workers = _int(
        "REGARD_JOB_WORKERS", 2,
        "Background jobs (`regard.jobs`) this server runs at once, in a pool of their own beside "
        "the request pools; 0: it runs none (another replica on the same database does).",
        minimum=0, flag="`regard serve --job-workers`")
    job_lease_seconds = _int(
        "REGARD_JOB_LEASE_SECONDS", 30,
        "How long a job stays claimed by its server without a heartbeat (sent every third of "
        "it): a job whose server died is taken over by another server this long after its last "
        "heartbeat.", minimum=3)
    max_concurrent_jobs = _int(
        "REGARD_MAX_CONCURRENT_JOBS", 20,
        "Jobs queued or running at once on this database (all principals, as Rekognition "
        "Video's limit of 20 per account); one more is refused with `LimitExceededException`.")
    job_result_days = _int(
        "REGARD_JOB_RESULT_DAYS", 7,
        "Days a finished job's results (and its ClientRequestToken) are kept before the "
        "periodic sweep deletes them (Rekognition keeps them 7 days).")

    # -- stored video ---------------------------------------------------------------------------
    video_sample_ms = _int(
        "REGARD_VIDEO_SAMPLE_MS", 200,
        "Face detection and face search jobs analyse the first frame at or after every this "
        "many milliseconds of video (AWS does not document its rate). 200 ms (5 frames a "
        "second) sees a person crossing the frame at walking pace several times, keeps "
        "box-to-box motion small enough to track by overlap, and runs a 720p video at over 4x "
        "real time on 2 cores (`bench/video.py`); 1 analyses every frame.")
    sns_webhooks = Setting(
        "REGARD_SNS_WEBHOOKS", "`ARN=URL` pairs separated by spaces", None,
        "Where a stored-video job's `NotificationChannel.SNSTopicArn` is delivered: each SNS "
        "topic ARN a client may name, mapped to the webhook URL that receives Amazon SNS's "
        "HTTP notification (its `Message` is Rekognition's completion status: JobId, Status, "
        "API, JobTag, Timestamp, Video). A job naming an unmapped topic is refused with "
        "`InvalidParameterException`.",
        lambda raw: _webhooks(raw), default_text="none", secret=True)

    # -- live streams ---------------------------------------------------------------------------
    stream_fail_seconds = _int(
        "REGARD_STREAM_FAIL_SECONDS", 300,
        "A stream processor whose camera has given no frame for this many seconds in a row "
        "(reconnecting with backoff all along, its StatusMessage says so) is FAILED.")

    # -- web console ----------------------------------------------------------------------------
    console_idle_minutes = _int(
        "REGARD_CONSOLE_IDLE_MINUTES", 30,
        "A web console session ends after this many minutes without a request (and in any "
        "case 12 hours after sign-in), so a console left open on a shared computer does not "
        "stay signed in.")

    def problems(self) -> list[str]:
        """What is wrong with each malformed setting (empty: all parse); for a start-up check."""
        found = []
        for setting in SETTINGS:
            try:
                getattr(self, setting.field)
            except InvalidParameterError as exc:
                found.append(exc.message)
        return found

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{s.field}={'***' if s.secret else repr(self.environ[s.env])}"
            for s in SETTINGS if self.environ.get(s.env))
        return f"Settings({shown})"


SETTINGS: tuple[Setting[Any], ...] = tuple(
    value for value in vars(Settings).values() if isinstance(value, Setting))
BY_ENV: dict[str, Setting[Any]] = {s.env: s for s in SETTINGS}


def current() -> Settings:
    """The settings as the environment holds them now (read at each call, never cached)."""
    return Settings({k: v for k, v in os.environ.items() if k.startswith(PREFIX)})


def regard_home() -> Path:
    """Data directory (``REGARD_HOME``, default ``~/.regard``): catalog, caches, keys."""
    return current().home


# -- docs ---------------------------------------------------------------------------------------
BEGIN_MARKER = "<!-- settings:begin (generated by `python -m regard.config --update README.md`) -->"
END_MARKER = "<!-- settings:end -->"


def settings_markdown() -> str:
    """The settings as a Markdown table (the README's Settings section), from ``SETTINGS``."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def code(text: str) -> str:
        return text if "`" in text or text.startswith("unset") else f"`{text}`"

    lines = ["| Variable | Type | Default | Flag | What it does |",
             "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        lines.append(f"| `{s.env}` | {cell(s.type)} | {cell(code(s.default_doc))} | "
                     f"{cell(s.flag or '')} | {cell(s.doc)} |")
    return "\n".join(lines) + "\n"


def readme_block(text: str) -> str | None:
    """What stands between the settings markers in ``text`` (None: no markers)."""
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN_MARKER):end].strip("\n") + "\n"


def update_readme(path: Path) -> bool:
    """Rewrite the block between the settings markers in ``path``; True if it changed."""
    text = path.read_text()
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no {BEGIN_MARKER} ... {END_MARKER} block")
    new = text[:start + len(BEGIN_MARKER)] + "\n" + settings_markdown() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        sys.stdout.write(settings_markdown())
        return 0
    if len(argv) == 2 and argv[0] == "--update":
        changed = update_readme(Path(argv[1]))
        print(f"{argv[1]}: {'updated' if changed else 'already up to date'}")
        return 0
    if argv == ["--check"]:
        problems = current().problems()
        print("\n".join(problems) or "every REGARD_* setting parses")
        return 1 if problems else 0
    print("usage: python -m regard.config --markdown | --update README.md | --check",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
