"""Where the test suite's CPU goes: every Python process the tests start, by script and by test.

    python bench/suite_cpu.py                      # the whole suite, as CI runs it
    python bench/suite_cpu.py -- tests/test_e2e.py  # any pytest arguments after --

For the run, a .pth file in this venv's site-packages makes each Python process, as it exits,
append its own CPU seconds (user + system), its command line and the test that started it
(PYTEST_CURRENT_TEST, which every subprocess inherits) to a log; the file is removed after the
run (if this script itself is killed, delete site-packages/zz_suite_cpu*). Processes killed
with SIGKILL, and what is not Python (git, Chromium, PostgreSQL), are not counted: compare
the total with the `time` of the run. Nothing is written to the repository.
"""

import collections
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

HOOK = """import atexit, os, resource, sys


def _log_cpu(log={log!r}):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    test = os.environ.get("PYTEST_CURRENT_TEST", "-").rsplit(" ", 1)[0]
    with open(log, "a") as out:
        out.write(f"{{usage.ru_utime + usage.ru_stime:.2f}}\\t{{test}}\\t{{' '.join(sys.argv)}}\\n")


atexit.register(_log_cpu)
"""


def program(argv: str) -> str:
    """What a process ran: a stage script's name, `dvc <command>`, or its first argument."""
    words = argv.split()
    stage = next((word for word in words if "stages/" in word), None)
    if stage:
        return Path(stage).name
    # `dvc ...`, or `python .../dvc/__main__.py ...` (an experiment's runner, a queue worker).
    at = next((i for i, w in enumerate(words) if w.endswith(("/dvc", "dvc/__main__.py"))), None)
    if at is not None and at + 1 < len(words):
        return f"dvc {words[at + 1]}"
    if not words:
        return "?"
    first = Path(words[0])  # `python -m package` runs package/__main__.py
    return first.parent.name if first.name == "__main__.py" else first.name


def table(title: str, seconds: dict[str, float], counts: dict[str, int], top: int) -> str:
    rows = sorted(seconds.items(), key=lambda item: -item[1])[:top]
    lines = [f"| {title} | processes | CPU s |", "|---|---|---|"]
    lines += [f"| {name} | {counts[name]} | {cpu:.0f} |" for name, cpu in rows]
    return "\n".join(lines)


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--top", default=25, show_default=True, help="Rows of each table.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def main(top: int, pytest_args: tuple[str, ...]) -> None:
    log = Path(tempfile.mkdtemp(prefix="suite-cpu-")) / "processes.tsv"
    hook = Path(site.getsitepackages()[0]) / "zz_suite_cpu.pth"
    # A .pth line that starts with "import" is executed at every interpreter's start-up.
    hook.write_text("import zz_suite_cpu_hook\n")
    hook.with_name("zz_suite_cpu_hook.py").write_text(HOOK.format(log=str(log)))
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", *pytest_args])
    finally:
        hook.unlink()
        hook.with_name("zz_suite_cpu_hook.py").unlink()
    wall = time.monotonic() - start
    by_program, by_test = collections.Counter(), collections.Counter()
    n_program, n_test = collections.Counter(), collections.Counter()
    for line in log.read_text().splitlines() if log.exists() else []:
        cpu, test, argv = line.split("\t", 2)
        name = program(argv)
        by_program[name] += float(cpu)
        n_program[name] += 1
        by_test[test] += float(cpu)
        n_test[test] += 1
    total = sum(by_program.values())
    print(f"\npytest exit {done.returncode}; {wall:.0f} s wall; {sum(n_program.values())} Python")
    print(f"processes logged, {total:.0f} CPU s in all (their own time; '-' = outside a test)\n")
    print(table("program", by_program, n_program, top) + "\n")
    print(table("test", by_test, n_test, top))


if __name__ == "__main__":
    main()
