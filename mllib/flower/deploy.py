"""Flower's deployment runtime on loopback: one SuperLink, one SuperNode per client, ``flwr run``.

``Deployment`` starts ``flower-superlink`` and the ``flower-supernode`` processes (insecure,
127.0.0.1, free ports), each in its own process group, and stops every group on exit,
also when a run fails. ``Deployment.run`` submits the app with Flower's CLI and returns
the final model and the accuracies the server saved.

Run: ``python -m mllib.flower`` (``make flower``): 4 SuperNodes, FedAvg, per-round accuracy.
"""
import argparse
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from mllib.compression.ddp import free_port

from .task import Settings, flower_config

APP = pathlib.Path(__file__).parent / "app"
BIN = pathlib.Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr


class Deployment:
    """A SuperLink and SuperNodes on loopback; a context manager.

    Args:
        nodes: one node config per SuperNode, e.g. ``[{"partition-id": 0}, {"partition-id": 1,
            "attack": "noise"}]``.
        workdir: where Flower keeps its state (FLWR_HOME) and the processes' logs.
    """

    def __init__(self, nodes: Sequence[dict], workdir: str | os.PathLike):
        self.nodes, self.workdir = list(nodes), pathlib.Path(workdir)
        self.port = free_port()
        self.processes: list[subprocess.Popen] = []
        path = f"{BIN}{os.pathsep}{os.environ['PATH']}"  # the SuperLink starts flower-superexec from PATH
        self.env = {**os.environ, "FLWR_HOME": str(self.workdir / "flwr"), "PATH": path}

    def __enter__(self) -> "Deployment":
        home = self.workdir / "flwr"
        home.mkdir(parents=True, exist_ok=True)
        # The CLI reads its SuperLink connections from FLWR_HOME/config.toml.
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "loopback"\n\n'
            f'[superlink.loopback]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        try:
            # A database file: with ":memory:", concurrent replies failed ("cannot start a
            # transaction within a transaction") and a SuperNode went missing.
            self.start("superlink", "flower-superlink", "--insecure", "--port", str(self.port),
                       "--database", str(self.workdir / "superlink.db"), "--disable-runtime-dependency-installation")
            self.wait_for_superlink()
            for i, config in enumerate(self.nodes):
                self.start(f"supernode{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                           "--port", str(free_port()), "--node-config", flower_config(config))  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, name: str, *command: str) -> None:
        log = open(self.workdir / f"{name}.log", "w")
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                               start_new_session=True))  # fmt: skip
        log.close()

    def wait_for_superlink(self, timeout: float = 60) -> None:
        """Return once the SuperLink accepts connections; raise if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                log = (self.workdir / "superlink.log").read_text()[-2000:]
                if self.processes[0].poll() is not None:
                    raise RuntimeError(f"flower-superlink exited; the end of its log:\n{log}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"flower-superlink did not listen within {timeout} s:\n{log}") from None
                time.sleep(0.2)

    def stop_node(self, i: int) -> None:
        """Kill SuperNode i and what it started (to see how a run copes with a lost node)."""
        _kill(self.processes[1 + i])

    def stop(self) -> None:
        for process in reversed(self.processes):
            _kill(process)
        self.processes.clear()

    def run(self, settings: Settings, *, timeout: float = 300, echo: bool = False,
            on_line: Callable[[str], None] | None = None) -> dict:  # fmt: skip
        """Submit the app with ``flwr run`` and wait for it.

        Args:
            settings: the run; its ``output`` is set here.
            timeout: seconds before the run counts as failed.
            echo: print the server's per-round lines as they come.
            on_line: called with each line of the run's log stream.

        Returns:
            {"model": the final server model (d,), "accuracy": test accuracy after each round
            (round 0 first), "log": what ``flwr run --stream`` printed}.

        Raises:
            RuntimeError: if the run fails (the log's tail says why), or takes over ``timeout`` s.
        """
        output = self.workdir / f"run-{time.monotonic_ns()}.npz"
        settings = Settings(**{**settings.__dict__, "output": str(output)})
        log = self.submit(APP, settings.to_config(), timeout=timeout, echo=echo, on_line=on_line)
        if not output.exists():
            raise RuntimeError(f"the Flower run failed; the end of its log:\n{log[-3000:]}")
        saved = np.load(output)
        return {"model": saved["model"], "accuracy": saved["accuracy"].tolist(), "log": log}

    def submit(self, app: str | os.PathLike, run_config: str, *, timeout: float = 300, echo: bool = False,
               on_line: Callable[[str], None] | None = None) -> str:  # fmt: skip
        """``flwr run APP --stream --run-config RUN_CONFIG`` on this deployment; what it printed.

        Raises:
            RuntimeError: if the run takes over ``timeout`` s (the log's tail says where it was).
        """
        command = [str(BIN / "flwr"), "run", str(app), "--stream", "--run-config", run_config]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                                   start_new_session=True)  # fmt: skip
        stream: queue.Queue[str | None] = queue.Queue()  # read in a thread, so that a silent hang still times out
        threading.Thread(target=_pump, args=(process.stdout, stream), daemon=True).start()
        lines, deadline = [], time.monotonic() + timeout
        try:
            # the stream ends (None) when the run does
            while (line := stream.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
                lines.append(line)
                if on_line is not None:
                    on_line(line)
                if echo and line.startswith("round "):
                    print(line, end="", flush=True)
        except queue.Empty:
            tail = "".join(lines)[-3000:]
            raise RuntimeError(f"the Flower run took over {timeout} s; the end of its log:\n{tail}") from None
        finally:
            _kill(process)
        return "".join(lines)


def _pump(lines: Iterable[str], stream: queue.Queue) -> None:
    for line in lines:
        stream.put(line)
    stream.put(None)


def _kill(process: subprocess.Popen) -> None:
    """Stop a process group started with start_new_session: SIGTERM, then SIGKILL for whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            pass


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--algorithm", default="fedavg", choices=("fedavg", "scaffold", "dp-fedavg"))
    parser.add_argument("--aggregator", default="mean")
    parser.add_argument("--attack", default="none", help="the last SuperNode is Byzantine: 'sign flip', 'noise', ...")
    args = parser.parse_args(argv)
    settings = Settings(rounds=args.rounds, clients=args.clients, algorithm=args.algorithm, aggregator=args.aggregator,
                        byzantine=int(args.attack != "none"))  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the servers
    nodes = [{"partition-id": i} for i in range(settings.clients)]
    nodes[-1]["attack"] = args.attack
    with tempfile.TemporaryDirectory() as workdir, Deployment(nodes, workdir) as deployment:
        print(f"SuperLink on 127.0.0.1:{deployment.port}, {settings.clients} SuperNodes; {settings.to_config()}")
        deployment.run(settings, echo=True)
