"""atelier: learn one master's painting style and paint new works in it.

This package is the shell around the stages (``scraping``, ``gan``, ``eval``): the ``atelier``
command (:mod:`atelier.cli`), the studio web app (:mod:`atelier.studio`) and the pieces every
stage shares (:mod:`atelier.common`). Stages import only :mod:`atelier.common`; only the CLI and
the studio import stages.
"""

__version__ = "0.2.0"
