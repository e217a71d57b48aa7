"""`python -m export RUN_DIR --to FORMAT OUT`: see export/formats.py."""

import sys

from export.formats import main

sys.exit(main())
