"""``python -m tseg.runtime.cli``: the same as the ``tseg-rt`` script."""

from tseg.runtime.cli import main

main()
