"""``python -m minikvm``: the same as the ``minikvm`` command."""

import sys

from minikvm.cli.main import main

sys.exit(main())
