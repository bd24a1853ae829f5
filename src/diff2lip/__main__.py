"""``python -m diff2lip`` (also what ``torchrun -m diff2lip ...`` runs)."""

import sys

from diff2lip.cli import main

sys.exit(main())
