"""Expert review of a synthetic set, the acceptance protocol of the FairSkin plan.

``fairsynth review export`` draws a blinded sample stratified by class x skin type from the
images that passed the filters, mixes in real images, shuffles them under opaque ids and
writes a rating folder for the raters (images, ``ratings.csv``, ``gallery.html``,
``README.txt``) and, outside it, the key. ``fairsynth review import`` reads the filled sheets
back with the key and reports the mean rating, the share rated below 3, how well raters told
real from synthetic, their agreement, and the acceptance verdict (mean > 5.0 and < 10 %
below 3).

    config.py    ExportConfig, ImportConfig
    sample.py    eligibility (filter verdicts), equal quotas per stratum, the seeded draw
    sheet.py     the blank sheet, the gallery page, the rater instructions
    export.py    the rater folder and the key
    ratings.py   reading the key and the filled sheets (errors name file and line)
    stats.py     the numbers: clustered t-intervals, guess accuracy, AUROC, Krippendorff's alpha, verdict
    summary.py   review.json
"""

from fairsynth.review.config import ExportConfig, ImportConfig
from fairsynth.review.export import ExportResult, export_review
from fairsynth.review.ratings import ReviewError
from fairsynth.review.sample import ReviewExportError
from fairsynth.review.summary import import_ratings, review_summary

__all__ = [
    "ExportConfig", "ExportResult", "ImportConfig", "ReviewError", "ReviewExportError",
    "export_review", "import_ratings", "review_summary",
]
