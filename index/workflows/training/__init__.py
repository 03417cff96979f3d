"""Training on the photos a store holds (``shellid train --store``, ``POST /v1/train``).

- :mod:`.run`: :func:`train_on_store`: the store's photos exported for the feature cache,
  split by specimen, trained on with seen-species validation, compared with the current
  model on the same held-out photos, and installed (``Collection.reindex``) only when better;
- :mod:`.photos`: the store's photos as training records (species, specimen) in a folder of
  files the feature cache reads, kept only while training runs;
- :mod:`.report`: :class:`StoreTrainingReport` and the rule that decides the install;
- :mod:`.progress`: one monotonic fraction of the whole job for ``on_progress``.

Importing this package loads no torch (the training does, when it runs).
"""

from .report import StoreTrainingReport, install_decision
from .run import train_on_store

__all__ = ["StoreTrainingReport", "install_decision", "train_on_store"]
