"""``python -m anytask``: the ``anytask`` command (see :mod:`anytask.cli`)."""

from .cli import main

raise SystemExit(main())
