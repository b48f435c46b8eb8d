"""Unit names and systemctl argument vectors: validation and quoting (no server)."""

from __future__ import annotations

import shlex

import pytest

from siprec_backup.errors import ConfigurationError
from siprec_backup.remote.services import systemctl_argv, validate_unit
from siprec_backup.remote.ssh import command_text

HOSTILE = [
    "x; touch /tmp/pwned",
    "$(id)",
    "`id`",
    "a b",
    "../x",
    "-H evil",
    "--help",
    "nginx\n",
    "a\nb",
    "",
    ".hidden",
    "x|y",
    "x&y",
    "x>y",
    "a'b",
    'a"b',
    "a@b@c",
    "x" * 256,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_unit_names_are_refused_with_their_name(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        validate_unit(name)
    assert repr(name) in str(info.value)
    with pytest.raises(ConfigurationError):
        systemctl_argv("start", name)


@pytest.mark.parametrize(
    "name",
    [
        "nginx",
        "nginx.service",
        "postgresql@15-main.service",
        "getty@tty1.service",
        "siprec-recorder.target",
        "sys-devices-x\\x2dy.device",
        "a:b_c.socket",
    ],
)
def test_valid_unit_names_pass(name: str) -> None:
    assert validate_unit(name) == name


def test_argv_shape_and_sudo() -> None:
    assert systemctl_argv("restart", "nginx.service") == [
        "systemctl",
        "restart",
        "--no-pager",
        "--",
        "nginx.service",
    ]
    assert systemctl_argv("is-active", "x", sudo=True, systemctl="/bin/systemctl")[:3] == [
        "sudo",
        "-n",
        "/bin/systemctl",
    ]


@pytest.mark.parametrize("action", ["reboot", "start; id", "kill", ""])
def test_unknown_actions_are_refused(action: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown systemctl action"):
        systemctl_argv(action, "nginx")


@pytest.mark.parametrize("program", ["systemctl; id", "$(id)", "../../bin/sh", "a b", ""])
def test_hostile_systemctl_program_is_refused(program: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid systemctl program"):
        systemctl_argv("status", "nginx", systemctl=program)


def test_sequences_are_quoted_word_by_word() -> None:
    words = ["printf", "%s\\n", "x; touch /tmp/pwned", "$(id)", "`id`", "a b", "it's"]
    text = command_text(words)
    assert shlex.split(text) == words
    assert command_text("echo $HOME") == "echo $HOME"  # a string is shell text, as documented
    with pytest.raises(ConfigurationError):
        command_text("  ")
    with pytest.raises(ConfigurationError):
        command_text([])
