"""``python -m atelier`` (and ``accelerate launch -m atelier train ...``): the atelier command."""

import sys

from atelier.cli import main

sys.exit(main())
