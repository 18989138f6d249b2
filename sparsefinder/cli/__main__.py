"""``python -m sparsefinder.cli``: the same as the ``sparsefinder`` command."""

import sys

from .dispatch import main

sys.exit(main())
