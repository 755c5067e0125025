"""Synthetic old-photo degradations: pure functions, albumentations transforms, the sampling pipeline
and the ``degrade`` paired-data builder.

Start with :func:`degradations.pipeline.degrade` (one image, one seed -> degraded image and a record).
"""

import os

# albumentations checks PyPI for a newer version on import; this project never goes online at run time
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
