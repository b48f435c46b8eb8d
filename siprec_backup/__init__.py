"""siprec-backup's engine: plain Python, no Prefect. Flows, tasks and blocks wrap it."""

__version__ = "0.1.0"
