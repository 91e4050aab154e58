"""``python -m mailward``: the same as the ``mailward`` command."""
from .cli import main

main()
