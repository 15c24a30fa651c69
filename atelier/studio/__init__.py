"""atelier studio: a local web app to paint, judge, refine and curate a run's works.

``atelier studio --checkpoint RUN_OR_EXPORT [--dataset DIR] [--port N]`` serves the page on
127.0.0.1 (see :mod:`atelier.studio.server`); the tabs are wired in :mod:`atelier.studio.app`
to the plain functions of :mod:`atelier.studio.engine`, :mod:`~atelier.studio.paint`,
:mod:`~atelier.studio.originality`, :mod:`~atelier.studio.refine`, :mod:`~atelier.studio.curate`
and :mod:`~atelier.studio.overview`.
"""

from atelier.studio.server import main

__all__ = ["main"]
