"""What the three sides of the approvals benchmark share (standard library only, so that the
Trellis side and the other virtualenv import the same file): driving the requests with one or
more client processes, the wall time, and the CPU used by the clients and by their PostgreSQL
backends (read from /proc: unlike wall time, CPU time is not inflated by other work on a shared
machine). Each side prints one JSON object on its last line of output.
"""

import json
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """CPU seconds a PostgreSQL backend on this machine has used."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client(
    drive: Callable[[Sequence[Any]], None],
    backend_pid: Callable[[], int],
    items: Sequence[Any],
    results: Any,
) -> None:
    pid = backend_pid()  # a connection of this process's own
    cpu, pg = own_cpu(), backend_cpu(pid)
    drive(items)
    results.put((own_cpu() - cpu, backend_cpu(pid) - pg))


def run(
    drive: Callable[[Sequence[Any]], None],
    backend_pid: Callable[[], int],
    close: Callable[[], None],
    items: Sequence[Any],
    clients: int,
) -> dict[str, Any]:
    """Drive ``items`` (one request each) to their end: in this process when ``clients`` is
    1, else in as many forked processes, each with its share and its own connection.
    ``backend_pid`` opens the caller's connection if needed and returns its backend's pid;
    ``close`` closes it (a connection is not shared across a fork)."""
    if clients == 1:
        pid = backend_pid()
        cpu, pg = own_cpu(), backend_cpu(pid)
        started = time.perf_counter()
        drive(items)
        seconds = time.perf_counter() - started
        client_cpu, pg_cpu = own_cpu() - cpu, backend_cpu(pid) - pg
    else:
        close()
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        shares = [items[i::clients] for i in range(clients)]
        processes = [
            context.Process(target=_client, args=(drive, backend_pid, share, results))
            for share in shares
        ]
        started = time.perf_counter()
        for process in processes:
            process.start()
        used = [results.get() for _ in processes]
        for process in processes:
            process.join()
        seconds = time.perf_counter() - started
        if any(process.exitcode for process in processes):
            raise SystemExit("a client process failed")
        client_cpu = sum(c for c, _ in used)
        pg_cpu = sum(p for _, p in used)
    count = len(items)
    return {
        "requests": count,
        "clients": clients,
        "seconds": round(seconds, 2),
        "requests_per_second": round(count / seconds, 1),
        "cpu_ms_per_request": {
            "client": round(1000 * client_cpu / count, 2),
            "postgresql": round(1000 * pg_cpu / count, 2),
            "total": round(1000 * (client_cpu + pg_cpu) / count, 2),
        },
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def report(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)
