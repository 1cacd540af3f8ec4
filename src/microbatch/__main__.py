"""``python -m microbatch``: the same as the ``microbatch`` command."""

from ._cli import main

main()
