"""Big collections on Ray: ``shellid enroll / embed / reindex --ray [ADDRESS]``, one module
per job (:mod:`.enrol`, :mod:`.embed`, :mod:`.reindex`) over the session, actor pool and
model shipping they share (:mod:`.cluster`).

What runs where (see docs/distributed.md):

* the driver (the ``shellid`` command) lists the photos, starts or joins Ray, and writes the
  store: :meth:`Collection.enroll_embedded` in large commits (the duplicate rules of the
  local path), :meth:`Collection.reindex_embedded` in one, thresholds calibrated once at
  the end; a tqdm bar counts the photos done;
* Ray Data streams the photo paths (or stored ids) in batches to a pool of actors, one per
  worker, each loading the model once (on a GPU when it was given one): an actor reads its
  photos, puts each through the one intake (:func:`index.workflows.imaging.prepare_image`,
  exactly as :meth:`Collection.enroll`) and embeds them, so the vectors are the local path's.

Resuming: every commit is atomic, and a photo whose SHA-256 the store already holds under the
same species is skipped before it is decoded (reported as a duplicate), so running a killed
enrolment again adds only what is missing, without duplicating rows.

Ray is an optional extra (``pip install 'shellid[ray]'``); it and torch are imported inside
functions, so importing these modules costs nothing.
"""
