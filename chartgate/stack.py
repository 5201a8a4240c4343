"""Start a FHIR store, an adapter and a sidecar as separate processes on loopback, and stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chartgate import keys
from sidecar.config import SidecarConfig


class StackError(RuntimeError):
    """A process did not come up; the message names it and where its log is."""


def free_port() -> int:
    """A port the kernel reports free on 127.0.0.1 (the usual bind-to-0 probe)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    args: tuple[str, ...] = ()
    # True once the process serves (what start_* waited for); used again by `restart`.
    ready: Callable[[], bool] = lambda: True

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed (a crash, for fault tests)."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log_file.close()
        return self.popen.returncode


@dataclass
class Stack:
    """A running stack; `stop()` ends every process it started."""

    workdir: Path
    fhir_base: str = ""
    adapter_target: str = ""
    # The adapter's SMART settings file when the store was started with SMART auth (docs/smart.md).
    smart_settings: Path | None = None
    sidecar_target: str = ""
    review_target: str = ""
    # Every sidecar started, by name: (ToolGateway target, Review target).
    sidecars: dict[str, tuple[str, str]] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _spawn(stack: Stack, name: str, args: Sequence[str]) -> Process:
    log_dir = stack.workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(
        [sys.executable, "-m", "chartgate.cli", "--log-level", "INFO", *args],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
    )
    process = Process(name, popen, log_path, log_file, tuple(args))
    stack.processes.append(process)
    return process


def restart(stack: Stack, name: str) -> Process:
    """Start a stopped (or killed) process again with its arguments (same port, same workdir)
    and wait until it serves."""
    old = stack.process(name)
    old.stop()
    stack.processes.remove(old)
    process = _spawn(stack, name, old.args)
    process.ready = old.ready
    _wait(process, process.ready, deadline_seconds=60.0)
    return process


def _wait(process: Process, probe: Callable[[], bool], deadline_seconds: float = 30.0) -> None:
    process.ready = probe
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise StackError(
                f"{process.name} exited with {process.popen.returncode}; see {process.log_path}"
            )
        if probe():
            return
        time.sleep(0.05)
    raise StackError(f"{process.name} not ready after {deadline_seconds} s; see {process.log_path}")


def grpc_serving(target: str) -> bool:
    """True when the target's grpc.health.v1 service answers SERVING."""
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def _fhir_ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/metadata", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_fhir_store(stack: Stack, *, smart: bool = False, extra_args: Sequence[str] = ()) -> None:
    """The local FHIR store; with `smart`, SMART Backend Services on, the adapter registered;
    `extra_args` e.g. `--faults FILE`, `--allow-fault-control` (docs/devstore-faults.md)."""
    port = free_port()
    stack.fhir_base = f"http://127.0.0.1:{port}/fhir"
    args = ["fhir-store", "--workdir", str(stack.workdir), "--listen", f"127.0.0.1:{port}"]
    args += list(extra_args)
    if smart:
        from adapters.smart.dev import provision_dev_client

        registration = provision_dev_client(
            stack.workdir / "smart", f"{stack.fhir_base}/auth/token"
        )
        stack.smart_settings = registration.settings_path
        args += ["--clients", str(registration.clients_path)]
    process = _spawn(stack, "fhir-store", args)
    _wait(process, lambda: _fhir_ready(stack.fhir_base))


def start_adapter(
    stack: Stack, fhir_base: str | None = None, extra_args: Sequence[str] = ()
) -> None:
    """The adapter; `extra_args` e.g. `--fhir-timeout 2`, `--breaker-threshold 3`."""
    keys.load_or_create(stack.workdir / "keys" / "token-signing.jwk", "token")
    port = free_port()
    process = _spawn(
        stack,
        "adapter",
        [
            "adapter",
            "--workdir",
            str(stack.workdir),
            "--listen",
            f"127.0.0.1:{port}",
            "--fhir-base",
            fhir_base or stack.fhir_base,
            *(
                ["--smart-config", str(stack.smart_settings)]
                if stack.smart_settings is not None and fhir_base in (None, stack.fhir_base)
                else []
            ),
            *extra_args,
        ],
    )
    stack.adapter_target = f"127.0.0.1:{port}"
    _wait(process, lambda: grpc_serving(stack.adapter_target))


def start_sidecar(stack: Stack, config: Mapping[str, Any], name: str = "sidecar") -> None:
    """Start a sidecar with `config` (SidecarConfig fields; adapter_target filled in, and a free
    port for the Review API when the config names reviewer issuers but no `review_listen`).

    The first sidecar keeps its state in the stack's workdir; another (a second replica sharing
    the store, say) in `workdir/<name>`, signing tokens with the stack's token key, which the
    adapter trusts.
    """
    port = free_port()
    workdir = stack.workdir if name == "sidecar" else stack.workdir / name
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}.json"
    values = {"adapter_target": stack.adapter_target, **config}
    if values.get("reviewer_issuers") and not values.get("review_listen"):
        values["review_listen"] = f"127.0.0.1:{free_port()}"
    # Relative paths mean "from here"; the sidecar would read them against the config file's
    # directory, so they are written absolute.
    settings = SidecarConfig.model_validate(values)
    config_path.write_text(settings.resolved(Path.cwd()).model_dump_json(indent=2))
    args = ["serve", "--workdir", str(workdir), "--config", str(config_path)]
    args += ["--listen", f"127.0.0.1:{port}"]
    if workdir != stack.workdir:
        args += ["--token-key", str(stack.workdir / "keys" / "token-signing.jwk")]
    process = _spawn(stack, name, args)
    target = f"127.0.0.1:{port}"
    _wait(process, lambda: grpc_serving(target), deadline_seconds=60.0)
    review = settings.review_listen or ""
    if review:
        _wait(process, lambda: grpc_serving(review), deadline_seconds=30.0)
    stack.sidecars[name] = (target, review)
    if name == "sidecar":
        stack.sidecar_target, stack.review_target = target, review


def start_stack(
    workdir: Path,
    sidecar_config: Mapping[str, Any],
    *,
    smart: bool = False,
    store_args: Sequence[str] = (),
) -> Stack:
    """All three processes, each waited on until healthy; stops what started if one fails.
    `smart`: the adapter reaches the store with SMART Backend Services (docs/smart.md);
    `store_args`: more flags for the store (e.g. `--allow-fault-control`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir=workdir)
    try:
        start_fhir_store(stack, smart=smart, extra_args=store_args)
        start_adapter(stack)
        start_sidecar(stack, sidecar_config)
    except BaseException:
        stack.stop()
        raise
    return stack
