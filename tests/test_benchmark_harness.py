"""The benchmark harness's reading of a run's manifest (the benchmarks themselves are commands)."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.harness import group_manifest_stages, jvm_forks, jvm_thread_group, measure


def test_stages_that_ran_beside_another_are_not_counted_twice() -> None:
    timings = {
        "read_and_aggregate": 10.0, "write_features": 1.0, "k_sweep": 20.0,
        "fit_scores_and_tiers": 5.0, "fit_final_model": 3.0, "write_profiles": 2.0,
        "total": 40.0,
    }
    assert group_manifest_stages(timings) == {
        "features": 11.0, "k_sweep": 20.0, "final_fit_and_writes": 10.0,
    }
    assert group_manifest_stages(timings, {"fit_scores_and_tiers": "k_sweep"}) == {
        "features": 11.0, "k_sweep": 20.0, "final_fit_and_writes": 5.0,
    }


def test_jvm_threads_are_grouped_by_what_they_do() -> None:
    names = {
        "Executor task launch worker for task 3.0": "tasks",  # as /proc truncates: 15 chars
        "Executor task l": "tasks",
        "C2 CompilerThre": "jit_c2",
        "C1 CompilerThre": "jit_c1",
        "Thread-7": "driver_calls",
        "dag-scheduler-e": "scheduler",
        "GC Thread#1": "gc",
        "G1 Conc#0": "gc",
        "Sweeper thread": "other",
    }
    assert {name: jvm_thread_group(name) for name in names} == names


def test_measure_waits_for_what_the_command_leaves_running(tmp_path: Path) -> None:
    # The command returns at once and leaves a process behind (as PySpark leaves its JVM).
    marker = tmp_path / "done"
    command = ["sh", "-c", f"(sleep 1.5; touch {marker}) > /dev/null 2>&1 & exit 0"]
    measured = measure(command, tmp_path / "log.txt", timeout=30)
    assert measured.returncode == 0
    assert measured.wall_seconds < 1.0
    assert measured.lingered_seconds >= 1.0
    assert marker.exists()  # the leftover ran to its end before measure returned


def test_measure_reads_the_cpu_of_each_jvm_thread(tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java is not None, "the tests need Java (as Spark does)"
    source = tmp_path / "Spin.java"
    source.write_text(
        "public class Spin { public static void main(String[] a) { long t = System.nanoTime();"
        " double x = 0; while (System.nanoTime() - t < 2_500_000_000L) { x += Math.sqrt(x + 1);"
        " } System.out.println(x > 0); } }"
    )
    measured = measure([java, str(source)], tmp_path / "log.txt", timeout=60)
    assert measured.returncode == 0, (tmp_path / "log.txt").read_text()
    # The busy loop runs on the JVM's main thread, which is not a group of its own.
    assert measured.jvm_cpu_seconds.get("other", 0.0) >= 1.5, measured.jvm_cpu_seconds
    assert set(measured.jvm_cpu_seconds) <= {
        "tasks", "jit_c2", "jit_c1", "driver_calls", "scheduler", "gc", "other"}


class FakeProcess:
    def __init__(self, pid: int, ppid: int, name: str, exe: str) -> None:
        self.pid, self._ppid, self._name, self._exe = pid, ppid, name, exe

    def ppid(self) -> int:
        return self._ppid

    def name(self) -> str:
        return self._name

    def exe(self) -> str:
        return self._exe


def test_a_jvm_forking_a_program_is_not_counted_twice() -> None:
    java, python = "/usr/lib/jvm/bin/java", "/usr/bin/python3.11"
    tree = [
        FakeProcess(10, 1, "segmentation", python),
        FakeProcess(11, 10, "java", java),  # the driver JVM
        FakeProcess(12, 11, "Executor task l", java),  # its fork, before exec: the JVM's pages
        FakeProcess(13, 11, "chmod", "/usr/bin/chmod"),  # a fork that became chmod: counted
        FakeProcess(14, 11, "java", java),  # a JVM started by a JVM is a JVM: counted
        FakeProcess(15, 10, "python3", python),  # a Python fork (a worker): counted
    ]
    assert jvm_forks(tree) == {12}
