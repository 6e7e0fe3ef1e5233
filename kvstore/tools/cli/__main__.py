"""C{python -m kvstore.tools.cli}: the same as C{kvstore-cli}."""

import sys

from kvstore.tools.cli import main

sys.exit(main())
