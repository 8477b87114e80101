"""One self-contained HTML page per study: ``fairsynth report WORKDIR``.

:func:`collect.collect` reads a study's outputs into plain data (every section optional: a
stage that did not run is said to be so), :mod:`.verdict` answers the study's question in a few
sentences (the page's first screen and the end of `fairsynth run`), :mod:`.plots` draws the
figures with matplotlib, :mod:`.figures` gives each data figure its text alternative and data
file, :mod:`.sections` turns the outputs into the page's sections, and
:func:`page.build_report` writes one page with every image inlined as a data URI, so it opens
from disk, offline, and can be mailed as one file.
"""

from fairsynth.report.page import ReportError, build_report

__all__ = ["ReportError", "build_report"]
