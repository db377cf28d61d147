"""``python -m nf_kernels``: the same as the ``nf-kernels`` command (also what torchrun runs with ``-m``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
