"""``routerretriever serve``: the search service (``retriever.service``) over a router directory and one index, in
this process (uvicorn) or as Ray Serve replicas."""

from __future__ import annotations

from retriever.index.backends import IndexBackend

__all__ = ["check_serve_options", "serve_index"]


def check_serve_options(router_dir=None, routing: str = "default", backend: IndexBackend | None = None,
                        ray_address: str | None = None, replicas: int | None = None) -> None:
    """Options that do not go together fail here, before any model loads (the CLI shows them as usage errors)."""
    if router_dir is None and routing != "default":
        raise ValueError("--routing chooses a router of --router DIR; give --router too")
    if replicas is not None or ray_address is not None:
        from retriever.service.config import refuse_lite_replicas

        refuse_lite_replicas(getattr(backend, "uri", None))


def serve_index(index_dir, backend: IndexBackend, router_dir=None, *, routing: str = "default",
                model: str | None = None, device: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                ray_address: str | None = None, replicas: int | None = None, announce=print, **settings) -> None:
    """Serve searches of ``index_dir`` (of ``backend``) routed over ``router_dir`` (None: the base model alone)
    until interrupted: in this process, or on Ray Serve when ``replicas`` or ``ray_address`` is given (a local
    cluster without an address). ``settings``: the other ``ServiceConfig`` fields (batching, limits, reloads);
    ``announce`` is told where it serves once it does."""
    from retriever.service.config import ServiceConfig

    check_serve_options(router_dir, routing, backend, ray_address, replicas)
    config = ServiceConfig(index=str(index_dir), router=None if router_dir is None else str(router_dir),
                           routing=routing, backend=backend.name, uri=getattr(backend, "uri", None), model=model,
                           device=device, **settings)
    where = f"http://{host}:{port}"
    if replicas is None and ray_address is None:
        from retriever.service.app import serve_http
        from retriever.service.engine import SearchService

        service = SearchService.open(config)
        announce(f"serving {config.index} (version {service.live.current.version}, "
                 f"{len(service.live.current.dense)} documents) on {where}")
        serve_http(service, host, port)
        return
    from retriever.service.ray_serve import serve_ray

    gpus = 1 if device is not None and str(device).startswith("cuda") else 0
    serve_ray(config, replicas or 1, ray_address, host, port, gpus=gpus,
              ready=lambda: announce(f"serving {config.index} with {replicas or 1} Ray Serve replicas on {where}"))
