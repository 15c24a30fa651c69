"""Training entry point for launchers: ``accelerate launch train.py --config ...``.

The same command as ``atelier train`` (see ``gan/train.py``); kept as a file because
``accelerate launch``, ``torchrun`` and SLURM scripts take a script path.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # a plain checkout, not pip-installed

from gan.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
