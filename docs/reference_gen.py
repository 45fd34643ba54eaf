"""The documentation site's reference pages, generated from the code at build time.

``docs/hooks.py`` (an MkDocs hook) calls ``generate()`` and adds each page to the build as a
generated file; nothing is written into ``docs/``, so the pages cannot drift from the code:

- ``reference/operations.md``: every operation of ``regard.operations.registry``;
- ``reference/rest.md``: the ``/v1`` REST API, from the FastAPI app's OpenAPI document;
- ``reference/cli.md``: every ``regard`` command, from the Typer app;
- ``reference/settings.md``: every ``REGARD_*`` setting, from ``regard.config.SETTINGS``;
- ``reference/errors.md``: every ``RegardError`` of ``regard.errors``.

Text taken from docstrings, help and the OpenAPI document is escaped for Markdown (``*``, ``<``,
``&``; ``|`` in table cells) outside its code spans, which stay as written.

    python docs/reference_gen.py OUT_DIR    # writes the pages under OUT_DIR, to read them
"""

from __future__ import annotations

import functools
import html
import inspect
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

GENERATED_NOTE = ("<!-- Generated from the code by docs/reference_gen.py when the site is built; "
                  "do not edit. -->\n\n")

# -- Markdown escaping ------------------------------------------------------------------------------
_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def _escape_plain(text: str, *, cell: bool) -> str:
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
    text = text.replace(">", "&gt;").replace("*", "\\*").replace("_", "\\_")
    text = text.replace("[", "\\[").replace("]", "\\]")
    if cell:
        text = text.replace("|", "\\|")
    return text


def md(text: str | None, *, cell: bool = False) -> str:
    """``text`` as Markdown that shows it literally: code spans (single or double backticks,
    as docstrings write them) kept, everything else escaped; one line (paragraph breaks are
    joined) when ``cell``. In a table cell a ``|`` inside a code span needs no escape
    (Python-Markdown's tables skip code spans), outside one it gets a backslash."""
    if not text:
        return ""
    if cell:
        text = " ".join(text.split())
    out, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_escape_plain(text[last:match.start()], cell=cell))
        code = " ".join(match.group(2).split()) if cell else match.group(2)
        fence = "``" if "`" in code else "`"
        pad = " " if code.startswith("`") or code.endswith("`") else ""
        out.append(f"{fence}{pad}{code}{pad}{fence}")
        last = match.end()
    out.append(_escape_plain(text[last:], cell=cell))
    return "".join(out)


def code(text: str) -> str:
    """``text`` as one inline code span (safe in a table cell)."""
    text = " ".join(str(text).split())
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def paragraphs(doc: str | None) -> list[str]:
    """A docstring's (or help text's) paragraphs, each on one line; click's ``\\b`` markers and
    what follows ``\\f`` are dropped."""
    if not doc:
        return []
    doc = inspect.cleandoc(doc).split("\f")[0]
    found = []
    for block in re.split(r"\n\s*\n", doc):
        lines = [line.strip() for line in block.splitlines() if line.strip() != "\b"]
        if any(lines):
            found.append(" ".join(line for line in lines if line))
    return found


def first_paragraph(doc: str | None) -> str:
    found = paragraphs(doc)
    return found[0] if found else ""


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- the OpenAPI document -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of a server built in a temporary directory: an empty SQLite catalog,
    no jobs or stream processors started, the app never run, and no ``REGARD_*`` variable of
    the caller's environment in effect (so the page shows the defaults); everything is shut down
    and removed before returning."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("REGARD_")}
    with tempfile.TemporaryDirectory(prefix="regard-docs-") as tmp:
        for name in saved:
            del os.environ[name]
        os.environ["REGARD_HOME"] = tmp
        try:
            from regard.api.app import create_app
            from regard.api.server import Server, ServerSettings
            from regard.service import RegardService
            from regard.store import Store

            store = Store(f"sqlite:///{Path(tmp) / 'catalog.db'}", checkpoint_dir=False)
            try:
                server = Server(RegardService(store=store), ServerSettings(
                    workers=1, light_workers=1, job_workers=0, stream_processors=0,
                    retention_sweep_seconds=0, index_refresh_seconds=0, job_sweep_seconds=0))
                try:
                    return create_app(server).openapi()
                finally:
                    server.shutdown()
            finally:
                store.close()
        finally:
            os.environ.pop("REGARD_HOME", None)
            os.environ.update(saved)


def _routes_by_operation() -> dict[str, tuple[str, str]]:
    """operationId -> (METHOD, path) of the REST routes."""
    found = {}
    for path, methods in openapi_document()["paths"].items():
        for method, op in methods.items():
            if "operationId" in op:
                found[op["operationId"]] = (method.upper(), path)
    return found


# -- operations.md ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _botocore_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("rekognition")


def _aws_summary(name: str) -> str:
    """The first sentence of botocore's documentation of ``name``, as Markdown."""
    model = _botocore_model()
    if name not in model.operation_names:  # not in this botocore's model
        return ""
    doc = model.operation_model(name).documentation or ""
    doc = re.sub(r"<(important|note)>.*?</\1>", "", doc, flags=re.DOTALL)  # asides
    first = re.search(r"<p>(.*?)</p>", doc, re.DOTALL)
    text = first.group(1) if first else doc
    text = re.sub(r"<code>(.*?)</code>", lambda m: "`" + html.unescape(m.group(1)) + "`", text)
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    text = " ".join(text.split())
    sentence = re.match(r"(.+?\.)(\s|$)", text)
    return md(sentence.group(1) if sentence else text, cell=True)


def _policy_binds(op: Any) -> str:
    binds = []
    if op.threshold_member:
        binds.append(f"{code(op.threshold_member)} (the policy's `ThresholdFloor`)")
    if op.max_member:
        binds.append(f"{code(op.max_member)} (the policy's `MaxMatches`)")
    if op.consent_member:
        binds.append("a consent reference (the policy's `ConsentRequired`)")
    return "; ".join(binds)


def operations_page() -> str:
    import regard.operations  # noqa: F401  (fills the registry)
    from regard.operations.registry import SCOPES, all_operations

    ops = all_operations()
    routes = _routes_by_operation()
    out = [GENERATED_NOTE, "# Operations\n\n",
           "Every operation Regard runs, whichever door it comes through (the Python API, the "
           "`regard` command, the Rekognition JSON API on `POST /`, the REST API under `/v1`), "
           "as declared in `regard.operations.registry`. *Rekognition's* operations are the "
           "ones botocore's Rekognition model defines: AWS SDKs and the AWS CLI call them, and "
           "their requests are validated against that model. *Regard's own* operations have "
           "no Rekognition counterpart.\n\n",
           "- **Scope**: what an access key needs to call it (`regard keys create --scope`; "
           f"{', '.join(code(s) for s in SCOPES)}; `admin` allows everything).\n",
           "- **Identifies**: a search for a person; recorded so that `regard audit "
           "who-searched` and the transparency report find it.\n",
           "- **Policy binds**: the request members a collection's policy constrains: a "
           "threshold below its `ThresholdFloor` is refused (an absent one becomes the floor "
           "when that is above the default 80), a maximum is capped at its `MaxMatches`, and "
           "with `ConsentRequired` the request needs a consent reference (`X-Regard-Consent`, "
           "`--consent`).\n",
           "- **REST**: the `/v1` route that runs it (see the [REST API](rest.md)).\n\n",
           "In Python, each operation is a method of `RegardService` named as boto3 names it "
           "(`SearchFacesByImage` is `search_faces_by_image`).\n\n"]
    groups = [("Rekognition's operations", [op for op in ops if op.rekognition],
               "Regard implements these as Rekognition defines them; the notes give what Regard "
               "says of its own implementation, from the handler's docstring. The summary is "
               "AWS's, from botocore's model."),
              ("Regard's own operations", [op for op in ops if not op.rekognition],
               "Operations Amazon Rekognition does not have: accountability (audit ledger, "
               "erasure, retention, access keys), overviews for the web console, redaction and "
               "camera sources and sinks.")]
    for title, group, intro in groups:
        out.append(f"## {title}\n\n{intro}\n\n")
        rows = []
        for op in sorted(group, key=lambda o: o.name):
            route = routes.get(op.name)
            rows.append([f"[{op.name}](#{op.name.lower()})", code(op.scope),
                         "yes" if op.identifies else "", _policy_binds(op),
                         f"[{code(route[0] + ' ' + route[1])}](rest.md#{op.name.lower()})"
                         if route else ""])
        out.append(table(["Operation", "Scope", "Identifies", "Policy binds", "REST"], rows))
        out.append("\n")
        for op in sorted(group, key=lambda o: o.name):
            out.append(f"### {op.name}\n\n")
            facts = [f"Scope {code(op.scope)}",
                     f"Python `RegardService.{op.python_name}`"]
            if op.identifies:
                facts.append("identifies (recorded for who-searched)")
            if op.optional_audit:
                facts.append("not recorded when `REGARD_AUDIT_DETECT=0`")
            out.append(". ".join(facts) + ".\n\n")
            binds = _policy_binds(op)
            if binds:
                out.append(f"Policy binds: {binds}.\n\n")
            route = routes.get(op.name)
            if route:
                out.append(f"REST: [{code(route[0] + ' ' + route[1])}]"
                           f"(rest.md#{op.name.lower()}).\n\n")
            doc = first_paragraph(op.handler.__doc__)
            if op.rekognition:
                summary = _aws_summary(op.name)
                if summary:
                    out.append(f"AWS's summary: {summary}\n\n")
                if doc:
                    out.append(f"!!! note \"Differences from Rekognition\"\n    {md(doc)}\n\n")
            elif doc:
                out.append(md(doc) + "\n\n")
    return "".join(out)


# -- rest.md --------------------------------------------------------------------------------------
def _schema_type(schema: dict[str, Any], components: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_schema_anchor(name)})" if name in components else code(name)
    if "anyOf" in schema or "oneOf" in schema:
        kinds = [s for s in schema.get("anyOf", schema.get("oneOf", []))
                 if s.get("type") != "null"]
        return " or ".join(_schema_type(s, components) for s in kinds) or "null"
    kind = schema.get("type", "")
    if kind == "array":
        return "array of " + _schema_type(schema.get("items", {}), components)
    if kind == "string" and schema.get("contentMediaType") == "application/octet-stream":
        return "file"
    if kind == "string" and schema.get("format") in ("binary",):
        return "file"
    if "enum" in schema:
        return " or ".join(code(v) for v in schema["enum"])
    if kind and schema.get("format"):
        return f"{kind} ({schema['format']})"
    return kind if isinstance(kind, str) else " or ".join(kind)


def _constraints(schema: dict[str, Any]) -> list[str]:
    found = []
    for s in [schema, *schema.get("anyOf", [])]:
        for key, text in (("minimum", "at least"), ("exclusiveMinimum", "more than"),
                          ("maximum", "at most"), ("exclusiveMaximum", "less than")):
            if key in s:
                value = s[key]
                value = int(value) if isinstance(value, float) and value.is_integer() else value
                found.append(f"{text} {value}")
        if "minLength" in s or "maxLength" in s:
            found.append(f"length {s.get('minLength', 0)}-{s.get('maxLength', '')}".rstrip("-"))
        if "pattern" in s:
            found.append(f"pattern {code(s['pattern'])}")
    if "default" in schema and schema["default"] is not None:
        found.append(f"default {code(repr(schema['default']) if isinstance(schema['default'], str) else schema['default'])}")
    return found


def _describe(schema: dict[str, Any], description: str | None = None) -> str:
    text = md(description or schema.get("description"), cell=True)
    extra = _constraints(schema)
    if extra:
        text = (text + " " if text else "") + "(" + "; ".join(extra) + ")"
    return text


def _schema_anchor(name: str) -> str:
    return "schema-" + name.lower()


def _fields_table(schema: dict[str, Any], components: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    rows = [[code(name), _schema_type(prop, components), "yes" if name in required else "",
             _describe(prop)] for name, prop in schema.get("properties", {}).items()]
    if not rows:
        return "No fields.\n"
    return table(["Field", "Type", "Required", "Description"], rows)


def _refs(schema: Any) -> Iterable[str]:
    if isinstance(schema, dict):
        if "$ref" in schema:
            yield schema["$ref"].rsplit("/", 1)[-1]
        for value in schema.values():
            yield from _refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _refs(value)


def _param_key(param: dict[str, Any]) -> tuple[str, str, str]:
    return param["name"], param["in"], param.get("description", "")


def rest_page() -> str:
    from regard.operations.registry import get as get_operation

    doc = openapi_document()
    components = doc.get("components", {}).get("schemas", {})
    schemes = doc.get("components", {}).get("securitySchemes", {})
    v1 = [(path, method, op) for path, methods in doc["paths"].items()
          for method, op in methods.items() if path.startswith("/v1")]
    others = [(path, method, op) for path, methods in doc["paths"].items()
              for method, op in methods.items() if not path.startswith("/v1")]
    # What every /v1 route shares is described once: its headers and its error responses.
    common_params = set.intersection(*(
        {_param_key(p) for p in op.get("parameters", [])} for _, _, op in v1))
    common_errors = set.intersection(*(
        {(status, r.get("description", "")) for status, r in op.get("responses", {}).items()
         if not status.startswith("2")} for _, _, op in v1))

    out = [GENERATED_NOTE, "# REST API\n\n", md(doc["info"].get("description")), "\n\n",
           f"Generated from the OpenAPI document of Regard {doc['info'].get('version', '')} "
           "(a running server serves it at `/openapi.json`, browsable at `/docs`).\n\n",
           "## Authentication\n\n",
           "Every `/v1` route takes an access key (`regard keys create`) in one of these "
           "(none when the server runs with `--insecure-local`):\n\n"]
    rows = []
    for name, scheme in schemes.items():
        where = (f"header {code(scheme['name'])}" if scheme.get("type") == "apiKey"
                 else f"HTTP {code(scheme.get('scheme', ''))}")
        rows.append([code(name), code(scheme.get("type", "")), where,
                     md(scheme.get("description"), cell=True)])
    out.append(table(["Scheme", "Type", "Where", "Value"], rows))
    out.append("\nThe key's scopes decide which routes it may call (see "
               "[Operations](operations.md)).\n\n## Headers every route takes\n\n")
    first_params = v1[0][2].get("parameters", [])
    rows = [[code(p["name"]), p["in"], "yes" if p.get("required") else "",
             md(p.get("description"), cell=True)]
            for p in first_params if _param_key(p) in common_params]
    out.append(table(["Name", "In", "Required", "Description"], rows))
    out.append("\n## Errors\n\nEvery error answers with this JSON body "
               "(see [Errors](errors.md) for each error name):\n\n")
    if "ErrorBody" in components:
        out.append(_fields_table(components["ErrorBody"], components))
    out.append("\nStatuses every `/v1` route may answer with:\n\n")
    out.append(table(["Status", "Meaning"],
                     [[code(s), md(d, cell=True)] for s, d in sorted(common_errors)]))
    out.append("\n")

    def operation_section(path: str, method: str, op: dict[str, Any], *, v1_route: bool) -> str:
        op_id = op.get("operationId", "")
        anchor = f" {{ #{op_id.lower()} }}" if v1_route and op_id else ""
        parts = [f"### {code(method.upper() + ' ' + path)}{anchor}\n\n"]
        if op.get("summary"):
            parts.append(f"**{md(op['summary'])}.**\n\n")
        if op.get("description"):
            parts.append(md(op["description"]) + "\n\n")
        declared = get_operation(op_id) if v1_route else None
        if declared is not None:
            parts.append(f"Operation [{op_id}](operations.md#{op_id.lower()}), scope "
                         f"{code(declared.scope)}.\n\n")
        elif v1_route and op_id:
            parts.append(f"Operation id {code(op_id)}.\n\n")
        params = [p for p in op.get("parameters", [])
                  if not (v1_route and _param_key(p) in common_params)]
        if params:
            parts.append("Parameters:\n\n")
            parts.append(table(["Name", "In", "Type", "Required", "Description"], [
                [code(p["name"]), p["in"], _schema_type(p.get("schema", {}), components),
                 "yes" if p.get("required") else "",
                 _describe(p.get("schema", {}), p.get("description"))] for p in params]))
            parts.append("\n")
        body = op.get("requestBody")
        if body:
            for media, content in body.get("content", {}).items():
                schema = content.get("schema", {})
                if "$ref" in schema:
                    schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
                parts.append(f"Request body ({code(media)}"
                             f"{', required' if body.get('required') else ''}):\n\n")
                parts.append(_fields_table(schema, components))
                parts.append("\n")
        rows = []
        for status, response in op.get("responses", {}).items():
            if v1_route and (status, response.get("description", "")) in common_errors:
                continue
            members = []
            for media, content in response.get("content", {}).items():
                schema = content.get("schema", {})
                if "$ref" in schema:
                    schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
                names = list(schema.get("properties", {}))
                members.append(code(media) + (": " + ", ".join(code(n) for n in names)
                                              if names else ""))
            rows.append([code(status), md(response.get("description"), cell=True),
                         "; ".join(members)])
        parts.append("Responses" + (" (besides the [errors](#errors) above)" if v1_route
                                    else "") + ":\n\n")
        parts.append(table(["Status", "Description", "Body"], rows))
        return "".join(parts) + "\n"

    tags: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, method, op in v1:
        tags.setdefault((op.get("tags") or ["other"])[0], []).append((path, method, op))
    for tag, entries in tags.items():
        out.append(f"## {tag.capitalize()}\n\n")
        for path, method, op in entries:
            out.append(operation_section(path, method, op, v1_route=True))
    if others:
        out.append("## Outside /v1\n\nUnauthenticated, for load balancers and scrapers.\n\n")
        for path, method, op in others:
            out.append(operation_section(path, method, op, v1_route=False))

    # The schemas the request bodies refer to (the top-level bodies are shown with their route).
    wanted: list[str] = []
    pending = [ref for _, _, op in v1 for ref in _refs(op.get("requestBody", {}))]
    while pending:
        name = pending.pop(0)
        if name not in wanted and name in components:
            wanted.append(name)
            pending.extend(_refs(components[name]))
    nested = [name for name in wanted
              if any(name in _refs(components[other]) for other in wanted)]
    if nested:
        out.append("## Schemas\n\nObjects nested in request bodies.\n\n")
        for name in sorted(nested):
            schema = components[name]
            out.append(f"### {name} {{ #{_schema_anchor(name)} }}\n\n")
            if schema.get("description"):
                out.append(md(first_paragraph(schema["description"])) + "\n\n")
            out.append(_fields_table(schema, components) + "\n")
    return "".join(out)


# -- cli.md -----------------------------------------------------------------------------------------
def _cli_root() -> Any:
    import typer

    from regard.cli import app

    return typer.main.get_command(app)


def cli_commands() -> list[tuple[str, Any, Any]]:
    """Every command and sub-command, depth first: (``regard x y``, command, click context)."""
    root = _cli_root()
    found = []

    def walk(command: Any, name: str, parent: Any, path: str) -> None:
        ctx = command.context_class(command, info_name=name, parent=parent)
        found.append((path, command, ctx))
        for sub_name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
            sub = command.get_command(ctx, sub_name)
            if sub is not None and not getattr(sub, "hidden", False):
                walk(sub, sub_name, ctx, f"{path} {sub_name}")

    walk(root, "regard", None, "regard")
    return found


def _cli_anchor(path: str) -> str:
    return path.replace(" ", "-")


def cli_page() -> str:
    commands = cli_commands()
    out = [GENERATED_NOTE, "# Command line\n\n",
           "Every `regard` command and sub-command, with its options, as `regard COMMAND "
           "--help` prints them. With `--json`, a command prints exactly the body of the "
           "matching Rekognition response.\n\n"]
    rows = [[f"[{code(path)}](#{_cli_anchor(path)})", md(first_paragraph(cmd.help), cell=True)]
            for path, cmd, _ in commands[1:]]
    out.append(table(["Command", "What it does"], rows) + "\n")
    for path, cmd, ctx in commands:
        depth = min(path.count(" ") + 1, 4)
        out.append(f"{'#' * (depth + 1)} {path} {{ #{_cli_anchor(path)} }}\n\n")
        usage = cmd.get_usage(ctx).strip()
        usage = re.sub(r"^Usage:\s*", "", usage)
        out.append(f"```text\n{usage}\n```\n\n")
        for paragraph in paragraphs(cmd.help):
            out.append(md(paragraph) + "\n\n")
        for kind, title in (("argument", "Argument"), ("option", "Option")):
            rows = []
            for param in cmd.params:
                if getattr(param, "hidden", False) or param.param_type_name != kind:
                    continue
                record = param.get_help_record(ctx)
                if record is not None:
                    rows.append([code(record[0]), md(record[1], cell=True)])
            if rows:
                out.append(table([title, "Help"], rows) + "\n")
        subs = [p for p, _, _ in commands if p.startswith(path + " ") and
                p.count(" ") == path.count(" ") + 1]
        if subs:
            out.append("Sub-commands: " + ", ".join(
                f"[{code(p)}](#{_cli_anchor(p)})" for p in subs) + ".\n\n")
    return "".join(out)


# -- settings.md ------------------------------------------------------------------------------------
def settings_page() -> str:
    from regard import config

    return (GENERATED_NOTE + "# Settings\n\n"
            "Regard needs no configuration file: each setting is an environment variable, read "
            "when it is used (an empty variable counts as unset). The flag named beside a "
            "setting wins over it. A malformed value is refused with an error that names the "
            "variable, when that setting is read; `python -m regard.config --check` checks "
            "them all at once.\n\n"
            "The table is generated from `regard.config.SETTINGS`, where every setting is "
            "declared, typed and documented once (`python -m regard.config --markdown` prints "
            "it too).\n\n" + config.settings_markdown())


# -- errors.md --------------------------------------------------------------------------------------
def error_classes() -> list[type]:
    from regard import errors

    return [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.RegardError) and cls.__module__ == errors.__name__]


def errors_page() -> str:
    from regard.api.rest import status_of
    from regard.errors import RegardError

    found = error_classes()
    # A grouping without a code of its own (AuthenticationError) shows as its subclasses' base.
    classes = sorted((cls for cls in found if "code" in vars(cls) or not any(
        other is not cls and issubclass(other, cls) for other in found)),
        key=lambda cls: (cls.code, cls.__name__))
    out = [GENERATED_NOTE, "# Errors\n\n",
           "Every error Regard raises on purpose is a `regard.errors.RegardError`. Each "
           "carries the name Amazon Rekognition uses for it (its code), so each door "
           "translates it rather than inventing one: the Rekognition JSON API (`POST /`) "
           "answers `{\"__type\": code, \"message\": ...}` with AWS's status, the REST API "
           "(`/v1`) the same body with a REST status, the `regard` command prints "
           "`code: message` and exits with status 1, and Python raises the exception.\n\n"]
    rows = []
    for cls in classes:
        rest_status = str(status_of(cls.__new__(cls)))  # reads the class's code and status
        doc = cls.__doc__ if "__doc__" in vars(cls) and cls.__doc__ else ""
        base = next((b for b in cls.__mro__[1:] if issubclass(b, RegardError)), None)
        name = code(cls.__name__) + (f" ({code(base.__name__)})" if base is not None
                                     and base is not RegardError else "")
        rows.append([code(cls.code), name, code(cls.http_status), code(rest_status),
                     md(" ".join(paragraphs(doc)), cell=True)])
    out.append(table(["Code", "Python class (base)", "Rekognition API status", "REST status",
                      "When"], rows))
    out.append("\nThe Rekognition API's statuses are AWS's (most client errors are 400); the REST "
               "API's are more specific (`regard.api.rest.STATUS_BY_CODE`): 404 for "
               "`ResourceNotFoundException`, 409 for conflicts, 401 for missing or unknown "
               "credentials, 429 for throttling.\n")
    return "".join(out)


# -- all pages ----------------------------------------------------------------------------------------
PAGES: dict[str, Callable[[], str]] = {
    "reference/operations.md": operations_page,
    "reference/rest.md": rest_page,
    "reference/cli.md": cli_page,
    "reference/settings.md": settings_page,
    "reference/errors.md": errors_page,
}


def generate() -> dict[str, str]:
    """Every generated page: its path under ``docs/`` -> its Markdown."""
    return {path: build() for path, build in PAGES.items()}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python docs/reference_gen.py OUT_DIR")
    for rel, text in generate().items():
        target = Path(sys.argv[1]) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(target)
