"""Benchmark: instructions executed per proxied request, counted by valgrind (callgrind).

    python -m tests.bench.instructions [--requests 600] [--concurrency 10] [--json]
                                       [--systems passthrough gateway translated gateway+otlp]
                                       [--keep DIR]

Wall-clock figures from :mod:`tests.bench.gateway` move by 10-20% between runs on a shared box,
which hides the effect of most single changes. The number of instructions a proxy executes per
request barely moves, whatever else the machine is doing: about 2% between runs of one commit
(timers fire at different points of a run slowed 50x; hash seeds differ): differences under
about 3% are noise. That makes this the A/B measure for work on the gateway's per-request cost;
the gateway benchmark remains the one that reports requests/s and latency.

How: the fake provider runs natively; the pass-through floor (:mod:`tests.bench.passthrough`),
the gateway (``failover serve``, same config as the gateway benchmark, telemetry on: an OpenAI
client and an OpenAI-format provider, the same-format route) and ``translated`` (the same
gateway with an Anthropic-format provider: the cross-format route) and, when asked for,
``gateway+otlp`` (the gateway with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at
:mod:`tests.bench.otlp_sink`: every request traced and exported, issue 17) each run under
``valgrind --tool=callgrind``. Each gets 200 warm-up requests, then its counters
are zeroed (``callgrind_control -z``), ``--requests`` requests are sent from an aiohttp client at
``--concurrency``, and the counters are dumped (``callgrind_control -d``). Reported: instructions
per request for each, and their ratio. Only the proxy's own process is counted (not the kernel:
socket system calls cost the same for both and are not instructions of the process).

``--keep DIR`` copies the measured dumps there: ``callgrind_annotate --inclusive=yes
DIR/callgrind.gateway.out.*`` then ranks the interpreter's C functions (dict and attribute
lookups, ``object.__setattr__`` of frozen dataclasses, orjson, the event loop's C parts) by what
the requests spent in them, which is where a Python-level profile cannot look.

Needs ``valgrind`` (Debian package). Under valgrind Python runs ~50x slower: about two minutes
per system with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.gateway import (
    API_KEY,
    BODY,
    GATEWAY_YAML,
    MODEL,
    System,
    clean_env,
    free_port,
    start_fake,
    start_otlp_sink,
    stop,
    wait_ready,
)

WARMUP_REQUESTS = 200


@dataclass(frozen=True, slots=True)
class Count:
    system: str
    requests: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


async def drive(url: str, *, requests: int, concurrency: int) -> int:
    """Send ``requests`` chat requests, ``concurrency`` at a time; returns how many were 200."""
    body = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    left, ok = requests, 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left, ok
        while left > 0:
            left -= 1
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
                ok += reply.status == 200

    async with aiohttp.ClientSession() as session:
        workers = (worker(session) for _ in range(concurrency))
        await asyncio.wait_for(asyncio.gather(*workers), timeout=1800)
    return ok


def start_under_callgrind(name: str, cmd: list[str], tmp: Path, env: dict[str, str]) -> System:
    port = free_port()
    out = tmp / f"callgrind.{name}.out"
    full = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd, str(port)]
    system = System(name=name, url=f"http://127.0.0.1:{port}", command=" ".join(full))
    log = tmp / f"{name}.log"
    with log.open("wb") as sink:
        system.proc = subprocess.Popen(
            full, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    wait_ready(system, within=600, log=log)
    return system


def count(system: System, *, requests: int, concurrency: int, tmp: Path) -> Count:
    assert system.proc is not None
    url = system.url + "/v1/chat/completions"
    pid = str(system.proc.pid)
    print(f"[instructions] {system.name}: warm-up", file=sys.stderr, flush=True)
    asyncio.run(drive(url, requests=WARMUP_REQUESTS, concurrency=concurrency))
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    print(f"[instructions] {system.name}: {requests} requests", file=sys.stderr, flush=True)
    ok = asyncio.run(drive(url, requests=requests, concurrency=concurrency))
    if ok != requests:
        raise RuntimeError(f"{system.name}: only {ok} of {requests} requests answered 200")
    before = set(tmp.glob(f"callgrind.{system.name}.out*"))
    subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    return Count(system.name, requests, _dumped_total(tmp, system.name, before))


def _dumped_total(tmp: Path, name: str, before: set[Path]) -> int:
    """The instruction total of the dump ``callgrind_control -d`` just wrote."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in set(tmp.glob(f"callgrind.{name}.out*")) - before:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.5)
    raise RuntimeError(f"no callgrind dump for {name}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=("passthrough", "gateway", "translated", "gateway+otlp"),
        default=["passthrough", "gateway", "translated"],
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the callgrind dumps here")
    args = parser.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt-get install -y valgrind)")
    counts: list[Count] = []
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as name:
        tmp = Path(name)
        fake = start_fake(tmp)
        sink = start_otlp_sink(tmp) if "gateway+otlp" in args.systems else None
        try:
            floor = [sys.executable, "-m", "tests.bench.passthrough", "--upstream", fake.url]
            text = GATEWAY_YAML.format(
                upstream=fake.url,
                model=MODEL,
                state=tmp / "state.json",
                port=free_port(),  # replaced by --port
                admin_port=free_port(),
            )
            # The same OpenAI client request served by an Anthropic-format provider: decoded,
            # translated, and the answer encoded back (the cross-format route).
            openai_provider = f'kind: openai, base_url: "{fake.url}/v1"'
            assert openai_provider in text
            translated = text.replace(openai_provider, f'kind: anthropic, base_url: "{fake.url}"')
            serve = [sys.executable, "-m", "controller.cli", "serve", "--config"]
            chosen = {"passthrough": floor}
            chosen["gateway+otlp"] = [*serve, str(tmp / "gateway.yaml")]
            for system_name, config_text in (("gateway", text), ("translated", translated)):
                config = tmp / f"{system_name}.yaml"
                config.write_text(config_text)
                chosen[system_name] = [*serve, str(config)]
            env = clean_env(BENCH_UPSTREAM_KEY=API_KEY)  # no client auth, as in .gateway
            for system_name in args.systems:
                cmd = chosen[system_name]
                exported = dict(env)
                if sink is not None and system_name == "gateway+otlp":
                    exported["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
                system = start_under_callgrind(system_name, [*cmd, "--port"], tmp, exported)
                try:
                    counts.append(
                        count(system, requests=args.requests, concurrency=args.concurrency, tmp=tmp)
                    )
                finally:
                    stop(system)
        finally:
            if sink is not None:
                stop(sink)
            stop(fake)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in tmp.glob("callgrind.*.out*"):
                shutil.copy2(dump, args.keep / dump.name)
    _report(counts, args)


def _report(counts: list[Count], args: argparse.Namespace) -> None:
    by = {c.system: c for c in counts}
    floor = by.get("passthrough")
    ratios = {
        c.system: c.per_request / floor.per_request
        for c in counts
        if floor is not None and c is not floor
    }
    if args.json:
        doc: dict[str, Any] = {
            "counts": [asdict(c) | {"per_request": c.per_request} for c in counts]
        }
        doc |= {"ratio": ratios.get("gateway"), "ratios": ratios}
        print(json.dumps(doc | {"concurrency": args.concurrency}, indent=2))
        return
    for c in counts:
        print(f"{c.system:12} {c.per_request / 1e6:6.3f} M instructions per request")
    for name, ratio in ratios.items():
        print(f"{name} / pass-through: {ratio:.2f}x (concurrency {args.concurrency})")
    if "gateway" in by and "gateway+otlp" in by:  # issue 17's target: at most 1.3x
        traced = by["gateway+otlp"].per_request / by["gateway"].per_request
        print(f"gateway+otlp / gateway: {traced:.2f}x (concurrency {args.concurrency})")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
