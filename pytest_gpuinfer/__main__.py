"""``python -m pytest_gpuinfer``: the ``gpuinfer`` command, for environments without its script."""

from pytest_gpuinfer.cli.main import main

raise SystemExit(main())
