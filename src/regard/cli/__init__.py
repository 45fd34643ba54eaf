"""The ``regard`` command line (Typer).

With ``--json`` every command prints exactly the body of the matching Rekognition response, so
scripts written against ``aws rekognition ...`` output keep working. Commands live in
``analysis_commands`` (detect, compare) and ``collection_commands`` (collections, index, search,
faces, users); importing this package registers them all on ``app``.
"""

from regard.cli import (  # noqa: F401  (registers commands)
    analysis_commands,
    batch_commands,
    collection_commands,
    eval_commands,
    governance_commands,
    model_commands,
    redact_command,
    reindex_command,
    server_commands,
    stream_commands,
    video_commands,
)
from regard.cli.collection_commands import external_image_id
from regard.cli.common import app

__all__ = ["app", "external_image_id"]
