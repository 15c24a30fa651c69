"""The old form of ``atelier generate``: ``python scripts/generate.py --checkpoint ...`` (kept as a shim)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain checkout, not pip-installed

from gan.generate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
