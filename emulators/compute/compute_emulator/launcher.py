"""Start and stop the emulator as a child process (for tests, benchmarks and the local stack)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

READY_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 40.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class EmulatorProcess:
    """A running emulator: `endpoint` is what `ClientOptions(api_endpoint=...)` takes."""

    endpoint: str
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def api_root(self) -> str:
        """What `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE` takes."""
        return f"{self.endpoint}/compute/v1/"

    @classmethod
    def start(cls, state_dir: Path, *extra_args: str, port: int | None = None) -> EmulatorProcess:
        state_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = state_dir / "emulator.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "compute_emulator",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--state-dir",
                    str(state_dir),
                    *extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        running = cls(f"http://127.0.0.1:{port}", state_dir, log_path, process)
        try:
            running.wait_ready(READY_TIMEOUT_SECONDS)
        except BaseException:
            running.stop()
            raise
        return running

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Compute emulator exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Compute emulator did not answer /healthz within {timeout}s")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM (the emulator ends every instance's process tree), SIGKILL only past the bound."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise RuntimeError("the Compute emulator did not stop within the bound after SIGTERM") from None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
