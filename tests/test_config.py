"""``regard.config``: every REGARD_* setting declared once, parsed lazily, documented from there."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from regard import config
from regard.errors import InvalidParameterError

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "regard"
NAME = re.compile(r"\bREGARD_[A-Z0-9_]*[A-Z0-9]")
DECLARED = {s.env for s in config.SETTINGS}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without any REGARD_* variable."""
    for name in list(os.environ):
        if name.startswith(config.PREFIX):
            monkeypatch.delenv(name)


def _as_env(value: object) -> str:
    """How an operator would write ``value`` in the environment."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def test_each_setting_reads_its_default_when_unset() -> None:
    settings = config.current()
    for setting in config.SETTINGS:
        expected = (setting.compute_default() if setting.compute_default is not None
                    else setting.default)
        assert getattr(settings, setting.field) == expected, setting.env
    assert settings.home == Path.home() / ".regard"
    assert settings.audit_detect is True
    assert (settings.region, settings.account_id) == ("us-east-1", "000000000000")
    assert settings.sqlite_synchronous == "FULL"
    assert settings.problems() == []


@pytest.mark.parametrize("setting", [s for s in config.SETTINGS if s.default is not None],
                         ids=lambda s: s.env)
def test_each_default_written_out_parses_back_to_itself(setting: config.Setting) -> None:
    """The documented default is a value the parser accepts (docs and parser agree)."""
    assert setting.read({setting.env: _as_env(setting.default)}) == setting.read({})


def test_empty_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGARD_REGION", "")
    monkeypatch.setenv("REGARD_MAX_IMAGE_BYTES", " ")
    settings = config.current()
    assert settings.region == "us-east-1"
    assert settings.max_image_bytes == 5 * 1024 * 1024


def test_values_are_parsed_and_typed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REGARD_HOME", str(tmp_path))
    monkeypatch.setenv("REGARD_SQLITE_SYNCHRONOUS", "normal")
    monkeypatch.setenv("REGARD_AUDIT_DETECT", "0")
    monkeypatch.setenv("REGARD_CHANGE_LOG_KEEP", "20")
    monkeypatch.setenv("REGARD_LEDGER_KEY", "ab" * 16)
    monkeypatch.setenv("REGARD_S3_ROOT", "~/buckets")
    monkeypatch.setenv("REGARD_DATABASE_URL", "sqlite:///x.db")
    settings = config.current()
    assert settings.home == tmp_path and config.regard_home() == tmp_path
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.audit_detect is False
    assert settings.change_log_keep == 20
    assert settings.ledger_key == bytes.fromhex("ab" * 16)
    assert settings.s3_root == Path.home() / "buckets"
    assert settings.database_url == "sqlite:///x.db"


def test_read_at_each_call_and_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests and the CLI change the environment at run time: nothing is cached across calls."""
    before = config.current()
    monkeypatch.setenv("REGARD_HNSW_THRESHOLD", "7")
    assert config.current().hnsw_threshold == 7
    assert before.hnsw_threshold == 50_000  # a snapshot keeps what it was built from
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.hnsw_threshold = 3  # type: ignore[misc]


BAD = [
    ("REGARD_SQLITE_SYNCHRONOUS", "OFF", "REGARD_SQLITE_SYNCHRONOUS must be FULL, NORMAL or EXTRA"),
    ("REGARD_CHANGE_LOG_KEEP", "0", "REGARD_CHANGE_LOG_KEEP must be at least 1"),
    ("REGARD_CHANGE_LOG_KEEP", "many", "REGARD_CHANGE_LOG_KEEP must be an integer"),
    ("REGARD_MAX_IMAGE_BYTES", "5MB", "REGARD_MAX_IMAGE_BYTES must be an integer"),
    ("REGARD_MAX_IMAGE_BYTES", "0", "REGARD_MAX_IMAGE_BYTES must be at least 1"),
    ("REGARD_MAX_IMAGE_PIXELS", "-1", "REGARD_MAX_IMAGE_PIXELS must be at least 1"),
    ("REGARD_MAX_ANALYSIS_PIXELS", "1.5", "REGARD_MAX_ANALYSIS_PIXELS must be an integer"),
    ("REGARD_HNSW_THRESHOLD", "lots", "REGARD_HNSW_THRESHOLD must be an integer"),
    ("REGARD_HNSW_EF_SEARCH", "0", "REGARD_HNSW_EF_SEARCH must be at least 1"),
    ("REGARD_INDEX_BUILD_THREADS", "0", "REGARD_INDEX_BUILD_THREADS must be at least 1"),
    ("REGARD_DB_BUSY_TIMEOUT_MS", "-5", "REGARD_DB_BUSY_TIMEOUT_MS must be at least 0"),
    ("REGARD_MIN_FREE_BYTES", "16M", "REGARD_MIN_FREE_BYTES must be an integer"),
    ("REGARD_AUDIT_DETECT", "maybe", "REGARD_AUDIT_DETECT must be 1 or 0"),
    ("REGARD_CLEARING_ALLOCATOR", "yes please", "REGARD_CLEARING_ALLOCATOR must be 1, 0"),
    ("REGARD_LEDGER_KEY", "not hex", "REGARD_LEDGER_KEY must be hex"),
    ("REGARD_LEDGER_KEY", "abcd", "REGARD_LEDGER_KEY must hold at least 16 bytes"),
    ("REGARD_ACCOUNT_ID", "123", "REGARD_ACCOUNT_ID must be 12 digits"),
    ("REGARD_REGION", "US East", "REGARD_REGION must be a region name"),
    ("REGARD_JOB_WORKERS", "-1", "REGARD_JOB_WORKERS must be at least 0"),
    ("REGARD_JOB_LEASE_SECONDS", "1", "REGARD_JOB_LEASE_SECONDS must be at least 3"),
    ("REGARD_MAX_CONCURRENT_JOBS", "twenty", "REGARD_MAX_CONCURRENT_JOBS must be an integer"),
    ("REGARD_JOB_RESULT_DAYS", "0", "REGARD_JOB_RESULT_DAYS must be at least 1"),
    ("REGARD_VIDEO_SAMPLE_MS", "0", "REGARD_VIDEO_SAMPLE_MS must be at least 1"),
    ("REGARD_SNS_WEBHOOKS", "topic=http://x", "REGARD_SNS_WEBHOOKS must be SNS topic ARN"),
    ("REGARD_CONSOLE_IDLE_MINUTES", "0", "REGARD_CONSOLE_IDLE_MINUTES must be at least 1"),
    ("REGARD_STREAM_FAIL_SECONDS", "soon", "REGARD_STREAM_FAIL_SECONDS must be an integer"),
]


@pytest.mark.parametrize(("env", "raw", "message"), BAD, ids=[f"{e}={r}" for e, r, _ in BAD])
def test_a_malformed_value_is_refused_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, env: str, raw: str, message: str) -> None:
    monkeypatch.setenv(env, raw)
    with pytest.raises(InvalidParameterError) as exc:
        getattr(config.current(), config.BY_ENV[env].field)
    assert message in exc.value.message
    assert exc.value.code == "InvalidParameterException"
    assert config.current().problems() == [exc.value.message]


def test_every_setting_has_a_bad_value_case() -> None:
    """A setting that accepts anything (free text, paths, URLs) needs no case; every other one
    is tested above, so a new typed setting without a refusal test fails here."""
    free = {s.env for s in config.SETTINGS if s.type in ("string", "path", "URL")}
    assert DECLARED - free == {env for env, _, _ in BAD}


def test_secrets_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGARD_LEDGER_KEY", "zz" + "ab" * 20)
    monkeypatch.setenv("REGARD_S3_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("REGARD_DATABASE_URL", "postgresql+psycopg://u:hunter2@db/x")
    settings = config.current()
    with pytest.raises(InvalidParameterError) as exc:
        settings.ledger_key
    assert "zz" not in exc.value.message
    shown = repr(settings)
    assert "s3cr3t" not in shown and "hunter2" not in shown and "abab" not in shown
    assert "s3_secret_access_key=***" in shown


def test_a_bad_value_breaks_only_its_own_setting(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("REGARD_HNSW_THRESHOLD", "fifty thousand")
    monkeypatch.setenv("REGARD_HOME", str(tmp_path))
    settings = config.current()
    assert settings.home == tmp_path
    assert config.regard_home() == tmp_path
    assert settings.max_image_bytes == 5 * 1024 * 1024
    with pytest.raises(InvalidParameterError, match="REGARD_HNSW_THRESHOLD"):
        settings.hnsw_threshold
    assert settings.home == tmp_path  # still readable after the failure


def test_regard_home_lives_in_config_only() -> None:
    from regard.vision import models

    assert not hasattr(models, "regard_home")  # one place for it


def test_settings_are_declared_once_under_their_field_name() -> None:
    fields = [s.field for s in config.SETTINGS]
    assert len(set(fields)) == len(fields) == len(DECLARED)
    for setting in config.SETTINGS:
        assert setting.field == setting.env.removeprefix("REGARD_").lower()
        assert setting.doc.strip() and "\n" not in setting.doc
    with pytest.raises((TypeError, RuntimeError)):
        type("Bad", (), {"wrong_name": config._int("REGARD_SOMETHING", 1, "doc")})


def _names_in(paths: list[Path]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for name in NAME.findall(path.read_text()):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_regard_variable_the_package_reads_is_declared() -> None:
    """The drift guard: a new ``REGARD_*`` name anywhere in the package must be declared in
    ``config.SETTINGS`` (and so documented in the settings reference) before it can be used."""
    sources = [p for p in SRC.rglob("*.py") if p != SRC / "config.py"]
    undeclared = {name: where for name, where in _names_in(sources).items()
                  if name not in DECLARED}
    assert not undeclared, (
        f"REGARD_* names used but not declared in src/regard/config.py: {undeclared}; declare "
        "each as a Setting in config.Settings and read it with config.current()")


def test_no_module_but_config_reads_regard_variables_from_the_environment() -> None:
    """Writes stay allowed: ``--home`` sets REGARD_HOME for the process and its children."""
    reads = re.compile(r"(?:environ\.get|getenv)\(\s*[\"']REGARD_"
                       r"|environ\[\s*[\"']REGARD_\w+[\"']\s*\](?!\s*=[^=])")
    offenders = [str(p.relative_to(ROOT)) for p in SRC.rglob("*.py")
                 if p != SRC / "config.py" and reads.search(p.read_text())]
    assert not offenders, f"read REGARD_* through regard.config.current() instead: {offenders}"


def test_the_readme_and_the_docs_name_only_declared_variables() -> None:
    """(The settings reference itself is generated from ``config.SETTINGS`` when the
    documentation site is built: tests/test_docs.py.)"""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    undeclared = set(_names_in(pages)) - DECLARED
    assert not undeclared, f"README or docs mention undeclared settings: {undeclared}"


def test_markdown_lists_every_setting_with_default_and_flag() -> None:
    table = config.settings_markdown()
    for setting in config.SETTINGS:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{setting.env}`"))
        assert setting.default_doc.replace("`", "") in row.replace("`", "")
        if setting.flag:
            assert setting.flag in row
    assert "`regard serve --default-purpose`" in table


def test_command_line_prints_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert config.main(["--markdown"]) == 0
    assert capsys.readouterr().out == config.settings_markdown()
    assert config.main(["--check"]) == 0
    assert config.main(["--nonsense"]) == 2


def test_default_match_threshold_is_rekognitions() -> None:
    from regard.analysis import DEFAULT_SIMILARITY_THRESHOLD

    assert config.DEFAULT_MATCH_THRESHOLD == DEFAULT_SIMILARITY_THRESHOLD == 80.0
