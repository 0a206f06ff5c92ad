"""The `failover` command when the operator or the machine gets something wrong.

Each mistake must end in one clear line and an exit code, never a traceback, and must leave the
config file as it was. Where bytes and sockets matter the command runs as a subprocess;
argument and help checks call ``main`` in-process.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import build_parser, main
from controller.config import load_config
from controller.gateway._ops import MAX_DRILL_SECONDS
from tests.config_support import example_copy
from tests.fakes_chat import unused_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "failover.example.yaml"
COMMANDS = ("demo", "serve", "check", "status", "drill", "kill-switch")
KEYS = {"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b", "GEMINI_API_KEY": "c"}


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def pinned(tmp_path: Path) -> Path:
    """A copy of the example config with the kill switch pinned to anthropic (an emergency)."""
    path = example_copy(tmp_path)
    assert main(["kill-switch", "--config", str(path), "pin", "anthropic"]) == 0
    return path


# ------------------------------------------------------------------ 1: names for each action
def test_disable_without_names_does_not_release_the_pin(pinned: Path) -> None:
    before = pinned.read_bytes()
    result = run("kill-switch", "--config", str(pinned), "disable")
    assert result.returncode == 2
    assert "usage: failover kill-switch" in result.stderr
    assert "disable takes one or more provider names" in result.stderr
    assert pinned.read_bytes() == before
    assert load_config(pinned).kill_switch.pin == "anthropic"


@pytest.mark.parametrize(
    "words",
    [("disable",), ("pin",), ("pin", "openai", "gemini"), ("clear", "openai"), ("show", "x")],
)
def test_wrong_number_of_names_is_a_usage_error(
    pinned: Path, words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    before = pinned.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        main(["kill-switch", "--config", str(pinned), *words])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"failover kill-switch: error: {words[0]} takes" in err
    assert pinned.read_bytes() == before


# ------------------------------------------------------------------ 2: a file we cannot write
@pytest.fixture
def unwritable(pinned: Path) -> Iterator[Path]:
    """The config made read-only; as root (which ignores modes) made immutable, or skipped."""
    pinned.chmod(0o444)
    immutable = False
    if os.access(pinned, os.W_OK):
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(pinned)], check=False).returncode:
            pinned.chmod(0o644)
            pytest.skip("running as root without chattr +i: cannot make a file unwritable")
        immutable = True
    try:
        yield pinned
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(pinned)], check=True)
        pinned.chmod(0o644)


def test_unwritable_file_is_one_clean_line(unwritable: Path) -> None:
    before = unwritable.read_bytes()
    result = run("kill-switch", "--config", str(unwritable), "clear")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot write {unwritable}: "), result.stderr
    assert unwritable.read_bytes() == before


def test_a_write_failing_part_way_puts_the_old_bytes_back(pinned: Path) -> None:
    """The file may not grow past its current size (RLIMIT_FSIZE, a full disk in miniature):
    the longer new text fails part-way, the file is restored, the error is one line."""
    before = pinned.read_bytes()

    def no_growth() -> None:  # runs in the child before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 1, len(before) + 1))

    command = ["kill-switch", "--config", str(pinned), "disable", "openai", "gemini"]
    result = subprocess.run(  # disabling two is a longer block than the pin it replaces
        [sys.executable, "-m", "controller.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        preexec_fn=no_growth,
    )
    assert result.returncode == 1
    assert result.stderr == f"error: cannot write {pinned}: {os.strerror(errno.EFBIG)}\n"
    assert pinned.read_bytes() == before


# ------------------------------------------------------------------ 3: line endings
@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_kill_switch_keeps_the_files_line_endings(tmp_path: Path, eol: bytes) -> None:
    path = example_copy(tmp_path)
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", eol))
    assert main(["kill-switch", "--config", str(path), "disable", "openai", "gemini"]) == 0
    data = path.read_bytes()
    assert data.count(b"\n") == data.count(eol)  # every line, the new block's included
    assert b"\r\n" not in data if eol == b"\n" else data.endswith(b"\r\n")
    assert b"# failover.yaml" in data  # the rest of the file is still there
    assert load_config(path).kill_switch.disable == ("openai", "gemini")


# ------------------------------------------------------------------ 4: a port already in use
SERVE_CONFIG = """\
providers:
  primary: {{kind: openai, base_url: "http://127.0.0.1:{dead}/v1"}}
tiers:
  frontier:
    targets:
      - {{provider: primary, model: big}}
state: {{path: "{state}"}}
gateway: {{host: 127.0.0.1, port: {port}, admin_host: 127.0.0.1, admin_port: {admin}}}
"""


@pytest.mark.parametrize(
    ("busy", "loop"), [("gateway", "auto"), ("admin", "auto"), ("gateway", "asyncio")]
)
def test_serve_on_a_port_in_use_says_so_and_exits(tmp_path: Path, busy: str, loop: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"port": port, "admin": unused_port()}
        if busy == "admin":
            ports = {"port": unused_port(), "admin": port}
        path = tmp_path / "failover.yaml"
        state = tmp_path / "state.json"
        path.write_text(SERVE_CONFIG.format(dead=unused_port(), state=state, **ports))
        result = run("serve", "--config", str(path), "--loop", loop, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"error: cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}"


# ------------------------------------------------------------------ 5: check's verdict
def test_check_verdict_agrees_with_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"{EXAMPLE}: valid"
    monkeypatch.delenv("GEMINI_API_KEY")
    assert main(["check", "--config", str(EXAMPLE)]) == 1
    out = capsys.readouterr().out
    assert "valid" not in out
    assert "problem: provider gemini: environment variable GEMINI_API_KEY is not set" in out
    assert out.strip().splitlines()[-1].startswith(f"{EXAMPLE}: NOT ready: 1 problem ")


# ------------------------------------------------------------------ 6: help
def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def help_of(*argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = subcommands()[command]
    description = parser.description or ""
    assert len(description.split()) >= 25, description
    assert description.endswith("."), description
    assert description.split()[0] in help_of(command, capsys=capsys)
    for action in parser._actions:
        assert action.help, f"{command} {action.dest}: no help text"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"{command} {action.dest}: default not shown"


def test_top_level_help_lists_commands_and_environment(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_of(capsys=capsys)
    for command in COMMANDS:
        line = next(line for line in out.splitlines() if line.strip().startswith(command + " "))
        assert len(line.split()) > 3, line  # a one-line summary follows the name
    for variable in (
        "FAILOVER_CONFIG",
        "FAILOVER_URL",
        "FAILOVER_ADMIN_URL",
        "FAILOVER_ADMIN_TOKEN",
    ):
        assert variable in out


def test_drill_help_names_its_limit_and_enforces_it(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_of("drill", capsys=capsys)
    assert f"at most {MAX_DRILL_SECONDS:g}" in out
    assert "name of the provider to fail" in out
    assert main(["drill", "primary", "--seconds", str(MAX_DRILL_SECONDS + 1)]) == 2
    assert f"<= {MAX_DRILL_SECONDS:g}" in capsys.readouterr().err


def test_verbose_works_before_and_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["status"]).verbose is False
    assert parser.parse_args(["-v", "status"]).verbose is True
    assert parser.parse_args(["status", "--verbose"]).verbose is True
