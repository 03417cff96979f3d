"""The ``--ray [ADDRESS]`` options of ``enroll``, ``embed`` and ``reindex`` (big collections on a
Ray cluster; see docs/distributed.md). Nothing here imports Ray: the job code is in
:mod:`index.workflows.ray`."""

from __future__ import annotations

import argparse
import re
from typing import Any

# the forms index.workflows.ray.cluster.check_address accepts (kept light: no index import)
_ADDRESS = re.compile(r"^(local|auto|[\w.-]+:\d+)$")


def ray_address(text: str) -> str:
    """argparse type of ``--ray``: a Ray address, or a one-line usage error."""
    if text.strip().startswith(("ray://", "anyscale://")):
        raise argparse.ArgumentTypeError(
            "Ray Data does not run through Ray Client (ray://): run shellid on a node of the "
            "cluster with --ray auto or --ray HEAD:6379"
        )
    if not _ADDRESS.match(text.strip()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Ray address (local, auto or HOST:6379); to run on a local Ray "
            "write --ray after the photos"
        )
    return text.strip()


def add_ray_options(
    parser: argparse.ArgumentParser, *, batch: bool = True, commit: bool = False
) -> None:
    """``--ray [ADDRESS]`` and how the job runs there (``--ray-batch-size`` unless the command
    has its own ``--batch-size``; ``--ray-commit`` for enrolment)."""
    from ._models import RayJobOptions
    from ._options import add_model_options

    group = parser.add_argument_group(
        "Ray (big collections on a cluster; needs pip install 'shellid[ray]')"
    )
    fields = ["ray", "ray_workers", "ray_cpus", "ray_gpus"]
    fields += ["ray_batch_size"] if batch else []
    fields += ["ray_commit"] if commit else []
    add_model_options(group, RayJobOptions, fields)


def ray_options(args: argparse.Namespace, batch_size: int | None = None) -> Any:
    """The :class:`index.workflows.ray.cluster.RayOptions` of parsed ``args``; fails in one
    line when Ray is not installed or the cluster's address accepts no connection."""
    from pydantic import ValidationError

    from embedder.settings import problems
    from index.workflows.ray.cluster import RayOptions, probe, require_ray

    require_ray()
    probe(args.ray)  # an unreachable cluster fails before the model loads
    try:
        return RayOptions(
            address=args.ray,
            workers=args.ray_workers,
            cpus_per_worker=args.ray_cpus,
            gpus_per_worker=args.ray_gpus,
            batch_size=batch_size or args.ray_batch_size,
            commit_photos=getattr(args, "ray_commit", 2000),
        )
    except ValidationError as exc:  # the reason in one line, as the CLI reports errors
        raise ValueError(problems(exc)) from None
