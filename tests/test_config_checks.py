"""What a valid config file can still get wrong, and what `failover check` says about it.

A state file that cannot be saved, a kill switch that leaves a tier nothing to route to, a
provider that does not answer: ``check`` names each with its key and line (or the reason the
provider gave); ``serve`` and a reload go on with one clear log record instead of a traceback per
save. The CLI runs in-process (``main``) against real files; providers are FakeProviders on
127.0.0.1; the controller runs on a FakeClock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from controller._clock import FakeClock
from controller._errors import AuthFailed, Overloaded, ProviderError
from controller.cli import main
from controller.config import load_config, parse_config
from controller.control.config import TripwireConfig
from controller.control.loop import Controller
from controller.control.state import HealthState, KillSwitch, RoutingState, StateHolder
from controller.control.store import FileStateStore
from controller.events import Outcome
from controller.providers.fake import FakeProvider, FaultMode
from controller.routing.plan import make_plan
from controller.runtime import Runtime, build_tiers, probe_models
from controller.signals import SignalWindows
from tests.config_support import rewrite_in_place
from tests.fakes_chat import unused_port
from tests.telemetry_support import attempt

SECRET = "sk-live-SECRET-4c1d"
CONFIG = """\
providers:
  a: {{kind: openai, base_url: "{a}"{a_extra}}}
  b: {{kind: anthropic, base_url: "{b}"}}
  spare: {{kind: openai, base_url: "{spare}"{spare_extra}}}
tiers:
  fast:
    targets:
      - {{provider: a, model: small}}
  smart:
    targets:
      - {{provider: a, model: big}}
      - {{provider: b, model: claude}}
kill_switch:
  {kill}
state:
  path: "{state}"
"""


def config_text(
    state: Path,
    *,
    kill: str = "pin: null",
    urls: tuple[str, str, str] = ("http://127.0.0.1:9/v1",) * 3,
    a_extra: str = "",
    spare_extra: str = "",
) -> str:
    a, b, spare = urls
    return CONFIG.format(
        a=a, b=b, spare=spare, a_extra=a_extra, spare_extra=spare_extra, kill=kill, state=state
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "failover.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, start: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.lstrip().startswith(start))


async def live_check(path: Path) -> int:
    """``failover check --live`` in a thread (it runs its own event loop), bounded in time."""
    run = asyncio.to_thread(main, ["check", "--config", str(path), "--live"])
    return await asyncio.wait_for(run, timeout=30)


def check(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    code = main(["check", "--config", str(path), *flags])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture(autouse=True)
def _no_kill_switch_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILOVER_KILL_SWITCH_PIN", raising=False)
    monkeypatch.delenv("FAILOVER_KILL_SWITCH_DISABLE", raising=False)


# ---------------------------------------------------------------------------------- state.path
def blocked(tmp_path: Path) -> Path:
    """A path whose parent is a regular file: unwritable even as root."""
    (tmp_path / "blocker").write_text("not a directory")
    return tmp_path / "blocker" / "state.json"


def blocked_deeper(tmp_path: Path) -> Path:
    """A missing directory that cannot be created: its nearest existing ancestor is a file."""
    return blocked(tmp_path).parent / "sub" / "state.json"


@pytest.mark.parametrize(
    ("where", "reason"), [(blocked_deeper, "is not a directory"), (blocked, "is not a directory")]
)
def test_check_names_a_state_path_that_cannot_be_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: Callable[[Path], Path], reason: str
) -> None:
    state = where(tmp_path)
    path = write(tmp_path, config_text(state))
    code, out = check(path, capsys)
    assert code == 1
    assert f"{path}:{line_of(path, 'path:')}: state.path: " in out
    assert reason in out
    assert f"{state} cannot be saved" in out
    assert "NOT ready: 1 problem" in out
    assert ": valid" not in out


def test_check_passes_a_writable_state_path_and_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, config_text(tmp_path / "state.json"))
    code, out = check(path, capsys)
    assert (code, f"{path}: valid") == (0, out.splitlines()[-1])
    assert [p.name for p in tmp_path.iterdir()] == ["failover.yaml"]


def test_a_missing_state_directory_is_created_by_the_first_save(tmp_path: Path) -> None:
    """As a package's /var/lib/failover would be: check passes it, the first save makes it."""
    store = FileStateStore(tmp_path / "var" / "lib" / "failover" / "state.json")
    assert store.problem() is None
    assert not (tmp_path / "var").exists()  # checking creates nothing
    store.save(RoutingState(version=3))
    assert store.load().version == 3


def test_store_says_why_a_save_would_fail_and_loads_fresh_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "dir.json").mkdir()
    assert (
        FileStateStore(tmp_path / "dir.json").problem() == f"{tmp_path / 'dir.json'} is a directory"
    )
    assert FileStateStore(tmp_path / "ok.json").problem() is None
    store = FileStateStore(blocked(tmp_path))
    assert store.problem() == f"{tmp_path / 'blocker'} is not a directory"
    with caplog.at_level(logging.DEBUG, logger="controller.control.store"):
        assert store.load() == RoutingState()  # nothing was ever saved there: not "corrupt"
    assert caplog.records == []
    with pytest.raises(NotADirectoryError) as raised:
        store.save(RoutingState(version=1))
    assert raised.value.filename == str(store.path)  # the state file, not its temporary


def test_a_failing_save_is_logged_once_and_its_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ticks of the real loop on a FakeClock: trip, probe, fail back, each a new version."""
    clock = FakeClock()
    windows = SignalWindows(clock=clock)
    store = FileStateStore(blocked(tmp_path))
    controller = Controller(
        clock=clock,
        windows=windows,
        holder=StateHolder(),
        store=store,
        cfg=TripwireConfig(),
        tiers={"frontier": ("a", "b")},
    )
    controller.resume()
    for _ in range(5):
        windows.on_attempt(attempt(provider="a", outcome=Outcome.FAULT, error_type="overloaded"))
    with caplog.at_level(logging.DEBUG, logger="controller.control.loop"):
        assert controller.tick().changed  # tripped: save fails
        clock.advance(15.0)
        assert controller.tick().changed  # probing: save fails again
        assert controller.tick().changed  # recovering: and again
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING and "save" in r.msg]
    (failure,) = failures
    assert failure.levelno == logging.ERROR
    assert failure.exc_info is None  # no traceback: the path and the reason say it
    assert f"to {store.path}: Not a directory" in failure.getMessage()
    assert controller.state.status("a").state is HealthState.RECOVERING  # routing went on

    caplog.clear()
    (tmp_path / "blocker").unlink()
    (tmp_path / "blocker").mkdir()
    with caplog.at_level(logging.INFO, logger="controller.control.loop"):
        clock.advance(10.0)
        assert controller.tick().changed  # next failback step: saved
        clock.advance(10.0)
        assert controller.tick().changed  # healthy: saved, nothing to say
    saved = [r.getMessage() for r in caplog.records if "saved again" in r.getMessage()]
    assert saved == ["routing state saved again (version 4) after 3 failed saves"]
    assert store.load() == controller.state


async def test_serve_starts_when_the_state_file_cannot_be_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, config_text(blocked(tmp_path), kill="pin: b"))
    runtime = Runtime(load_config(path), env={}, clock=FakeClock())
    with caplog.at_level(logging.INFO):
        await runtime.start()  # the pin from the file is a new version: its save fails
        await runtime.stop(grace=0.5)
    assert runtime.holder.current.kill_switch == KillSwitch(pin="b")
    assert runtime.routes() == {"fast": ("b",), "smart": ("b",)}
    saves = [r for r in caplog.records if "could not save routing state" in r.getMessage()]
    assert [(r.levelno, r.exc_info) for r in saves] == [(logging.ERROR, None)]
    assert "unusable" not in caplog.text  # a state file never saved is not a corrupt one


# ---------------------------------------------------------------------------------- kill switch
@pytest.mark.parametrize(
    ("kill", "key", "tiers"),
    [
        ("pin: spare", "kill_switch.pin", "tiers fast, smart have no provider"),
        ("disable: [a]", "kill_switch.disable", "tier fast has no provider"),
        ("disable: [a, b]", "kill_switch.disable", "tiers fast, smart have no provider"),
    ],
)
def test_check_names_a_kill_switch_that_leaves_tiers_unroutable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kill: str, key: str, tiers: str
) -> None:
    path = write(tmp_path, config_text(tmp_path / "state.json", kill=kill))
    code, out = check(path, capsys)
    assert code == 1
    field = key.rsplit(".", 1)[1]
    assert f"{path}:{line_of(path, field + ':')}: {key}: " in out
    assert tiers in out
    assert "WARNING" not in out  # check reports it once, as a problem, not as a log record too


def test_check_names_the_environment_override_that_strands_a_tier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, config_text(tmp_path / "state.json"))
    monkeypatch.setenv("FAILOVER_KILL_SWITCH_DISABLE", "a")
    code, out = check(path, capsys)
    assert code == 1
    assert "environment: FAILOVER_KILL_SWITCH_DISABLE: disabled: a: tier fast has no" in out


def test_kill_switch_warns_when_it_writes_a_switch_that_strands_tiers_and_show_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, config_text(tmp_path / "state.json"))
    assert main(["kill-switch", "--config", str(path), "pin", "spare"]) == 0
    out, err = capsys.readouterr()
    assert "kill switch now pinned to spare" in out
    assert "warning: tiers fast, smart have no provider to route to" in err  # written anyway
    assert main(["kill-switch", "--config", str(path), "show"]) == 0
    out, err = capsys.readouterr()
    assert "pinned to spare" in out
    assert err == ""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # show applies nothing


@pytest.mark.parametrize(
    ("kill", "spare_extra"),
    [
        ("pin: b", ""),  # not in tier fast, but it has a model of its own (its first use)
        ("pin: spare", ", default_model: m"),
        ("disable: [b]", ""),
    ],
)
def test_check_accepts_a_kill_switch_every_tier_can_follow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kill: str, spare_extra: str
) -> None:
    text = config_text(tmp_path / "state.json", kill=kill, spare_extra=spare_extra)
    code, out = check(write(tmp_path, text), capsys)
    assert code == 0, out


@pytest.mark.parametrize("spare_extra", ["", ", default_model: m"])
@pytest.mark.parametrize(
    "switch",
    [
        KillSwitch(),
        KillSwitch(pin="a"),
        KillSwitch(pin="b"),
        KillSwitch(pin="spare"),
        KillSwitch(pin="spare", disable=("a", "b")),
        KillSwitch(disable=("a",)),
        KillSwitch(disable=("b",)),
        KillSwitch(disable=("a", "b")),
        KillSwitch(disable=("spare",)),
    ],
)
def test_unroutable_tiers_agree_with_the_routing_plan(
    tmp_path: Path, switch: KillSwitch, spare_extra: str
) -> None:
    """The check's rule against the router's own: make_plan over the runtime's tiers."""
    config = parse_config(config_text(tmp_path / "s.json", spare_extra=spare_extra))
    state = RoutingState(kill_switch=switch)
    empty = {
        name
        for name, tier in build_tiers(config).items()
        if not make_plan(
            tier,
            state,
            default_models=probe_models(config),
            rng=random.Random(0),
            latency_of=lambda _: None,
        ).targets
    }
    assert set(config.unroutable_tiers(switch)) == empty


def from_config(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "controller.config._model"]


async def test_serve_and_reload_apply_an_unroutable_kill_switch_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's switch is applied to the tiers that can follow it; the rest is loud."""
    path = write(tmp_path, config_text(tmp_path / "state.json", kill="disable: [a]"))
    runtime = Runtime(load_config(path), config_path=path, env={}, clock=FakeClock())
    with caplog.at_level(logging.WARNING, logger="controller.config._model"):
        await runtime.start()
        try:
            assert runtime.holder.current.kill_switch == KillSwitch(disable=("a",))
            assert runtime.routes() == {"fast": (), "smart": ("b",)}
            (started,) = from_config(caplog)
            assert "(kill_switch.disable) applied, but tier fast has no" in started.getMessage()
            caplog.clear()
            rewrite_in_place(path, config_text(tmp_path / "state.json", kill="pin: spare"))
            assert runtime.watcher is not None
            runtime.watcher.poke()
            assert runtime.watcher.check()
            assert runtime.holder.current.kill_switch == KillSwitch(pin="spare")
            (reloaded,) = from_config(caplog)
            message = reloaded.getMessage()
        finally:
            await runtime.stop(grace=0.5)
    assert reloaded.levelno == logging.WARNING
    assert "pinned to spare (kill_switch.pin) applied, but tiers fast, smart" in message
    assert not [a for a in runtime.alerts if a["event"] == "config_rejected"]


# ---------------------------------------------------------------------------------- --live
async def test_live_check_gives_each_provider_failure_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_A_KEY", SECRET)
    async with FakeProvider(name="a") as a, FakeProvider(name="b") as b:
        a.set_fault(FaultMode.AUTH)
        b.set_fault(FaultMode.ERROR_503)
        urls = (a.url("openai"), b.url("anthropic"), f"http://127.0.0.1:{unused_port()}/v1")
        text = config_text(
            tmp_path / "state.json",
            urls=urls,
            a_extra=", api_key_env: CHECK_A_KEY",
            spare_extra=", default_model: m",
        )
        path = write(tmp_path, text)
        code = await live_check(path)
    out, err = capsys.readouterr()
    assert code == 1
    assert "provider a did not answer a tiny request: authentication failed (HTTP 401): " in out
    assert "check the key ($CHECK_A_KEY)" in out
    assert "provider b did not answer a tiny request: HTTP 503 (overloaded): " in out
    assert "provider spare did not answer a tiny request: connection failed: " in out
    assert "Connection refused" in out
    assert SECRET not in out + err


async def test_live_check_names_the_timeout_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeProvider(name="a") as a:
        a.set_fault(FaultMode.HANG)
        down = f"http://127.0.0.1:{unused_port()}"
        urls = (a.url(), down, down)  # spare has no model (not probed); b is refused at once
        text = config_text(tmp_path / "state.json", urls=urls, a_extra=", timeouts: {total: 0.2}")
        path = write(tmp_path, text)
        code = await live_check(path)
    out, _ = capsys.readouterr()
    assert code == 1
    assert "provider a did not answer a tiny request: timed out (total): " in out
    assert "no complete answer within 0.2 s" in out


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            AuthFailed(f"Incorrect API key provided: {SECRET}", status=401),
            "authentication failed (HTTP 401): 'Incorrect API key provided: ***'",
        ),
        (Overloaded("try later", status=529), "HTTP 529 (overloaded): 'try later'"),
    ],
)
def test_a_provider_quoting_the_key_never_gets_it_printed(
    tmp_path: Path, error: ProviderError, expected: str
) -> None:
    config = parse_config(config_text(tmp_path / "s.json", a_extra=", api_key_env: CHECK_A_KEY"))
    why = config.explain_failure("a", error, within=15.0, env={"CHECK_A_KEY": SECRET})
    assert why.startswith(expected)
    assert SECRET not in why
