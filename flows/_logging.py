"""Run-level log configuration shared by the flows."""

from __future__ import annotations

import logging

from siprec_backup.errors import ConfigurationError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def set_log_level(level: str) -> None:
    """Apply the flow's `log_level` parameter to the run loggers and the engine's logger."""
    name = level.upper()
    if name not in LEVELS:
        raise ConfigurationError(
            f"invalid log_level {level!r}; expected one of {', '.join(LEVELS)}"
        )
    for logger in ("prefect.flow_runs", "prefect.task_runs", "siprec_backup"):
        logging.getLogger(logger).setLevel(name)
