"""``python -m bench STUDY [options]`` (openbao, exchange, read, soak, stack, audit, overload,
memory, aws, gcp, databases, pgproxy, spiffe, console); ``python -m bench render``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import (
    audit,
    aws,
    console,
    databases,
    exchange,
    gcp,
    memory,
    openbao,
    overload,
    pgproxy,
    read,
    report,
    soak,
    spiffe,
    stack,
)

STUDIES: dict[str, Any] = {
    m.NAME: m
    for m in (
        openbao,
        exchange,
        read,
        soak,
        stack,
        audit,
        overload,
        memory,
        aws,
        gcp,
        databases,
        pgproxy,
        spiffe,
        console,
    )
}


def publish(study: Any, data: dict[str, Any], out: Path, **extra: Any) -> None:
    """The markdown (and, for openbao, the chart and docs section) from a study's JSON."""
    text = study.render(data)
    print()
    print(text)
    report.write(out, text)
    if hasattr(study, "publish"):
        study.publish(data, out, **extra)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, study in STUDIES.items():
        doc = (study.__doc__ or name).strip()
        sp = sub.add_parser(name, help=doc.split("\n")[0], description=doc.split("\n\n")[0])
        study.add_arguments(sp)
    rp = sub.add_parser("render", help="re-render STUDY.md (and chart) from STUDY.json")
    rp.add_argument("study", choices=sorted(STUDIES))
    rp.add_argument("--results", type=Path, default=report.RESULTS, help="directory of the JSON")
    rp.add_argument(
        "--docs", type=Path, help="openbao: also refresh the marked section of this doc"
    )
    args = p.parse_args(argv)
    if args.command == "render":
        study = STUDIES[args.study]
        path = args.results / f"{args.study}.json"
        data = json.loads(path.read_text())
        extra = {"docs": args.docs} if args.study == "openbao" else {}
        publish(study, data, path.with_suffix(".md"), **extra)
        return 0
    study = STUDIES[args.command]
    study.validate(sub.choices[args.command], args)
    data = report.run(
        study,
        args,
        lambda d, out: (
            publish(study, d, out, **study.publish_options(args))
            if hasattr(study, "publish_options")
            else publish(study, d, out)
        ),
        cleanup=getattr(study, "cleanup", lambda: None),
    )
    if data is None:
        return 130
    return int(study.status(data)) if hasattr(study, "status") else 0


if __name__ == "__main__":
    sys.exit(main())
