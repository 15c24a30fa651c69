"""``python -m atelier.studio`` = ``atelier studio``."""

import sys

from atelier.studio.server import main

sys.exit(main())
