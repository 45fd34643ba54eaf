"""`regard serve` and `regard keys`: the HTTP server and its access keys."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from regard import config
from regard.cli.common import (
    DetectorOpt,
    MinFaceOpt,
    _engine_kwargs,
    _fail,
    app,
    err,
    local_context,
    out,
)
from regard.errors import RegardError
from regard.context import CallContext
from regard.governance.keys import CREDENTIALS_FILE, write_credentials_file
from regard.service import RegardService

keys_app = typer.Typer(help="Access keys of the HTTP APIs (SigV4 for AWS SDKs; REST header).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")

HomeOpt = typer.Option(None, "--home", help="Data directory (default: $REGARD_HOME or ~/.regard)")


def _check_ledger_key(service: Any) -> None:
    """Refuse to start when the ledger's signed head does not verify with this server's key (a
    replica started without the others' REGARD_LEDGER_KEY, or a tampered ledger): otherwise every
    audited request would fail with a 500 after the server had seemingly started."""
    from regard.governance.ledger import LedgerIntegrityError

    if not service.gate.ledger.head()["signature_ok"]:
        raise LedgerIntegrityError(
            "The audit ledger's signed head does not verify with this server's ledger key. A "
            "replica sharing a database needs the same REGARD_LEDGER_KEY as the others; "
            "otherwise run `regard audit verify` to see whether the ledger was tampered with")


def _use_home(home: Optional[Path]) -> Path:
    """Point REGARD_HOME at ``home`` for this process (the store, caches and key file use it;
    so do the processes it starts)."""
    if home is not None:
        os.environ["REGARD_HOME"] = str(home.expanduser().resolve())
    from regard.private_files import private_dir

    return private_dir(config.regard_home())


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: all)"),
    port: int = typer.Option(8000, "--port"),
    home: Optional[Path] = HomeOpt,
    workers: int = typer.Option(0, "--workers",
                                help="Threads for image operations (default: CPU cores)"),
    queue: int = typer.Option(16, "--queue",
                              help="Image operations that may wait; beyond: ThrottlingException"),
    insecure_local: bool = typer.Option(
        False, "--insecure-local",
        help="No authentication at all; only allowed when binding a loopback address"),
    default_purpose: Optional[str] = typer.Option(
        None, "--default-purpose",
        help="Purpose given to collections created through the Rekognition API without a "
             "regard:purpose tag (default: such requests are refused)"),
    sweep_every: float = typer.Option(3600, "--retention-sweep-seconds",
                                      help="How often expired faces are deleted (0: never)"),
    refresh_every: float = typer.Option(
        60, "--index-refresh-seconds",
        help="How often loaded indexes catch up with deletions made by other processes or "
             "replicas, searched or not (0: only when searched)"),
    job_workers: Optional[int] = typer.Option(
        None, "--job-workers", min=0,
        help="Background jobs run at once, in their own pool (default REGARD_JOB_WORKERS, 2; "
             "0: none on this server, another replica runs them)"),
    stream_processors: int = typer.Option(
        4, "--stream-processors", min=0,
        help="Live stream processors run at once (0: none on this server; it still answers "
             "their operations)"),
    detector: Optional[str] = DetectorOpt,
    min_face_size: int = MinFaceOpt,
    log_level: str = typer.Option("info", "--log-level"),
    tls_cert: Optional[Path] = typer.Option(
        None, "--tls-cert", help="PEM certificate (chain): serve HTTPS. Without TLS, REST "
                                 "credentials and images cross the network in clear"),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert"),
    max_connections: int = typer.Option(1024, "--max-connections",
                                        help="Open connections at most; more get a 503"),
    max_per_client: int = typer.Option(
        128, "--max-connections-per-client",
        help="Open connections from one address at most (0: no cap; use 0 behind a reverse "
             "proxy, where every client has the proxy's address)"),
    header_seconds: float = typer.Option(
        10, "--header-timeout", help="Seconds a connection has to send its request headers"),
    forwarded_allow_ips: Optional[str] = typer.Option(
        None, "--forwarded-allow-ips",
        help="Addresses of reverse proxies whose X-Forwarded-For names the client (comma-"
             "separated; default: none, the ledger records the connection's own address)"),
    buffered_mib: int = typer.Option(
        128, "--max-buffered-mib",
        help="Request bodies held in memory by all requests together (MiB); beyond: "
             "ThrottlingException"),
) -> None:
    """Serve the Rekognition API (POST /, SigV4) and the native REST API (/v1, /docs).

    On the first start an admin access key is created and written to HOME/admin-credentials
    (mode 0600, AWS credentials-file format, profile "regard"); only its id is printed."""
    import uvicorn

    from regard.analysis import Engine
    from regard.api.app import uvicorn_config
    from regard.api.connections import ConnectionLimits
    from regard.api.server import Server, ServerSettings, is_loopback

    if insecure_local and not is_loopback(host):
        err.print(f"[red]--insecure-local only binds a loopback address, not {host}[/red]")
        raise typer.Exit(code=2)
    if (tls_cert is None) != (tls_key is None):
        err.print("[red]--tls-cert and --tls-key go together[/red]")
        raise typer.Exit(code=2)
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            err.print(f"[red]{path} is not a readable file[/red]")
            raise typer.Exit(code=2)
    _restart_with_clearing_allocator()
    home_dir = _use_home(home)
    try:
        service = RegardService(Engine(**_engine_kwargs(detector, min_face_size)),
                                default_purpose=default_purpose)
        server = Server(service, ServerSettings(workers=workers or (os.cpu_count() or 2),
                                                queue=queue, insecure_local=insecure_local,
                                                retention_sweep_seconds=sweep_every,
                                                index_refresh_seconds=refresh_every,
                                                job_workers=(config.current().job_workers
                                                             if job_workers is None
                                                             else job_workers),
                                                body_buffer_bytes=buffered_mib * 1024 * 1024,
                                                stream_processors=stream_processors,
                                                connections=ConnectionLimits(
                                                    max_connections, max_per_client,
                                                    header_seconds)))
        _check_ledger_key(service)
        created = _ensure_admin_key(service, home_dir)
    except RegardError as exc:
        _fail(exc)
        return
    if created is not None:
        # The secret is not printed: a server's output ends up in logs (journald, docker).
        err.print(f"[bold]Created the admin access key {created}[/bold]; its "
                  f"secret is in {home_dir / CREDENTIALS_FILE} (readable by you only). Use it "
                  f"with AWS_SHARED_CREDENTIALS_FILE={home_dir / CREDENTIALS_FILE} "
                  "AWS_PROFILE=regard")
    if insecure_local:
        err.print("[yellow]--insecure-local: requests are NOT authenticated[/yellow]")
    warning = cleartext_warning(host, tls_cert is not None)
    if warning:
        err.print(f"[yellow]{warning}[/yellow]")
    scheme = "https" if tls_cert else "http"
    err.print(f"Regard on {scheme}://{host}:{port}  (Rekognition: POST /, REST: /v1, "
              "docs: /docs, console: /console)")
    uvicorn.Server(uvicorn_config(server, host, port, log_level=log_level,
                                  tls_cert=str(tls_cert) if tls_cert else None,
                                  tls_key=str(tls_key) if tls_key else None,
                                  forwarded_allow_ips=forwarded_allow_ips)).run()


def _restart_with_clearing_allocator() -> None:
    """Re-execute this process with glibc told to overwrite freed memory
    (``secure_memory.CLEARING_ALLOCATOR``), unless it already is or ``REGARD_CLEARING_ALLOCATOR=0``.
    Erasure's promise that no copy of a deleted embedding stays in the server's memory needs it
    (SQLite's freed row buffers cannot be overwritten otherwise), and glibc reads the setting only
    when a process starts. Not glibc (musl, macOS): nothing to do, and the README says what is
    then not guaranteed."""
    import platform

    from regard.secure_memory import CLEARING_ALLOCATOR

    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (config.current().clearing_allocator in ("0", "restarted")
            or CLEARING_ALLOCATOR in tunables or platform.libc_ver()[0] != "glibc"
            or not _started_as_regard()):
        return
    env = {**os.environ, "REGARD_CLEARING_ALLOCATOR": "restarted",  # never a second time
           "GLIBC_TUNABLES": ":".join(filter(None, (tunables, CLEARING_ALLOCATOR)))}
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv keeps "-m regard.cli" or the console script as it was started.
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _started_as_regard() -> bool:
    """Whether this process is the ``regard`` command (not, say, a test runner calling the CLI
    in-process, which must never be replaced)."""
    args = sys.orig_argv[1:3]
    return args[:2] == ["-m", "regard.cli"] or (bool(args) and Path(args[0]).name == "regard")


def cleartext_warning(host: str, tls: bool) -> str | None:
    """What ``regard serve`` says when it would serve other machines in clear."""
    from regard.api.server import is_loopback

    if tls or is_loopback(host):
        return None
    return (f"Serving {host} without TLS: access keys sent to the REST door and every image "
            "cross the network in clear. Use --tls-cert/--tls-key, or a reverse proxy that "
            "terminates TLS on this machine (docs/threat-model.md).")


@keys_app.command("create")
def keys_create(
    name: Optional[str] = typer.Option(None, "--name", help="What the key is for / who holds it"),
    scopes: List[str] = typer.Option(["admin"], "--scope",
                                     help="Repeat for several (see the README for the list)"),
    collections: Optional[List[str]] = typer.Option(
        None, "--collection", help="Restrict the key to these collections (repeat)"),
    purpose: Optional[str] = typer.Option(None, "--purpose",
                                          help="Default purpose recorded with its requests"),
    max_tps: Optional[float] = typer.Option(
        None, "--max-tps", help="Requests per second the key may make (bursts of as many); "
                                "beyond: ProvisionedThroughputExceededException"),
    as_json: bool = typer.Option(False, "--json",
                                 help='Print {"AccessKeyId": ..., "SecretAccessKey": ...}'),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Issue an access key; its secret is printed once."""
    request = {"Name": name, "Scopes": scopes, "Collections": collections or None,
               "DefaultPurpose": purpose, "MaxTps": max_tps}
    try:
        body = _service(home).call("CreateAccessKey", request, local_context())
    except RegardError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps({"AccessKeyId": body["AccessKeyId"],
                                     "SecretAccessKey": body["SecretAccessKey"]}) + "\n")
        return
    out.print(f"AccessKeyId:     {body['AccessKeyId']}")
    out.print(f"SecretAccessKey: {body['SecretAccessKey']}")
    err.print("The secret is not stored anywhere you can read it again: keep it now.")


@keys_app.command("list")
def keys_list(
    as_json: bool = typer.Option(False, "--json"),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Access keys (never their secrets), revoked ones included."""
    listed = _service(home).keys.list()
    if as_json:
        sys.stdout.write(json.dumps({"AccessKeys": [k.to_dict() for k in listed]}) + "\n")
        return
    table = Table("AccessKeyId", "Name", "Scopes", "Collections", "Max TPS", "Created",
                  "Status")
    for k in listed:
        table.add_row(k.access_key_id, k.name or "", ",".join(k.scopes),
                      ",".join(k.collections) if k.collections is not None else "(all)",
                      f"{k.max_tps:g}" if k.max_tps is not None else "",
                      k.created.strftime("%Y-%m-%d %H:%M"),
                      "active" if k.active else f"revoked {k.revoked:%Y-%m-%d %H:%M}")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(access_key_id: str, home: Optional[Path] = HomeOpt) -> None:
    """Revoke a key: its next request is refused (UnrecognizedClientException)."""
    try:
        _service(home).call("RevokeAccessKey", {"AccessKeyId": access_key_id}, local_context())
    except RegardError as exc:
        _fail(exc)
        return
    out.print(f"Revoked {access_key_id}")


def _service(home: Optional[Path]) -> RegardService:
    _use_home(home)
    return RegardService()


FIRST_START = CallContext.operator("regard:first-start", client="cli")


def _ensure_admin_key(service: RegardService, home: Path) -> str | None:
    """On a server's first start (no active key at all), issue an admin key (an audited
    CreateAccessKey) and write it, readable by the owner only, to ``home/admin-credentials`` in
    the AWS credentials-file format. Returns the new key's id, or None when keys exist."""
    if service.keys.list(include_revoked=False):
        return None
    body = service.call("CreateAccessKey", {"Name": "admin (created on first start)"},
                        FIRST_START.for_request())
    write_credentials_file(home / CREDENTIALS_FILE, body["AccessKeyId"], body["SecretAccessKey"])
    return str(body["AccessKeyId"])
