"""Can the Ray cluster ever run this job? Checked before any MLflow run opens, since Ray Train would wait forever.

Ray Train asks for one placement group of `num_workers` bundles; a bundle that no node can hold,
or more bundles than the nodes can hold together, leaves the worker group pending without an end
(and retried, with the MLflow run left RUNNING). Feasibility is judged against each alive node's
total resources, not what is free now: a job that fits will be scheduled once others finish.
On an autoscaling cluster nodes may still come: `scaling.wait_for_resources_s` polls that long.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from structvpr.config import ConfigError
from structvpr.platform.recipe import Recipe, ScalingSection

POLL_SECONDS = 5.0
EPSILON = 1e-9  # Ray keeps fractional resources in 1e-4 units; compare with room for rounding


class ClusterTooSmallError(ConfigError):
    """The job asks for more than the Ray cluster has, per worker or in all."""


class NoGpuError(ClusterTooSmallError):
    """scaling.use_gpu on a Ray cluster without GPUs: Ray Train would wait for them forever."""


@dataclass(frozen=True)
class WorkerRequest:
    bundle: dict[str, float]  # what one worker reserves: CPU, GPU, memory (bytes)
    num_workers: int
    strategy: str

    @classmethod
    def from_scaling(cls, s: ScalingSection) -> "WorkerRequest":
        bundle = {"CPU": s.cpus_per_worker}
        if s.use_gpu:
            bundle["GPU"] = 1.0
        if s.memory_per_worker_gb > 0:
            bundle["memory"] = s.memory_per_worker_gb * 1024**3
        return cls(bundle, s.num_workers, s.placement_strategy)


def workers_fitting(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many bundles one node's total resources hold."""
    return min(math.floor(node.get(name, 0.0) / need + EPSILON) for name, need in bundle.items() if need > 0)


def shortfall(request: WorkerRequest, nodes: list[dict[str, float]], beside_cpu: float = 0.0) -> str | None:
    """None if the nodes can hold the request under its placement strategy, else what is missing.

    `beside_cpu` is what the job holds outside its workers on some node (a Tune trial's own actor): the
    request fits if, for some node, the workers still fit with that much taken from it."""
    if beside_cpu > 0:
        if _fits_with_cpu_taken(request, nodes, beside_cpu):
            return None
        return _worker_shortfall(request, nodes) or (
            f"{request.num_workers} worker(s) of {_describe(request.bundle)} each ({request.strategy}) and "
            f"{beside_cpu:g} CPU beside them for the trial's own Tune actor, but no node of the cluster's {len(nodes)} "
            f"has that CPU left once the workers are placed; largest node: {_describe(_largest(nodes))}")
    return _worker_shortfall(request, nodes)


def _fits_with_cpu_taken(request: WorkerRequest, nodes: list[dict[str, float]], cpu: float) -> bool:
    for i, node in enumerate(nodes):
        if node.get("CPU", 0.0) + EPSILON < cpu:
            continue
        smaller = [*nodes[:i], node | {"CPU": node.get("CPU", 0.0) - cpu}, *nodes[i + 1:]]
        if _worker_shortfall(request, smaller) is None:
            return True
    return False


def _worker_shortfall(request: WorkerRequest, nodes: list[dict[str, float]]) -> str | None:
    per_node = [workers_fitting(node, request.bundle) for node in nodes]
    wanted = request.num_workers
    if request.strategy == "STRICT_PACK":
        ok, room = max(per_node, default=0) >= wanted, f"at most {max(per_node, default=0)} on one node"
    elif request.strategy == "STRICT_SPREAD":
        fitting = sum(1 for n in per_node if n >= 1)
        ok, room = fitting >= wanted, f"{fitting} node(s) that hold one worker each"
    else:
        ok, room = sum(per_node) >= wanted, f"room for {sum(per_node)} worker(s) in all"
    if ok:
        return None
    return (f"{wanted} worker(s) of {_describe(request.bundle)} each ({request.strategy}), but the cluster's "
            f"{len(nodes)} node(s) have {room}; largest node: {_describe(_largest(nodes))}")


def jobs_fitting(recipe: Recipe, extra_cpu_per_job: float = 0.0) -> int:
    """How many jobs of this recipe's worker group the alive nodes hold at once (at least 1).

    `extra_cpu_per_job` is what else each job holds while it runs (a Tune trial's own actor), spread
    over its workers: counting it keeps queued jobs from holding CPUs that the running ones need."""
    s = recipe.scaling
    bundle = dict(WorkerRequest.from_scaling(s).bundle)
    bundle["CPU"] += extra_cpu_per_job / s.num_workers
    workers = sum(workers_fitting(node, bundle) for node in alive_node_resources())
    return max(1, workers // s.num_workers)


def alive_node_resources() -> list[dict[str, float]]:
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def check_cluster_fits(recipe: Recipe, beside_cpu: float = 0.0) -> None:
    """Refuse, before any run starts, a job that the cluster cannot hold; wait first if the recipe says so.

    `beside_cpu`: what each job holds outside its workers (a Tune trial's actor), as in `shortfall`."""
    s = recipe.scaling
    request = WorkerRequest.from_scaling(s)
    nodes = alive_node_resources()
    if s.use_gpu and not any(n.get("GPU", 0) > 0 for n in nodes) and s.wait_for_resources_s <= 0:
        raise NoGpuError("scaling.use_gpu=true but the Ray cluster has no GPU; set scaling.use_gpu=false to train "
                         "on the CPU, or start Ray nodes with GPUs (`ray start --num-gpus N`)")
    missing, started = shortfall(request, nodes, beside_cpu), time.monotonic()
    while missing and time.monotonic() - started < s.wait_for_resources_s:
        waited = time.monotonic() - started
        print(f"waiting for the cluster to grow ({waited:.0f}/{s.wait_for_resources_s:.0f} s): {missing}", flush=True)
        time.sleep(min(POLL_SECONDS, max(0.0, s.wait_for_resources_s - waited)))
        missing = shortfall(request, alive_node_resources(), beside_cpu)
    if missing:
        waited = f"; waited {time.monotonic() - started:.0f} s for nodes" if s.wait_for_resources_s > 0 else \
            " (on an autoscaling cluster, scaling.wait_for_resources_s waits for nodes)"
        raise ClusterTooSmallError(f"the job asks for {missing}{waited}; lower scaling.num_workers, "
                                   "scaling.cpus_per_worker (fractions work) or scaling.memory_per_worker_gb, "
                                   "or add nodes")


def _describe(resources: dict[str, float]) -> str:
    parts = []
    for name, value in sorted(resources.items()):
        if name == "memory":
            parts.append(f"{value / 1024**3:.1f} GB memory")
        elif name in ("CPU", "GPU"):
            parts.append(f"{value:g} {name}")
    return ", ".join(parts) or "nothing"


def _largest(nodes: list[dict[str, float]]) -> dict[str, float]:
    return max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0), n.get("memory", 0)), default={})
