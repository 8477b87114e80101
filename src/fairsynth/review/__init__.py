"""Expert review of a synthetic set, the acceptance protocol of the FairSkin plan.

``fairsynth review export`` draws a blinded sample stratified by class x skin type, mixes
in real images, shuffles them under opaque ids and writes a rating folder for the raters
(images, ``ratings.csv``, ``gallery.html``, instructions) and, apart from it, the key.
``fairsynth review import`` reads the filled sheets back with the key and reports the mean
score, the share rated below 3, how well raters told real from synthetic, their agreement,
and the acceptance verdict (mean > 5.0 and < 10 % below 3).
"""

from fairsynth.review.ratings import ReviewError, import_ratings
from fairsynth.review.sample import export_review

__all__ = ["ReviewError", "export_review", "import_ratings"]
