"""``python -m study``: the same CLI as the ``study`` console script."""

from study.cli import run_cli

run_cli()
