"""``python -m koku``, and the entry the zipapp's top-level ``__main__.py`` calls.

Nothing native happens here: client commands must run without extracting or importing gevent. The
daemon commands reach ``koku.zipapp.bootstrap.prepare_daemon()`` through the CLI.
"""

from __future__ import annotations

import sys


def main() -> int:
    from koku.client.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
