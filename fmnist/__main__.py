"""`python -m fmnist ...`, which is also what `torchrun -m fmnist train ...` runs."""

from fmnist.cli import main

main()
