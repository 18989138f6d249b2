"""Where the work of ``extract``, ``fit``, ``evaluate`` and ``pipeline`` runs: ``--engine local|ray``.

``local`` (the default) runs everything in this process and never imports Ray. ``ray`` runs
independent pieces of work as Ray tasks on a cluster: the one at ``--ray-address``, or a
cluster started on this machine by ``ray.init()`` when no address is given. Ray is the
optional extra ``sparsefinder[distributed]``; asking for it without Ray installed is a
one-line error.

:meth:`Engine.map` is the one primitive both engines share: call a function on a list of
argument tuples and return the results in order, with a progress bar on the driver fed by
finished calls. On Ray each call is a task retried ``max_retries`` times when its worker
dies; results are collected by call index, so a retried task neither loses nor duplicates
a result.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm.auto import tqdm

from ..config import DISTRIBUTED_CONNECT_TIMEOUT, DISTRIBUTED_MAX_RETRIES
from ..errors import SparsefinderError

__all__ = ["ENGINES", "Engine", "absolute"]

ENGINES = ("local", "ray")


def absolute(location: str | Path) -> str:
    """``location`` as workers on other machines or in other folders see it: URLs as given, paths absolute."""
    text = str(location)
    return text if "://" in text else str(Path(text).resolve())


def _check_reachable(address: str) -> None:
    """Fail fast on an address nothing listens at (``ray.init`` would wait for minutes)."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise SparsefinderError(f"--ray-address must be host:port, ray://host:port or auto, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=DISTRIBUTED_CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise SparsefinderError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Engine:
    """The engine chosen on the command line.

    Attributes
    ----------
    name : str
        ``"local"`` or ``"ray"``.
    address : str or None
        Ray cluster address; ``None`` starts (or reuses) a cluster on this machine.
    max_retries : int
        Times a Ray task is rerun after its worker process died.
    """

    name: str = "local"
    address: str | None = None
    max_retries: int = DISTRIBUTED_MAX_RETRIES

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise SparsefinderError(f"--engine must be one of {', '.join(ENGINES)}, got {self.name!r}")
        if self.address is not None and self.name != "ray":
            raise SparsefinderError("--ray-address needs --engine ray")

    @property
    def is_ray(self) -> bool:
        return self.name == "ray"

    def connect(self) -> ModuleType:
        """The ``ray`` module, connected to the cluster (started here if no address is given)."""
        try:
            import ray
        except ImportError:
            raise SparsefinderError("--engine ray needs Ray: pip install 'sparsefinder[distributed]'") from None
        if self.address is not None:
            _check_reachable(self.address)
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level="WARNING")
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SparsefinderError(f"cannot start or reach the Ray cluster {self.address or '(local)'}: "
                                        f"{first}") from None
        return ray

    def workers(self) -> int:
        """CPUs of the cluster (1 for the local engine): how many calls run at once."""
        if not self.is_ray:
            return 1
        return max(1, int(self.connect().cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple], *, desc: str, progress: bool = True,
            sizes: Sequence[int] | None = None, unit: str = "task") -> list[Any]:
        """``[fn(*args) for args in calls]``, here or as Ray tasks; the results in the order of ``calls``.

        ``sizes`` (one per call, e.g. sequences) advance the progress bar as each call finishes.
        A user error raised in a task is raised here as is; a worker that died more than
        ``max_retries`` times is a :class:`SparsefinderError` naming the task.
        """
        sizes = list(sizes) if sizes is not None else [1] * len(calls)
        bar = tqdm(total=sum(sizes), desc=desc, unit=unit, disable=not progress)
        try:
            if not self.is_ray:
                results = []
                for args, size in zip(calls, sizes):
                    results.append(fn(*args))
                    bar.update(size)
                return results
            return self._map_ray(fn, calls, desc, bar, sizes)
        finally:
            bar.close()

    def _map_ray(self, fn: Callable[..., Any], calls: Sequence[tuple], desc: str, bar: tqdm,
                 sizes: list[int]) -> list[Any]:
        ray = self.connect()
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(fn)
        refs = [remote.remote(*args) for args in calls]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    results[i] = self._result(ray, ref, f"{desc} task {i + 1}/{len(refs)}")
                    bar.update(sizes[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return results

    def _result(self, ray: ModuleType, ref: Any, what: str) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, SparsefinderError):
                raise exc.cause from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            raise SparsefinderError(f"{what} failed: its worker died {self.max_retries + 1} times "
                                    f"({type(exc).__name__})") from None
