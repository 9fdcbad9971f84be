"""Build and run the kfct model server: `kfct serve`, `python -m kfct.serving`, or in a thread.

    from kfct.serving.server import start_in_thread
    with start_in_thread(model_name="churn-classifier", port=0) as srv:   # port 0: a free one
        httpx.post(f"{srv.url}/v1/models/churn-classifier:predict", json={"instances": [...]})

One KServe ModelServer serves one model name through a `ChurnRouter`: the champion
(alias or version from the registry, or a local MLflow model folder with its sha256)
and, when the split state says so, a canary or shadow challenger. The split state
file (`kfct.split_state`) is written at start-up when a canary is given on the
command line and watched afterwards, so `kfct rollout` and the deploy stage can move
traffic of a running server.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("kfct.serving")


@dataclass
class ServerOptions:
    model_name: str | None = None
    alias: str = "champion"
    version: str | None = None
    model_dir: str | None = None
    model_sha256: str | None = None
    host: str | None = None
    port: int | None = None
    canary_version: str | None = None
    canary_percent: float | None = None
    shadow: bool = False
    state_path: str | None = None
    watch: bool = True
    poll_seconds: float = 0.5
    retry_seconds: float = 2.0
    log_predictions: bool = True
    prediction_log_dir: str | None = None
    log_flush_seconds: float = 5.0
    max_request_bytes: int | None = None
    id_column: str | None = None
    wait_for_model: bool = True
    access_log: bool = False
    fast: bool = True
    extra: dict = field(default_factory=dict)


class Running:
    """A server started by `start`: its URL, router and a `stop()`."""

    def __init__(self, server, uv_server, router, watcher, prediction_log, thread, sock, state_path):
        self.model_server = server
        self.uv_server = uv_server
        self.router = router
        self.watcher = watcher
        self.prediction_log = prediction_log
        self.thread = thread
        self.state_path = state_path
        self.host, self.port = sock.getsockname()[:2]
        self._sock = sock

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def model_name(self) -> str:
        return self.router.name

    def stop(self, timeout: float = 10.0) -> None:
        self.uv_server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        shutdown(self.router, self.watcher, self.prediction_log)
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def shutdown(router, watcher, prediction_log) -> None:
    if watcher is not None:
        watcher.stop()
    if router is not None:
        router.drain_shadow(5.0)
        router.close()
    if prediction_log is not None:
        prediction_log.close()


def build(opts: ServerOptions):
    """(model server, router, watcher, prediction log, state path) — nothing listening yet."""
    from kfct.config import load_config
    from kfct.settings import get_settings
    from kfct.serving.app import KfctModelServer, add_kfct_routes
    from kfct.serving.predictor import ChurnPredictor
    from kfct.serving.prediction_log import PredictionLogger
    from kfct.serving.router import ChurnRouter, SplitWatcher
    from kfct.split_state import SplitState, read_state, state_path, write_state

    settings = get_settings()
    cfg = load_config()
    name = opts.model_name or cfg["register"]["model_name"]
    id_column = opts.id_column or cfg["dataset"]["id_column"]
    champion = ChurnPredictor(name, model_name=name, alias=opts.alias, version=opts.version,
                              model_dir=opts.model_dir, expected_sha256=opts.model_sha256, id_column=id_column,
                              fast=opts.fast)
    plog = None
    if opts.log_predictions:
        plog = PredictionLogger(root=opts.prediction_log_dir, id_column=id_column,
                                flush_seconds=opts.log_flush_seconds)
    router = ChurnRouter(name, champion, id_column=id_column, prediction_log=plog)
    spath = None
    if opts.model_dir is None:  # the split file is the local control plane (registry versions only)
        spath = Path(opts.state_path) if opts.state_path else state_path(name, settings.home)
        if opts.canary_version or opts.shadow or opts.version:
            cur = read_state(spath) or SplitState(model_name=name)
            cur.champion_version = str(opts.version) if opts.version else None
            cur.canary_version = str(opts.canary_version) if opts.canary_version else None
            cur.mode = "shadow" if opts.shadow else "canary"
            pct = opts.canary_percent
            cur.canary_percent = float(pct if pct is not None else (0.0 if opts.shadow else 10.0)) \
                if opts.canary_version else 0.0
            cur.reason = "kfct serve command line"
            write_state(cur, spath)
    # A server that follows the champion alias (not one pinned to a version or canary on its
    # command line) converges on the registry aliases at start and on every watch cycle.
    follow = not (opts.version or opts.canary_version or opts.shadow) and opts.alias == "champion"
    watcher = SplitWatcher(router, spath, poll_seconds=opts.poll_seconds, retry_seconds=opts.retry_seconds,
                           follow_aliases=follow) if spath is not None else None
    server = KfctModelServer(host=opts.host or settings.serving_host,
                             http_port=opts.port if opts.port is not None else settings.serving_port,
                             max_request_bytes=opts.max_request_bytes or settings.max_request_bytes,
                             access_log=opts.access_log, extra_routes=add_kfct_routes(router, spath))
    server.register_models([router])
    return server, router, watcher, plog, spath


def _initial_load(router, watcher, wait: bool, watch: bool = True) -> None:
    if watcher is not None:
        if wait or not watch:
            watcher.check()  # apply the file (or load the configured champion) before listening
        if watch:
            watcher.start()
    elif wait:
        router.route.champion.load()
        router._set_route(router.route)
    else:  # model_dir mode without waiting: load in the background
        def bg():
            if router.route.champion.load():
                router._set_route(router.route)

        threading.Thread(target=bg, name="kfct-initial-load", daemon=True).start()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def start_in_thread(opts: ServerOptions | None = None, ready_timeout: float = 30.0, **kwargs: Any) -> Running:
    """Start a server on a background thread (port 0 = a free port); returns once it listens.

    Keyword arguments are `ServerOptions` fields (model_name, alias, version, host, port,
    canary_version, canary_percent, shadow, state_path, ...). With `wait_for_model=False`
    the server listens before any model is loaded (readiness answers 503 meanwhile).
    """
    import uvicorn

    opts = opts or ServerOptions(**kwargs)
    server, router, watcher, plog, spath = build(opts)
    _initial_load(router, watcher, opts.wait_for_model, opts.watch)
    from kfct.settings import get_settings

    s = get_settings()
    sock = _bind(opts.host or s.serving_host, opts.port if opts.port is not None else s.serving_port)
    uv = uvicorn.Server(server.rest.uvicorn_config())
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="kfct-model-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            shutdown(router, watcher, plog)
            raise RuntimeError("model server did not start listening")
        time.sleep(0.01)
    return Running(server, uv, router, watcher, plog, thread, sock, spath)


def serve(opts: ServerOptions) -> int:
    """Serve in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    from kfct.settings import get_settings

    server, router, watcher, plog, spath = build(opts)
    _initial_load(router, watcher, opts.wait_for_model, opts.watch)
    champ = router.route.champion
    if opts.model_dir and (champ is None or champ.current is None):
        # In a pod, a model that cannot load never will: exit so Kubernetes shows it, not a silent 503.
        print(f"kfct: cannot serve {opts.model_dir}: {champ.last_error if champ else 'no model'}", file=sys.stderr)
        shutdown(router, watcher, plog)
        return 3
    s = get_settings()
    host = opts.host or s.serving_host
    port = opts.port if opts.port is not None else s.serving_port
    sock = _bind(host, port)
    r = router.route
    print(f"kfct: serving {router.name} on http://{host}:{sock.getsockname()[1]}  "
          f"champion v{r.champion.loaded_version if r.champion else None}"
          + (f", {r.mode} v{r.canary.loaded_version} at {r.percent:g}%" if r.canary else "")
          + (f"  (split file {spath})" if spath else ""), flush=True)
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
    # that was there before it: make that a KeyboardInterrupt, i.e. a clean exit 0.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        uvicorn.Server(server.rest.uvicorn_config()).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(router, watcher, plog)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kfct.serving", description="kfct model server (KServe ModelServer)")
    add_server_arguments(p)
    return p


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", dest="model_name", default=None, help="registered model name (default: config)")
    p.add_argument("--alias", default="champion", help="alias to serve as champion (default: champion)")
    p.add_argument("--version", default=None, help="serve this version as champion instead of the alias")
    p.add_argument("--model-dir", default=None,
                   help="serve an MLflow model folder (InferenceService storage) instead of the registry")
    p.add_argument("--model-sha256", default=None, help="expected sha256 of the model file in --model-dir")
    p.add_argument("--host", default=None, help="bind address (default: settings, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: settings, 8080; 0 = any free port)")
    p.add_argument("--canary-version", default=None, help="registered version to serve as canary")
    p.add_argument("--canary-percent", type=float, default=None, help="traffic share of the canary (0-100)")
    p.add_argument("--shadow", action="store_true", help="champion answers; the canary version is scored and logged")
    p.add_argument("--no-watch", dest="watch", action="store_false", help="ignore the split state file")
    p.add_argument("--no-prediction-log", dest="log_predictions", action="store_false")
    p.add_argument("--access-log", action="store_true", help="log every request (costs latency)")


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """Command-line arguments -> options; a bad canary argument is a one-line `KfctError`
    (the one check for both `kfct serve` and `python -m kfct.serving`)."""
    from kfct.errors import KfctError
    from kfct.settings import get_settings

    if args.canary_percent is not None and not 0 <= args.canary_percent <= 100:
        raise KfctError(f"--canary-percent must be within 0..100, got {args.canary_percent:g}")
    if (args.canary_percent is not None or args.shadow) and not args.canary_version:
        raise KfctError("--canary-percent and --shadow need --canary-version")
    s = get_settings()
    sha = args.model_sha256 or s.model_sha256
    version = args.version
    if args.model_dir and not version:  # InferenceService: the deploy stage sets KFCT_MODEL_VERSION
        version = s.model_version
    return ServerOptions(model_name=args.model_name, alias=args.alias, version=version,
                         model_dir=args.model_dir, model_sha256=sha, host=args.host, port=args.port,
                         canary_version=args.canary_version, canary_percent=args.canary_percent,
                         shadow=args.shadow, watch=args.watch, log_predictions=args.log_predictions,
                         access_log=args.access_log)


def main(argv: list[str] | None = None) -> int:
    from kfct.errors import KfctError

    args = parser().parse_args(argv)
    try:
        opts = options_from_args(args)
    except KfctError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(opts)
