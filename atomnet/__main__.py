"""``python -m atomnet ...`` runs the command-line interface (also ``torchrun -m atomnet``)."""

import sys

from .cli.main import main

sys.exit(main())
