"""`python -m fmnist ...`, which is also what `torchrun -m fmnist train ...` runs."""

from .cli import main

main()
