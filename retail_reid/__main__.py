"""``python -m retail_reid`` runs the ``reid`` command line."""

import sys

from retail_reid.cli import main

sys.exit(main())
