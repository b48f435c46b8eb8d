"""The flows' log_level parameter."""

from __future__ import annotations

import logging

import pytest

from flows._logging import set_log_level
from siprec_backup.errors import ConfigurationError


def test_log_level_applies_to_run_and_engine_loggers() -> None:
    set_log_level("debug")
    assert logging.getLogger("siprec_backup").level == logging.DEBUG
    assert logging.getLogger("prefect.task_runs").level == logging.DEBUG
    set_log_level("INFO")


def test_unknown_log_level_is_named() -> None:
    with pytest.raises(ConfigurationError, match="invalid log_level 'LOUD'"):
        set_log_level("LOUD")
