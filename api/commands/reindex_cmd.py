"""``shellid reindex``: re-embed every stored photo with another model."""

from __future__ import annotations

import argparse
import sys

from . import _collection
from ._collection import add_model_option, add_store_option, open_collection
from ._ray import add_ray_options

HELP = "re-embed the whole store with another model (after training a new one)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_option(parser, "the NEW MODEL.pt to embed with")
    add_store_option(parser)
    add_ray_options(parser)


def run(args: argparse.Namespace) -> int:
    _collection.check_model_option(args.model)  # before the store opens
    ray = None
    if args.ray:
        from ._ray import ray_options

        ray = ray_options(args)
    collection = open_collection(args, need_model=False)
    old = collection.store.info()
    if not len(collection.catalogue):
        print(f"{collection.store.uri}: nothing enrolled; the store will use the new model")
    model = args.model or collection.settings.model
    if ray is not None:
        from index.workflows.ray.reindex import reindex_on_ray

        count = reindex_on_ray(collection, model, ray, progress=sys.stderr.isatty())
    else:
        count = collection.reindex(model, progress=sys.stderr.isatty())
    new = collection.store.info()
    print(
        f"re-embedded {count} photos in {collection.store.uri}: model "
        f"{old.get('fingerprint', '-')} -> {new.get('fingerprint')} ({new.get('model_name')}); "
        f"thresholds {collection.catalogue.thresholds.source}"
    )
    return 0
