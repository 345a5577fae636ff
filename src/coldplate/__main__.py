from coldplate.cli.main import app

app()
