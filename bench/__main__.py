"""`python -m bench [NAME...]` (`make bench`): run every `bench/bench_*.py` module's `main()`.

Names select modules (`python -m bench pipeline lb_overhead`); options after a single name go to
that benchmark (`python -m bench scale --k 10,30`). Each benchmark starts what it
needs in a private directory and stops it. They print tables and assert nothing; a benchmark that
crashes is reported and the others still run, and the exit code is then 1.
"""

from __future__ import annotations

import importlib
import inspect
import signal
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(path.stem for path in BENCH_DIR.glob("bench_*.py"))


def stop_on_sigterm() -> None:
    """Make SIGTERM (a timeout, a cancelled job, `kill`) end a benchmark as Ctrl-C does: by an
    exception, so its `finally` blocks stop the private stack it started. Python's default for
    SIGTERM ends the process at once, and the stack's processes were left running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str]) -> int:
    stop_on_sigterm()
    available = discover()
    first_option = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:first_option], argv[first_option:]
    if options and len(names) != 1:
        print("bench: options go to one benchmark: python -m bench NAME --option ...", file=sys.stderr)
        return 2
    wanted = [name if name.startswith("bench_") else f"bench_{name}" for name in names] or available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        print(
            f"bench: unknown benchmark {', '.join(unknown)}; available: {', '.join(available)}",
            file=sys.stderr,
        )
        return 2
    crashed = []
    for name in wanted:
        print(f"\n##### {name} #####", flush=True)
        started = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
            if inspect.signature(module.main).parameters:
                module.main(options)
            else:
                module.main()
        except Exception:  # a crashed benchmark is reported; the others still run
            traceback.print_exc()
            crashed.append(name)
        print(f"##### {name}: {time.monotonic() - started:.1f} s #####", flush=True)
    if crashed:
        print(f"bench: {', '.join(crashed)} crashed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
