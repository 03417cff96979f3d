"""``shellid reindex``: re-embed every stored photo with another model."""

from __future__ import annotations

import argparse
import sys

from . import _collection
from ._collection import add_model_option, add_store_option, open_collection

HELP = "re-embed the whole store with another model (after training a new one)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_option(parser, "the NEW MODEL.pt to embed with")
    add_store_option(parser)


def run(args: argparse.Namespace) -> int:
    _collection.check_model_option(args.model)  # before the store opens
    collection = open_collection(args, need_model=False)
    old = collection.store.info()
    if not len(collection):
        print(f"{collection.store.uri}: nothing enrolled; the store will use the new model")
    count = collection.reindex(
        args.model or collection.settings.model, progress=sys.stderr.isatty()
    )
    new = collection.store.info()
    print(
        f"re-embedded {count} photos in {collection.store.uri}: model "
        f"{old.get('fingerprint', '-')} -> {new.get('fingerprint')} ({new.get('model_name')}); "
        f"thresholds {collection.thresholds.source}"
    )
    return 0
