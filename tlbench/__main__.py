"""`python -m tlbench` is the `tlbench` console script."""

from tlbench.cli import main

main()
