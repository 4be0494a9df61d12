"""`frugal serve` in a subprocess for the Python checks: started on a port the OS picks, ready
once /health answers 200, stopped with SIGTERM; its log kept in a file to show on failure."""

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


class Server:
    """`frugal serve` in a subprocess; stderr goes to a log file we can show on failure."""

    def __init__(self, cmd, quiet=False):
        self.log = tempfile.NamedTemporaryFile(prefix="frugal-serve-", suffix=".log", delete=False)
        if not quiet:
            print("$ " + " ".join(cmd), flush=True)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def log_text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout):
        """The base URL once /health answers 200; raises after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        base = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"frugal serve exited with status {self.proc.returncode} before it was ready")
            if base is None:
                m = re.search(r"listening on (http://[\d.]+:\d+)", self.log_text())
                base = m and m.group(1)
            if base:
                try:
                    with urllib.request.urlopen(base + "/health", timeout=2) as r:
                        if r.status == 200:
                            return base
                except (urllib.error.URLError, OSError):
                    pass  # 503 while loading, or not accepting yet
            time.sleep(0.1)
        raise RuntimeError(f"/health did not answer 200 within {timeout}s")

    def stop(self, timeout=15):
        """SIGTERM, then the exit status (SIGKILL and None after `timeout` seconds)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def free_port():
    """A loopback port free now (for sockets the servers connect to)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
