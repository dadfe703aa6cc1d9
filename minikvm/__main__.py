"""``python -m minikvm``: the same as the ``minikvm`` command."""

import sys

from minikvm.cli import main

sys.exit(main())
