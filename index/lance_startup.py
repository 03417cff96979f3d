"""LanceDB's import, made cheaper for one-off commands.

``import lancedb`` imports ``lance_namespace``, which imports the model classes of the
``lance_namespace_urllib3_client`` package; importing any part of that package runs its
``__init__``, which also builds the whole generated REST client (every API method wrapped in
pydantic's ``validate_call``): about half of the time a cold ``shellid identify`` spent
importing, for a REST namespace client shellid never uses (its stores are folders and object
storage URIs). :func:`defer_namespace_client` registers that package without running its
``__init__``: its sub-packages (the models LanceDB imports) load as usual, and the first use
of any name of the package itself runs the real ``__init__`` then, so nothing that uses the
client breaks. Anything unexpected leaves the normal import in place.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

CLIENT_PACKAGE = "lance_namespace_urllib3_client"


def defer_namespace_client() -> bool:
    """Register :data:`CLIENT_PACKAGE` with its ``__init__`` deferred to the first use of one
    of its names; True when done (False: imported already, missing, or not a package)."""
    if CLIENT_PACKAGE in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(CLIENT_PACKAGE)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return False
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def run_init(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        del package.__dict__["__getattr__"]  # once: the real __init__ defines every name
        loader.exec_module(package)
        return getattr(package, name)

    package.__getattr__ = run_init  # type: ignore[method-assign]
    sys.modules[CLIENT_PACKAGE] = package
    return True
