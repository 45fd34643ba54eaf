from regard.cli import app  # noqa: F401  (registers the commands)
from regard.cli.common import main

main()
