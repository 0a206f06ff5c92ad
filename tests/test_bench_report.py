"""The gateway benchmark's arithmetic: medians over interleaved rounds and the verdict lines.

The benchmark itself runs by hand (it needs wrk and minutes of quiet machine); what it prints
from its measurements is checked here on measurements written out by hand.
"""

from __future__ import annotations

from tests.bench import hot_path
from tests.bench.gateway import Report, Result, median_of_rounds, verdicts, with_added


def row(system: str, p50: float, rps: float, *, conc: int = 1, errors: int = 0) -> Result:
    return Result(
        system=system,
        concurrency=conc,
        requests=1000,
        rps=rps,
        p50_ms=p50,
        p99_ms=p50 * 3,
        errors=errors,
        cpu_ms_per_req=None if system == "direct" else p50,
    )


def test_medians_are_taken_per_system_from_each_rounds_own_added_figures() -> None:
    rounds = [
        with_added([row("direct", 0.3, 3000), row("gateway", 1.2, 600)]),
        with_added([row("direct", 0.5, 2500), row("gateway", 1.3, 550, errors=2)]),  # noisy
        with_added([row("direct", 0.3, 3100), row("gateway", 1.1, 650)]),
    ]
    rows = {r.system: r for r in median_of_rounds(rounds)}
    gateway = rows["gateway"]
    # added per round: 0.9, 0.8, 0.8 -> median 0.8 (not 1.2 - 0.3 from the median p50s)
    assert abs(gateway.added_p50_ms - 0.8) < 1e-9  # type: ignore[operator]
    assert gateway.p50_ms == 1.2
    assert gateway.rps == 600
    assert gateway.errors == 2  # errors of every round count
    assert gateway.requests == 3000
    assert rows["direct"].added_p50_ms is None
    assert rows["direct"].cpu_ms_per_req is None


def test_verdicts_check_the_issue_targets() -> None:
    report = Report(peak_rss_mb={"gateway": 70.0}, added_p50_rounds={"gateway@1": [1.2, 0.9]})
    report.results = [
        *with_added(
            [row("direct", 0.3, 3000), row("passthrough", 1.0, 800), row("gateway", 1.5, 600)]
        ),
        row("passthrough", 4.0, 2000, conc=10),
        row("passthrough/uvloop", 3.5, 2400, conc=10),
        row("gateway", 7.0, 1100, conc=10),
    ]
    lines = list(verdicts(report))
    assert lines[0] == "target added p50 <= 1 ms at c=1: 1.20 ms (MISSED)"
    assert lines[1] == "  (the median of rounds at 1.20, 0.90 ms)"
    assert "floor alone adds 0.70 ms" in lines[2]
    assert lines[3] == "target throughput within 2x of pass-through at c=10: 1.82x (met)"
    assert "uvloop, the gateway's own loop: 2.18x" in lines[4]
    assert lines[5] == "target peak RSS <= 150 MB: 70 MB (met)"


async def test_the_hot_path_benchmark_serves_every_request_through_the_runtime() -> None:
    """The in-process benchmark runs `failover serve`'s handler and runtime end to end (any
    answer but a 200 raises), so a change that breaks it shows here rather than when someone
    next wants a measurement."""
    times = await hot_path.run(requests=50, repeats=2, profile=0)
    assert len(times) == 2
    assert all(t > 0 for t in times)
