"""The command line: a thin Typer app over the library. app.py holds what commands share; measure.py
the commands on one model, runs.py those on runs. `tlbench --help` imports none of torch."""

from tlbench.cli import measure, runs  # noqa: F401 (each module registers its commands on the app)
from tlbench.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()
