"""``python -m benchmarks``: run every system on the same files, one after the other, and report.

``run`` generates (or reuses, from ``--workdir``) Avito-shaped Parquet for each ``--scale``, then
runs every system of ``--systems`` in a fresh subprocess, ``--repeat`` times (round robin: one
run of each system, then the next round), sampling the resident memory of the subprocess and all
its descendants (driver JVM and Python workers for Spark) every 0.2 s. Medians over the repeats
go to ``benchmarks/results/<scale>.json`` (merged with the systems measured earlier), then
``RESULTS.md`` and ``time_vs_size.png`` are rendered (:mod:`benchmarks.report`). ``report``
re-renders them from the saved JSON.

Extras: ``--retail`` adds the UCI Online Retail II file as the scale ``retail`` (RFM),
``--retail-large`` a retail-shaped set of 10M+ lines (the real file tiled 20 times);
``--compare-cores`` times ``segmentation run`` at ``local[1]`` and ``local[2]``; ``--ingest``
times ``segmentation ingest`` of a generated SQLite database against ``sqlite3 -csv``.
Quality: the WSSSE of ``segmentation`` at its chosen k against scikit-learn's best of 10 inits
on the same scaled features; agreement: every system's clustered features against
``segmentation``'s ``features/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from benchmarks import environment
from benchmarks.peers.common import CLUSTER_COLUMNS, SILHOUETTE_SAMPLE, STAGES

REPO = environment.REPO
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
SEGMENTATION = str(VENV_BIN / "segmentation")
RETAIL_FILE = REPO.parent / "shared" / "data" / "online_retail_II_2009-2010.csv.gz"

#: Searches per scale: about 3.5 stream rows per search (1m ~ 1M stream rows).
SCALES: Dict[str, int] = {
    "0.1m": 30_000, "1m": 300_000, "4.5m": 1_300_000, "10m": 2_900_000, "50m": 14_300_000,
}
#: Users ~ searches / 23, as the issue's 10M searches / 440k users.
SEARCHES_PER_USER = 23
SYSTEMS: Tuple[str, ...] = ("segmentation", "duckdb_sklearn", "pandas_sklearn", "seed_spark")
SAMPLE_SECONDS = 0.2
GENERATOR_SEED = 1


# ------------------------------------------------------------------------------ measuring


@dataclass
class Measurement:
    """One subprocess: wall seconds, peak memory of its process tree, CPU seconds, status."""

    wall_seconds: float
    peak_rss_mb: float  #: the whole tree (sum over processes at the same instant; see jvm_forks)
    peak_java_mb: float  #: the JVM(s) in the tree
    peak_driver_mb: float  #: the process started (the Python driver, or the peer)
    cpu_seconds: float  #: user + system of the tree (waited-for descendants)
    returncode: int
    load_average: Optional[float] = None
    #: Seconds the command's processes (a driver JVM) ran on after the command had returned.
    lingered_seconds: float = 0.0
    #: CPU seconds of the JVM(s) by thread group (:func:`jvm_thread_group`); Linux only.
    jvm_cpu_seconds: Dict[str, float] = field(default_factory=dict)


#: How long :func:`measure` waits for the processes a command leaves behind.
LINGER_TIMEOUT_SECONDS = 120.0

#: Every this many samples, :func:`measure` also reads the CPU time of each JVM thread.
THREAD_SAMPLE_EVERY = 5

#: JVM thread groups, by the start of the thread's name (``/proc/PID/task/TID/comm``, at most
#: 15 characters), in report order.
JVM_THREAD_GROUPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("tasks", ("Executor task l",)),
    ("jit_c2", ("C2 CompilerThre",)),
    ("jit_c1", ("C1 CompilerThre",)),
    ("driver_calls", ("Thread-",)),  # py4j's threads: the driver's code, called from Python
    ("scheduler", ("dag-scheduler", "dispatcher-", "task-result-get", "spark-listener",
                   "Spark Context C", "rpc-", "netty-")),
    ("gc", ("GC Thread", "G1 ", "VM Thread")),
)


def jvm_thread_group(name: str) -> str:
    """The group of a JVM thread of this name in :data:`JVM_THREAD_GROUPS`, else ``other``.

    ``Thread-N`` are the threads py4j runs Python's calls on: MLlib's driver loops, query
    planning and job submission of the driver, as asked for from Python.
    """
    for group, prefixes in JVM_THREAD_GROUPS:
        if name.startswith(prefixes):
            return group
    return "other"


def _thread_cpu(pid: int) -> Dict[int, Tuple[str, float]]:
    """Per thread of ``pid``: its group and its user + system CPU seconds (``{}`` off Linux)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    threads: Dict[int, Tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return threads
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        threads[int(tid)] = (jvm_thread_group(name), (int(fields[11]) + int(fields[12])) / tick)
    return threads


def _session_processes(session: int) -> List[Any]:
    """The live processes (psutil) of the session ``session``, whoever their parent is now.

    Zombies are not live: an orphan that has exited waits for init to reap it (here up to ~2 s).
    """
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            continue
    return found


def jvm_forks(tree: Sequence[Any]) -> Set[int]:
    """The pids in ``tree`` that are a JVM's child not yet turned into another program.

    A JVM starts a program (Hadoop's local file system runs ``chmod`` for every file it writes)
    by forking: for an instant the child is a copy of the JVM, named after the forking thread
    (``Executor task l``), with the JVM's executable and an RSS equal to the JVM's, every page
    shared with it. Summing its RSS counted the JVM twice: a demo run's tree peaked at 2.2-2.5 GB
    in some samples and at 1.2-1.8 GB in others. ``tree`` holds psutil processes (or objects
    with ``pid``, ``ppid()``, ``name()`` and ``exe()``); processes gone meanwhile are skipped.
    """
    import psutil

    executables: Dict[int, str] = {}
    javas: Set[int] = set()
    for process in tree:
        try:
            executables[process.pid] = process.exe()
            if "java" in process.name():
                javas.add(process.pid)
        except psutil.Error:
            continue
    forks = set()
    for process in tree:
        try:
            parent = process.ppid()
        except psutil.Error:
            continue
        if parent in javas and process.pid not in javas and (
            executables.get(process.pid) == executables.get(parent)
        ):
            forks.add(process.pid)
    return forks


def measure(command: Sequence[str], log_path: Path, timeout: float,
            env: Optional[Dict[str, str]] = None) -> Measurement:
    """Run ``command`` in its own session, sampling the RSS of its process tree every 0.2 s.

    stdout and stderr go to ``log_path``. After ``timeout`` seconds the session is terminated
    (SIGTERM, then SIGKILL) and the return code is negative. The wall time ends when the
    command returns; then the processes it left in its session are waited for (a local-mode
    driver JVM outlives PySpark's Python by ~0.4 s, running its shutdown hooks), so that one
    run's teardown never competes with the next run: ``lingered_seconds``, and their CPU is
    counted. A JVM's threads are read every :data:`THREAD_SAMPLE_EVERY` samples (~1 s), so a
    thread's CPU after its last sample is not in ``jvm_cpu_seconds``.
    """
    import psutil

    log_path.parent.mkdir(parents=True, exist_ok=True)
    load = environment.load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = peak_java = peak_driver = 0
    cpu_seen: Dict[int, float] = {}  # per process: user + system seconds, last sample
    threads_seen: Dict[Tuple[int, int], Tuple[str, float]] = {}  # (JVM pid, tid): last sample
    java_pids: Set[int] = set()

    def sample_threads() -> None:
        for pid in java_pids:
            for tid, entry in _thread_cpu(pid).items():
                threads_seen[(pid, tid)] = entry

    with log_path.open("wb") as log:
        log.write(("$ " + shlex.join(command) + "\n").encode())
        log.flush()
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env=env, start_new_session=True)
        root = psutil.Process(proc.pid)
        samples = 0
        while proc.poll() is None:
            total = java = driver = 0
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            forks = jvm_forks(tree)
            for process in tree:
                if process.pid in forks:
                    continue
                try:
                    rss = process.memory_info().rss
                    name = process.name()
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                cpu_seen[process.pid] = times.user + times.system
                total += rss
                if "java" in name:
                    java_pids.add(process.pid)
                if process.pid == proc.pid:
                    driver = rss
                elif "java" in name:
                    java += rss
            peak, peak_java, peak_driver = max(peak, total), max(peak_java, java), max(
                peak_driver, driver)
            samples += 1
            if samples % THREAD_SAMPLE_EVERY == 0:
                sample_threads()
            if time.perf_counter() - started > timeout:
                _stop(proc)
                break
            time.sleep(SAMPLE_SECONDS)
        proc.wait()
        wall = time.perf_counter() - started
        returned = time.perf_counter()
        while True:
            left = _session_processes(proc.pid)
            for process in left:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                cpu_seen[process.pid] = times.user + times.system
            sample_threads()
            if not left:
                break
            if time.perf_counter() - returned > LINGER_TIMEOUT_SECONDS:
                _stop(proc)
                break
            time.sleep(SAMPLE_SECONDS)
        lingered = time.perf_counter() - returned
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Waited-for descendants are in RUSAGE_CHILDREN; a JVM left to init is not: take the larger
    # of that and the sum of the last CPU times sampled per process.
    cpu = max((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
              sum(cpu_seen.values()))
    by_group: Dict[str, float] = {}
    for group, seconds in threads_seen.values():
        by_group[group] = by_group.get(group, 0.0) + seconds
    mb = 1 / 2**20
    return Measurement(round(wall, 3), round(peak * mb, 1), round(peak_java * mb, 1),
                       round(peak_driver * mb, 1), round(cpu, 2), proc.returncode, load,
                       round(lingered, 2), {g: round(v, 2) for g, v in by_group.items()})


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the session this harness started for ``proc`` (by its process group id)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------------ data


@dataclass
class Dataset:
    """One input every system reads."""

    scale: str
    source: str  #: ``avito`` or ``retail``
    path: str
    rows: int  #: stream rows (Avito) or invoice lines (retail): the x axis of the plot
    details: Dict[str, Any] = field(default_factory=dict)


def _parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(str(part)).metadata.num_rows
               for part in sorted(folder.rglob("*.parquet")))


def avito_dataset(scale: str, workdir: Path, fmt: str = "parquet") -> Dataset:
    """Generated Avito data for ``scale`` (reused when ``workdir`` already holds it)."""
    searches = SCALES[scale]
    users = max(1, searches // SEARCHES_PER_USER)
    want = {"users": users, "searches": searches, "seed": GENERATOR_SEED, "format": fmt}
    target = workdir / "data" / (f"avito-{scale}" + (".sqlite" if fmt == "sqlite" else ""))
    marker = workdir / "data" / f"avito-{scale}.{fmt}.json"
    if marker.is_file() and target.exists():
        info = json.loads(marker.read_text())
        if all(info.get(k) == v for k, v in want.items()):
            print(f"reusing {target}", flush=True)
            return Dataset(scale, "avito", str(target), int(info["stream_rows"]), info)
    print(f"generating {target}: {searches:,} searches, {users:,} users ({fmt})", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [SEGMENTATION, "generate", "avito", "--users", str(users), "--searches", str(searches),
         "--format", fmt, "--out", str(target), "--seed", str(GENERATOR_SEED)],
        check=True, cwd=REPO,
    )
    if fmt == "parquet":
        stream_rows = _parquet_rows(target / "trainSearchStream")
    else:
        import sqlite3

        with sqlite3.connect(str(target)) as con:
            stream_rows = con.execute("SELECT count(*) FROM trainSearchStream").fetchone()[0]
    info = {**want, "stream_rows": stream_rows,
            "generate_seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(info, indent=2))
    return Dataset(scale, "avito", str(target), stream_rows, info)


def retail_dataset() -> Dataset:
    """The real UCI Online Retail II 2009-2010 file."""
    import gzip

    if not RETAIL_FILE.is_file():
        raise SystemExit(f"--retail: {RETAIL_FILE} is missing (see ../shared/data/README)")
    with gzip.open(RETAIL_FILE, "rb") as handle:
        lines = sum(1 for _ in handle) - 1
    return Dataset("retail", "retail", str(RETAIL_FILE), lines,
                   {"file": RETAIL_FILE.name, "lines": lines})


#: The sample the demo ships (``scripts/demo.sh``), run as the demo runs it: k = 3..6.
DEMO_FILE = REPO / "data" / "sample" / "online_retail_II_sample.csv.gz"
DEMO_K = "3-6"


def demo_dataset() -> Dataset:
    """The demo's retail sample (262 customers), with the demo's k range (``--demo``)."""
    import gzip

    with gzip.open(DEMO_FILE, "rb") as handle:
        lines = sum(1 for _ in handle) - 1
    return Dataset("demo", "retail", str(DEMO_FILE), lines,
                   {"file": str(DEMO_FILE.relative_to(REPO)), "lines": lines, "k": DEMO_K})


def data_k(data: Dataset, args: argparse.Namespace) -> str:
    """The k range of a run: the dataset's own (the demo's 3-6) or ``--k``."""
    return str(data.details.get("k") or args.k)


#: Copies of the real retail file in the retail-shaped large set (``--retail-large``).
RETAIL_COPIES = 20


def retail_large_dataset(workdir: Path) -> Dataset:
    """A retail-shaped set of 10M+ lines: the real file tiled :data:`RETAIL_COPIES` times.

    Copy ``c`` has its own customers (``Customer ID + c * 100000``) and invoices
    (``Invoice-c``, cancellations keep their ``C`` prefix); dates, products and prices are the
    real ones. Written once by DuckDB as ``retail-10m.csv.gz`` (reused from ``workdir``).
    """
    import duckdb

    target = workdir / "data" / "retail-10m.csv.gz"
    marker = workdir / "data" / "retail-10m.json"
    if marker.is_file() and target.is_file():
        info = json.loads(marker.read_text())
        if info.get("copies") == RETAIL_COPIES:
            print(f"reusing {target}", flush=True)
            return Dataset("retail-10m", "retail", str(target), int(info["lines"]), info)
    if not RETAIL_FILE.is_file():
        raise SystemExit(f"--retail-large: {RETAIL_FILE} is missing (see ../shared/data/README)")
    print(f"generating {target}: {RETAIL_COPIES} copies of {RETAIL_FILE.name}", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"""
        COPY (
            SELECT Invoice || '-' || c AS Invoice, StockCode, Description, Quantity, InvoiceDate,
                   Price,
                   CAST(CAST(TRY_CAST("Customer ID" AS DOUBLE) AS BIGINT) + c * 100000
                        AS VARCHAR) AS "Customer ID",
                   Country
            FROM read_csv('{RETAIL_FILE}', header = true, all_varchar = true),
                 range({RETAIL_COPIES}) AS copies(c)
        ) TO '{target}' (HEADER, DELIMITER ',', COMPRESSION gzip)
    """)
    counted = con.execute(
        f"SELECT count(*) FROM read_csv('{target}', header = true, all_varchar = true)"
    ).fetchone()
    assert counted is not None  # a count always has a row
    lines = int(counted[0])
    info = {"copies": RETAIL_COPIES, "source_file": RETAIL_FILE.name, "lines": lines,
            "generate_seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(info, indent=2))
    return Dataset("retail-10m", "retail", str(target), lines, info)


# ------------------------------------------------------------------------------ systems


def group_manifest_stages(
    timings: Dict[str, float], concurrent: Optional[Dict[str, str]] = None
) -> Dict[str, float]:
    """Map ``segmentation``'s manifest stages onto features / k_sweep / final_fit_and_writes.

    A stage that ran beside another (``concurrent``: the manifest's ``concurrent_stages``) is
    inside that one's seconds and is not added again.
    """
    grouped = dict.fromkeys(STAGES, 0.0)
    for name, seconds in timings.items():
        if name == "total" or name in (concurrent or {}):
            continue
        if "sweep" in name:
            grouped["k_sweep"] += seconds
        elif any(word in name for word in ("read", "aggregate", "feature")):
            grouped["features"] += seconds
        else:
            grouped["final_fit_and_writes"] += seconds
    return {k: round(v, 3) for k, v in grouped.items()}


def segmentation_command(data: Dataset, out: Path, k: str, master: Optional[str]) -> List[str]:
    """``segmentation run`` as a user types it."""
    command = [SEGMENTATION, "run", "--source", data.source, "--input", data.path,
               "--output", str(out), "--k", k, "--overwrite"]
    return command + (["--master", master] if master else [])


def published_run(out: Path) -> Path:
    """The run folder ``out/LATEST`` names (``out`` itself for another system's output)."""
    latest = out / "LATEST"
    return out / json.loads(latest.read_text())["path"] if latest.exists() else out


def segmentation_result(out: Path) -> Dict[str, Any]:
    """Stages, chosen k, WSSSE at it and customers, from a finished run's output folder."""
    out = published_run(out)
    manifest = json.loads((out / "manifest.json").read_text())
    timings = {k: float(v) for k, v in manifest.get("timings_seconds", {}).items()}
    selection = json.loads((out / "k_selection.json").read_text())
    chosen = selection.get("chosen_k")
    wssse = next((r.get("wssse") for r in selection.get("results", []) if r.get("chosen")),
                 None)
    return {
        "stages": group_manifest_stages(timings, manifest.get("concurrent_stages")),
        "manifest_stages": {k: v for k, v in timings.items() if k != "total"},
        "chosen_k": chosen,
        "wssse": wssse,
        "customers": manifest.get("customers", {}).get("kept"),
        "sample_fraction": manifest.get("clustering", {}).get("sample_fraction"),
    }


def peer_command(system: str, data: Dataset, out: Path, k: str, result_file: Path,
                 silhouette: str) -> List[str]:
    """``python -m benchmarks.peers.<system> ...``."""
    return [sys.executable, "-m", f"benchmarks.peers.{system}", "--source", data.source,
            "--input", data.path, "--output", str(out), "--k", k, "--result", str(result_file),
            "--silhouette", silhouette]


def run_once(system: str, data: Dataset, args: argparse.Namespace, repeat: int,
             master: Optional[str] = None, cpus: Optional[str] = None) -> Dict[str, Any]:
    """Run ``system`` once on ``data`` in a fresh subprocess; its measurement and result.

    ``cpus`` (a ``taskset -c`` list such as ``"0"``) pins the whole process tree, JVM and Python
    workers, to those CPUs.
    """
    label = system + (f"-{master.replace('[', '').replace(']', '')}" if master else "")
    label += f"-cpu{cpus.replace(',', '_')}" if cpus else ""
    out = args.workdir / "out" / data.scale / label
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result_file = args.workdir / "out" / data.scale / f"{label}.result.json"
    result_file.unlink(missing_ok=True)
    if system == "segmentation":
        command = segmentation_command(data, out, data_k(data, args), master)
    else:
        command = peer_command(system, data, out, data_k(data, args), result_file,
                               args.peer_silhouette)
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    log = args.workdir / "logs" / data.scale / f"{label}-{repeat}.log"
    print(f"  [{data.scale}] {label} run {repeat}: ", end="", flush=True)
    m = measure(command, log, args.timeout)
    run: Dict[str, Any] = {**asdict(m), "output": str(out), "code": environment.code_state()}
    if m.returncode != 0:
        run["error"] = _tail(log)
        print(f"FAILED (exit {m.returncode}), see {log}", flush=True)
        return run
    if system == "segmentation":
        run.update(segmentation_result(out))
    else:
        peer = json.loads(result_file.read_text())
        run.update({key: peer.get(key) for key in ("stages", "chosen_k", "wssse", "customers",
                                                   "silhouette", "silhouette_seconds")})
    run["startup_and_other"] = round(m.wall_seconds - sum((run.get("stages") or {}).values()), 3)
    print(f"{m.wall_seconds:.1f} s, peak {m.peak_rss_mb:,.0f} MB, k={run.get('chosen_k')}, "
          f"load {m.load_average}", flush=True)
    return run


def _tail(log: Path, lines: int = 8) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Medians over the successful runs (wall, stages, memory, CPU); the last run's choice."""
    ok = [r for r in runs if r.get("returncode") == 0]
    if not ok:
        return {"failed": True, "runs": len(runs), "error": runs[-1].get("error", "")}
    stage_names = {name for r in ok for name in (r.get("stages") or {})}
    manifest_names = {name for r in ok for name in (r.get("manifest_stages") or {})}
    summary: Dict[str, Any] = {
        "runs": len(ok),
        "failed_runs": len(runs) - len(ok),
        **{key: _median([r.get(key) for r in ok]) for key in (
            "wall_seconds", "peak_rss_mb", "peak_java_mb", "peak_driver_mb", "cpu_seconds",
            "startup_and_other", "silhouette_seconds", "lingered_seconds")},
        "wall_seconds_all": [r["wall_seconds"] for r in ok],
        "stages": {s: _median([(r.get("stages") or {}).get(s) for r in ok])
                   for s in sorted(stage_names)},
        "chosen_k": ok[-1].get("chosen_k"),
        "chosen_k_all": [r.get("chosen_k") for r in ok],
        "wssse": ok[-1].get("wssse"),
        "customers": ok[-1].get("customers"),
        "load_average": _median([r.get("load_average") for r in ok]),
    }
    codes = [r["code"] for r in ok if r.get("code")]
    if codes:  # others edit segmentation/ while benchmarks run: say which code each run timed
        summary["code"] = codes[-1]
        distinct = {json.dumps(c, sort_keys=True) for c in codes}
        if len(distinct) > 1:
            summary["code_changed_between_runs"] = [c.get("segmentation_uncommitted") or
                                                    c.get("commit") for c in codes]
    if manifest_names:
        summary["manifest_stages"] = {
            s: _median([(r.get("manifest_stages") or {}).get(s) for r in ok])
            for s in sorted(manifest_names)}
    groups = {g for r in ok for g in (r.get("jvm_cpu_seconds") or {})}
    if groups:
        summary["jvm_cpu_seconds"] = {
            g: _median([(r.get("jvm_cpu_seconds") or {}).get(g, 0.0) for r in ok])
            for g in [name for name, _ in JVM_THREAD_GROUPS] + ["other"] if g in groups}
    if ok[-1].get("silhouette"):
        summary["silhouette"] = ok[-1]["silhouette"]
    return summary


# ------------------------------------------------------------------------------ checks


def _read_features(folder: Path, columns: Sequence[str]) -> Any:
    import pandas as pd
    import pyarrow.parquet as pq

    table = pq.read_table(str(folder), columns=["customer_id", *columns]).to_pandas()
    table["customer_id"] = table["customer_id"].astype(str)
    return table.set_index("customer_id").sort_index().astype({c: "float64" for c in columns}) \
        if len(table) else pd.DataFrame(columns=columns)


def quality(segmentation_out: Path, source: str, chosen_k: int, wssse: float) -> Dict[str, Any]:
    """``segmentation``'s WSSSE at k against scikit-learn's best of 10 inits, same features."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans

    from benchmarks.peers.common import log_standardise

    columns = list(CLUSTER_COLUMNS[source])
    run = published_run(segmentation_out)
    features = _read_features(run / "features", columns)
    x = log_standardise(features[columns].to_numpy())
    # The final model's WSSSE over everyone, from its assignments (the sweep's value is the
    # sample's when the sweep ran on a sample).
    assigned = pq.read_table(str(run / "assignments"), columns=["customer_id", "cluster"])
    clusters = assigned.to_pandas().astype({"customer_id": str}).set_index("customer_id")
    labels = clusters.loc[features.index, "cluster"].to_numpy()
    final = float(sum(((x[labels == c] - x[labels == c].mean(axis=0)) ** 2).sum()
                      for c in np.unique(labels)))
    started = time.perf_counter()
    best = KMeans(n_clusters=chosen_k, n_init=10, random_state=0).fit(x)
    return {
        "k": chosen_k,
        "customers": len(x),
        "sweep_wssse": wssse,
        "segmentation_wssse": final,
        "sklearn_best_of_10_wssse": float(best.inertia_),
        "ratio": float(final / best.inertia_) if best.inertia_ else None,
        "sklearn_seconds": round(time.perf_counter() - started, 2),
        "sklearn_sizes": sorted(np.bincount(best.labels_).tolist(), reverse=True),
    }


def agreement(reference: Path, outputs: Dict[str, Path], source: str) -> Dict[str, Any]:
    """Each system's clustered features against ``segmentation``'s ``features/``."""
    import numpy as np

    columns = list(CLUSTER_COLUMNS[source])
    ref = _read_features(published_run(reference) / "features", columns)
    found: Dict[str, Any] = {}
    for system, out in outputs.items():
        try:
            other = _read_features(published_run(out) / "assignments", columns)
        except Exception as error:  # a failed or missing output: say so, go on
            found[system] = {"error": str(error)[:200]}
            continue
        same_ids = bool(len(other) == len(ref) and (other.index == ref.index).all())
        entry: Dict[str, Any] = {"customers": len(other), "same_customers": same_ids}
        if same_ids:
            diff = np.abs(other[columns].to_numpy() - ref[columns].to_numpy())
            scale = np.maximum(np.abs(ref[columns].to_numpy()), 1.0)
            entry["max_abs_diff"] = {c: float(diff[:, i].max()) for i, c in enumerate(columns)}
            entry["equal"] = bool((diff / scale).max() < 1e-9)
        else:
            entry["equal"] = False
        found[system] = entry
    return found


def check_peer_rules() -> None:
    """The peers' copies of the project's constants must still equal them."""
    from benchmarks.peers import common
    from segmentation.sources.retail import NON_PRODUCT_STOCK_CODES

    if tuple(NON_PRODUCT_STOCK_CODES) != common.NON_PRODUCT_STOCK_CODES:
        raise SystemExit("benchmarks/peers/common.py: NON_PRODUCT_STOCK_CODES differ from "
                         "segmentation.sources.retail; update the copy")


# ------------------------------------------------------------------------------ extras


def compare_cores(data: Dataset, args: argparse.Namespace) -> Dict[str, Any]:
    """``segmentation run`` at local[1] and local[2], medians over ``--repeat``.

    ``local[1]`` runs one task at a time, but its JVM still compiles, collects garbage and
    plans on the other core; ``local[1] on 1 CPU`` (``taskset -c 0``) confines the whole process
    to one core, which is what "one core against two" means for a machine's throughput. Both
    speed-ups are reported.
    """
    configurations = (("local[1]", None), ("local[1] on 1 CPU", "0"), ("local[2]", None))
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name, _ in configurations}
    for repeat in range(1, args.repeat + 1):
        for name, cpus in configurations:
            master = name.split(" ")[0]
            runs[name].append(run_once("segmentation", data, args, repeat, master, cpus))
    summary: Dict[str, Any] = {name: summarise(r) for name, r in runs.items()}
    one, pinned, two = (summary[name].get("wall_seconds") for name, _ in configurations)
    summary["speedup"] = round(one / two, 2) if one and two else None
    summary["speedup_one_cpu"] = round(pinned / two, 2) if pinned and two else None
    return summary


def ingest(scale: str, args: argparse.Namespace) -> Dict[str, Any]:
    """``segmentation ingest`` of the SQLite database against ``sqlite3 -csv`` of each table."""
    if shutil.which("sqlite3") is None:
        raise SystemExit("--ingest needs the sqlite3 command line: apt-get install -y sqlite3")
    data = avito_dataset(scale, args.workdir, fmt="sqlite")
    out = args.workdir / "out" / scale / "ingest"
    tables = ("trainSearchStream", "SearchInfo")
    spark_runs: List[Dict[str, Any]] = []
    csv_runs: Dict[str, List[float]] = {t: [] for t in tables}
    rows: Dict[str, int] = {}
    for repeat in range(1, args.repeat + 1):
        if out.exists():
            shutil.rmtree(out)
        command = [SEGMENTATION, "ingest", "--source", "avito", "--input", data.path,
                   "--output", str(out), "--overwrite"]
        print(f"  [{scale}] ingest run {repeat}: ", end="", flush=True)
        m = measure(command, args.workdir / "logs" / scale / f"ingest-{repeat}.log",
                    args.timeout)
        run: Dict[str, Any] = asdict(m)
        if m.returncode == 0:
            manifest = published_run(out) / "manifest.json"
            run["tables"] = json.loads(manifest.read_text()).get("tables", {})
        spark_runs.append(run)
        print(f"{m.wall_seconds:.1f} s, peak {m.peak_rss_mb:,.0f} MB", flush=True)
        for table in tables:
            target = args.workdir / "out" / scale / f"{table}.csv"
            started = time.perf_counter()
            with target.open("wb") as sink:
                subprocess.run(["sqlite3", "-csv", data.path, f"SELECT * FROM {table}"],
                               stdout=sink, check=True)
            csv_runs[table].append(time.perf_counter() - started)
            if table not in rows:
                with target.open("rb") as handle:
                    rows[table] = sum(1 for _ in handle)
            target.unlink()
            print(f"    sqlite3 -csv {table}: {csv_runs[table][-1]:.1f} s", flush=True)
    ok = [r for r in spark_runs if r.get("returncode") == 0]
    result: Dict[str, Any] = {
        "database_mb": round(Path(data.path).stat().st_size / 2**20, 1),
        "searches": data.details.get("searches"), "stream_rows": data.rows,
        "segmentation_wall_seconds": _median([r["wall_seconds"] for r in ok]),
        "segmentation_peak_rss_mb": _median([r["peak_rss_mb"] for r in ok]),
        "tables": {},
    }
    for table in tables:
        spark_rate = _median([r["tables"].get(table, {}).get("rows_per_second") for r in ok])
        spark_seconds = _median([r["tables"].get(table, {}).get("seconds") for r in ok])
        csv_seconds = _median(csv_runs[table])
        csv_rate = rows[table] / csv_seconds if csv_seconds else None
        result["tables"][table] = {
            "rows": rows.get(table),
            "partitions": ok[-1]["tables"].get(table, {}).get("partitions") if ok else None,
            "segmentation_seconds": spark_seconds,
            "segmentation_rows_per_second": spark_rate,
            "sqlite3_csv_seconds": round(csv_seconds, 3) if csv_seconds else None,
            "sqlite3_csv_rows_per_second": round(csv_rate) if csv_rate else None,
            "ratio": round(spark_rate / csv_rate, 2) if spark_rate and csv_rate else None,
        }
    return result


# ------------------------------------------------------------------------------ the command


_results_dir = RESULTS


def results_path(scale: str) -> Path:
    return _results_dir / f"{scale}.json"


def load_results(scale: str) -> Dict[str, Any]:
    path = results_path(scale)
    return json.loads(path.read_text()) if path.is_file() else {"scale": scale, "systems": {}}


def save_results(document: Dict[str, Any]) -> None:
    _results_dir.mkdir(parents=True, exist_ok=True)
    results_path(document["scale"]).write_text(json.dumps(document, indent=1) + "\n")


def _slim(summary: Dict[str, Any]) -> Dict[str, Any]:
    """Keep the JSON small: no output paths, no logs beyond a failure's tail."""
    return {k: v for k, v in summary.items() if k != "output"}


def bench_scale(data: Dataset, systems: Sequence[str], args: argparse.Namespace,
                invocation: str) -> None:
    """Every system on ``data``, ``--repeat`` rounds; the checks; results saved."""
    document = load_results(data.scale)
    now = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    document.update({
        "scale": data.scale, "source": data.source, "rows": data.rows, "data": data.details,
        "machine": environment.machine(), "versions": environment.versions(),
    })
    invocations = [i for i in document.get("invocations", []) if i != invocation]
    document["invocations"] = [*invocations, invocation][-5:]
    runs: Dict[str, List[Dict[str, Any]]] = {s: [] for s in systems}
    for repeat in range(1, args.repeat + 1):
        for system in systems:
            runs[system].append(run_once(system, data, args, repeat))
    code = environment.code_state()
    for system in systems:
        summary = summarise(runs[system])
        summary.setdefault("code", code)
        summary.update({"measured_at": now, "k": data_k(data, args),
                        "command": _display_command(system, data, args)})
        document.setdefault("systems", {})[system] = _slim(summary)
    outputs = {s: Path(r[-1]["output"]) for s, r in runs.items()
               if r and r[-1].get("returncode") == 0}
    seg = document["systems"].get("segmentation", {})
    if "segmentation" in outputs and not seg.get("failed"):
        if args.quality and seg.get("chosen_k") and seg.get("wssse"):
            print(f"  [{data.scale}] quality: scikit-learn best of 10 inits at "
                  f"k={seg['chosen_k']}", flush=True)
            document["quality"] = quality(outputs["segmentation"], data.source,
                                          int(seg["chosen_k"]), float(seg["wssse"]))
            if seg.get("sample_fraction"):
                document["quality"]["note"] = (
                    "the sweep ran on a sample (sweep_wssse is the sample's); "
                    "segmentation_wssse is the final model's over everyone")
        others = {s: p for s, p in outputs.items() if s != "segmentation"}
        if others:
            document.setdefault("agreement", {}).update(
                agreement(outputs["segmentation"], others, data.source))
    if args.compare_cores and data.source == "avito":
        document["cores"] = {**compare_cores(data, args), "measured_at": now, "code": code}
    save_results(document)


def _display_command(system: str, data: Dataset, args: argparse.Namespace) -> str:
    out = Path("OUT")
    if system == "segmentation":
        command = segmentation_command(data, out, data_k(data, args), None)
        command[0] = "segmentation"
    else:
        command = peer_command(system, data, out, data_k(data, args), Path("r.json"),
                               args.peer_silhouette)
        command[0] = "python"
    return shlex.join(command)


def run(args: argparse.Namespace, invocation: str) -> int:
    """``python -m benchmarks run``."""
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    scales = args.scale or ([] if args.retail or args.retail_large or args.demo else ["1m"])
    for scale in scales:
        if scale not in SCALES:
            raise SystemExit(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    check_peer_rules()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"systems {', '.join(systems)}; repeat {args.repeat}; workdir {args.workdir}",
          flush=True)
    for scale in scales:
        data = avito_dataset(scale, args.workdir)
        print(f"[{scale}] {data.rows:,} stream rows, {data.details['searches']:,} searches, "
              f"{data.details['users']:,} users", flush=True)
        if systems:
            bench_scale(data, systems, args, invocation)
        elif args.compare_cores:
            document = load_results(scale)
            document["cores"] = {**compare_cores(data, args), "code": environment.code_state()}
            save_results(document)
        if args.ingest:
            document = load_results(scale)
            document["ingest"] = {**ingest(scale, args), "code": environment.code_state(),
                                  "measured_at": dt.datetime.now().astimezone().isoformat(
                                      timespec="seconds")}
            save_results(document)
    if args.retail:
        data = retail_dataset()
        print(f"[retail] {data.rows:,} invoice lines ({RETAIL_FILE.name})", flush=True)
        bench_scale(data, systems, args, invocation)
    if args.demo:
        data = demo_dataset()
        print(f"[demo] {data.rows:,} invoice lines ({DEMO_FILE.name}, k = {DEMO_K})", flush=True)
        bench_scale(data, systems, args, invocation)
    if args.retail_large:
        data = retail_large_dataset(args.workdir)
        print(f"[retail-10m] {data.rows:,} invoice lines", flush=True)
        bench_scale(data, systems, args, invocation)
    if args.render:
        from benchmarks import report

        report.render(_results_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="measure the systems; write results, RESULTS.md, PNG")
    r.add_argument("--scale", action="append", choices=sorted(SCALES),
                   help="data size (repeatable): " + ", ".join(
                       f"{name} = {n:,} searches" for name, n in SCALES.items())
                   + "; default 1m")
    r.add_argument("--repeat", type=int, default=3, help="runs per system (median)")
    r.add_argument("--systems", default=",".join(SYSTEMS),
                   help="comma-separated, of " + ", ".join(SYSTEMS))
    r.add_argument("--workdir", type=Path, default=Path("/tmp/bench"),
                   help="generated data, outputs and logs (data is reused)")
    r.add_argument("--retail", action="store_true",
                   help=f"also the real UCI Online Retail II file ({RETAIL_FILE.name})")
    r.add_argument("--demo", action="store_true",
                   help="also the demo's 262-customer retail sample with the demo's k = 3-6 "
                        "(issue 11: under 15 s)")
    r.add_argument("--retail-large", action="store_true",
                   help=f"also a retail-shaped set of 10M+ lines ({RETAIL_COPIES} copies of the "
                        "real file with their own customers and invoices)")
    r.add_argument("--compare-cores", action="store_true",
                   help="also time segmentation run at local[1] and local[2] per scale")
    r.add_argument("--ingest", action="store_true",
                   help="also time segmentation ingest of a generated SQLite database "
                        "against `sqlite3 -csv` per table")
    r.add_argument("--k", default="2-10", help="k range of every system")
    r.add_argument("--peer-silhouette", choices=("sample", "exact"), default="sample",
                   help="sklearn peers' silhouette: silhouette_score(metric='sqeuclidean') on "
                        f"at most {SILHOUETTE_SAMPLE:,} points (default) or exact in O(n k)")
    r.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    r.add_argument("--no-quality", dest="quality", action="store_false",
                   help="skip scikit-learn's best of 10 inits")
    r.add_argument("--no-render", dest="render", action="store_false",
                   help="do not re-render RESULTS.md and the PNG")
    rep = commands.add_parser("report",
                              help="re-render RESULTS.md and time_vs_size.png from results/")
    for sub in (r, rep):
        sub.add_argument("--results-dir", type=Path, default=RESULTS,
                         help="JSON results folder (default benchmarks/results; another folder "
                              "also receives its own RESULTS.md and PNG, e.g. for trials)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    global _results_dir
    args = build_parser().parse_args(argv)
    _results_dir = args.results_dir.resolve()
    if args.command == "report":
        from benchmarks import report

        report.render(_results_dir)
        return 0
    args.workdir = args.workdir.resolve()
    return run(args, shlex.join(["python", "-m", "benchmarks", *argv]))
