"""Start JupyterLab the way `make lab` does (no browser, 127.0.0.1, a free port) for a test."""
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from notebooks import ROOT

TOKEN = "course-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_lab(*extra: str, timeout: float = 90.0):
    """Yield the base URL of a JupyterLab started with `make lab`; stop its process group after."""
    port = free_port()
    args = " ".join(["LAB_ARGS=--no-browser", f"--port={port}", f"--IdentityProvider.token={TOKEN}", *extra])
    server = subprocess.Popen(
        ["make", "--no-print-directory", "lab", args], cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while status(base) is None:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("JupyterLab did not answer on 127.0.0.1")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def status(base: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2) as reply:
            return json.load(reply)
    except OSError:
        return None


def start_kernel_session(base: str, notebook: str) -> None:
    """Start the notebook's python3 kernel through the REST API, before a page opens it: the
    page then attaches to it instead of asking "Select Kernel" while the kernel list loads."""
    body = json.dumps({"path": notebook, "type": "notebook", "name": notebook, "kernel": {"name": "python3"}})
    request = urllib.request.Request(
        f"{base}/api/sessions?token={TOKEN}", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 201, f"could not start a kernel for {notebook}: HTTP {reply.status}"
