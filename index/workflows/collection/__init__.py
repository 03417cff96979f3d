"""A collection as users meet it: photos and folders in, answers out.

- :mod:`.collection`: :class:`Collection`, the photo-in operations (enroll, identify, search,
  reindex), each photo through the one intake and embedded by the model it was built with;
- :mod:`.embedding`: photos to vectors in chunks (with a progress bar), and the stored copies
  re-embedded by a new model;
- :mod:`.folders`: a class-folder tree (or one folder) as batches of one species each.

What a collection holds is read from its catalogue (:class:`index.catalogue.Catalogue`), and
removals and recalibration are the engine's (:class:`index.specimens.SpecimenIndex`).
"""

from .collection import Collection
from .embedding import stored_image
from .folders import enrolled_from, folder_batches

__all__ = ["Collection", "enrolled_from", "folder_batches", "stored_image"]
