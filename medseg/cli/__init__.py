"""Command-line interface: thin typer commands that parse arguments and call the library."""
