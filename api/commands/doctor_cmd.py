"""``shellid doctor``: check a store, list what is damaged and what can be recovered, and
repair what is safe with ``--repair`` (:mod:`index.workflows.doctor` says what is checked and
repaired)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ._collection import add_store_option, store_uri
from ._options import add_model_options

if TYPE_CHECKING:
    from index.workflows.doctor import Finding

HELP = "check a store (tables, versions, data files, vectors, photos, snapshots); --repair fixes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._models import DoctorOptions

    add_store_option(parser)
    add_model_options(parser, DoctorOptions)


def finding_problem(finding: Finding) -> str:
    """The finding's problem as the user reads it: with the command its remedy names."""
    from ..remedies import remedy_words

    return f"{finding.problem}{remedy_words(finding.remedy, finding.store)}"


def finding_json(finding: Finding) -> dict[str, Any]:
    """The finding in ``--json``: where, problem (worded with its remedy), repair, repaired,
    lost_rows."""
    return {
        "where": finding.where,
        "problem": finding_problem(finding),
        "repair": finding.repair,
        "repaired": finding.repaired,
        "lost_rows": finding.lost_rows,
    }


def finding_line(finding: Finding) -> str:
    """The finding's line in the printed report."""
    from ..remedies import remedy_words

    return finding.line(remedy_words(finding.remedy, finding.store))


def run(args: argparse.Namespace) -> int:
    """Exit status 0: healthy (or everything found was repaired); 1: damage is left."""
    from index.workflows.doctor import check_store

    uri = store_uri(args)

    def progress(text: str) -> None:
        if not args.json:
            print(f"shellid doctor: {text} ...", file=sys.stderr, flush=True)

    bar = sys.stderr.isatty() and not args.json
    checkup = check_store(uri, repair=args.repair, progress=progress, bar=bar)
    if args.json:
        print(
            json.dumps(
                {
                    "store": uri,
                    "healthy": checkup.healthy,
                    "facts": checkup.facts,
                    "passed": checkup.passed,
                    "findings": [finding_json(f) for f in checkup.findings],
                },
                default=str,
            )
        )
        return 0 if checkup.healthy else 1
    facts = ", ".join(
        f"{k} " + (" ".join(f"{t}={n}" for t, n in v.items()) if isinstance(v, dict) else str(v))
        for k, v in checkup.facts.items()
    )
    print(f"store {uri}: {facts or 'empty'}")
    for line in checkup.passed:
        print(f"ok        {line}")
    for finding in checkup.findings:
        print(finding_line(finding))
    left = [f for f in checkup.findings if not f.repaired]
    if not left:
        print("healthy" if not checkup.findings else "repaired: the store is healthy again")
        return 0
    fixable = [f for f in left if f.repair]
    if fixable and not args.repair:
        print(f"{len(fixable)} can be repaired: shellid doctor --store {uri} --repair")
    elif left:
        print(f"{len(left)} cannot be repaired here (see above)")
    return 1
