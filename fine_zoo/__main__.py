"""`python -m fine_zoo` is the `fine` script."""

import sys

from fine_zoo.cli import main

sys.exit(main())
