"""One worker process of ``--workers N`` (started by ``server/workers.py``): its settings
come from the parent on stdin; it serves the public listener only."""

from __future__ import annotations

import pickle
import sys

from keyless import logs
from keyless.server.run import run
from keyless.settings import Settings


def main() -> int:
    settings: Settings = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - our parent's
    logs.configure(settings.log_level)
    return run(settings, worker=True)


if __name__ == "__main__":
    sys.exit(main())
