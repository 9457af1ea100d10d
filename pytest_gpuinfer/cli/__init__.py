"""The ``gpuinfer`` command: one entry (``cli.main``), one module per subcommand family."""
