"""``python -m pytest_gpuinfer.cli``: the ``gpuinfer`` command."""

from pytest_gpuinfer.cli.main import main

raise SystemExit(main())
