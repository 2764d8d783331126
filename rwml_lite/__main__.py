from rwml_lite.cli import app

app()
