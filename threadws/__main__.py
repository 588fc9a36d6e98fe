"""``python -m threadws``: see :mod:`threadws.cli`."""

from .cli import main

raise SystemExit(main())
