"""One self-contained HTML page per study: ``fairsynth report WORKDIR``.

:func:`collect.collect` reads a study's outputs into plain data (every section optional: a
stage that did not run is said to be so), :mod:`.plots` draws the figures with matplotlib,
:mod:`.sections` turns the outputs into the page's sections, and :func:`page.build_report`
writes one page with every image inlined as a data URI, so it opens from disk, offline, and
can be mailed as one file.
"""

from fairsynth.report.page import ReportError, build_report

__all__ = ["ReportError", "build_report"]
