"""The same search app as a Ray Serve deployment with N replicas: each replica opens the model, router and index a
``ServiceConfig`` names (paths must be readable on every node; a Milvus Lite file is served by one process, so
use a Milvus server with replicas) and serves ``create_app``'s app, its own batcher and index watcher included.
Ray Serve's HTTP proxy spreads requests over the replicas.

``deploy`` starts a local Ray cluster when none is running and no ``address`` is given, or joins the one at
``address`` (``auto``, ``ray://head:10001``); ``serve_ray`` deploys and blocks until interrupted.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from ray import serve

from retriever.index.backends import make_backend
from retriever.index.ray_encoder import check_address
from retriever.service.app import create_app
from retriever.service.config import ServiceConfig, refuse_lite_replicas
from retriever.service.engine import SearchService

__all__ = ["APP_NAME", "SearchReplica", "deploy", "serve_ray"]

logger = logging.getLogger(__name__)

APP_NAME = "routerretriever"


@serve.ingress()
class SearchReplica:
    """One replica: a ``SearchService`` and the FastAPI app serving it (built after the service is open)."""

    def __init__(self, config: ServiceConfig):
        self.service = SearchService.open(config)

    def __serve_build_asgi_app__(self):
        return create_app(self.service)


def deploy(config: ServiceConfig, replicas: int = 2, address: str | None = None, host: str = "127.0.0.1",
           port: int = 8000, cpus: float = 1, gpus: float = 0, joined=None) -> None:
    """Run ``replicas`` replicas of the app on Ray Serve, its HTTP proxy on ``host:port``; returns once every
    replica is serving (each needs ``cpus`` CPUs and ``gpus`` GPUs; ``config.device`` should say ``cuda`` then).
    ``joined()`` is called once connected to the cluster, before anything is deployed."""
    import ray

    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ValueError(f"replicas must be a positive integer, got {replicas!r}")
    if config.backend == "milvus":
        refuse_lite_replicas(config.uri)
    if address is not None:
        check_address(address)
    make_backend(config.backend, config.uri).version(config.index)  # a missing index fails here, not in a replica
    if config.router is not None and not (Path(config.router) / "router.json").is_file():
        raise FileNotFoundError(f"no router directory at {config.router} (no router.json)")
    if not ray.is_initialized():
        try:
            if address is None:  # a local cluster with the CPUs the replicas ask for (and one for Serve's own)
                ray.init(num_cpus=int(replicas * cpus) + 1, num_gpus=int(replicas * gpus) or None,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as err:
            raise ConnectionError(f"cannot join the Ray cluster at {address or 'a new local cluster'}: "
                                  f"{str(err).strip().splitlines()[0]}") from None
    if joined is not None:
        joined()
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(SearchReplica, name="search", num_replicas=replicas,
                                  max_ongoing_requests=config.max_queue,  # the replica's batcher queues, not Serve
                                  max_constructor_retry_count=1,  # a replica that cannot open the service fails
                                  ray_actor_options={"num_cpus": cpus, "num_gpus": gpus})
    try:
        serve.run(deployment.bind(config), name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as err:  # a replica could not open the service: its own error is the last line
        raise ChildProcessError(f"the replicas did not start: {str(err).strip().splitlines()[-1]}") from None
    logger.info("%d replicas of %s serving on http://%s:%d", replicas, config.index, host, port)


def serve_ray(config: ServiceConfig, replicas: int, address: str | None = None, host: str = "127.0.0.1",
              port: int = 8000, cpus: float = 1, gpus: float = 0, ready=None) -> None:
    """``deploy``, then keep serving until interrupted (Ctrl-C or SIGTERM removes the app, and stops the local
    cluster if this call started one); ``ready()`` once serving."""
    import ray

    started = not ray.is_initialized()
    try:
        deploy(config, replicas, address, host, port, cpus, gpus, joined=_stop_on_sigterm)
        if ready is not None:
            ready()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if ray.is_initialized() and serve.status().applications.get(APP_NAME) is not None:
            serve.delete(APP_NAME)
        if started and ray.is_initialized():
            serve.shutdown()
            ray.shutdown()


def _stop_on_sigterm() -> None:
    """From now on SIGTERM stops ``serve_ray`` as Ctrl-C does, cleanly (set once joined: ``ray.init`` installs a
    handler of its own)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
