from regard.cli import app

app()
