"""Build and run the kfct model server: `kfct serve`, `python -m kfct.serving`, or in a thread.

    from kfct.serving.server import start_in_thread
    with start_in_thread(model_name="churn-classifier", port=0) as srv:   # port 0: a free one
        httpx.post(f"{srv.url}/v1/models/churn-classifier:predict", json={"instances": [...]})

One KServe ModelServer serves one model name through a `ChurnRouter`: the champion
(alias or version from the registry, or a local MLflow model folder with its sha256)
and, when the split state says so, a canary or shadow challenger. The split state
file (`kfct.contracts.split_state`) is watched, so `kfct rollout` and the deploy stage
(both audited) can move the traffic of every running server.

A server started with an explicit `--version` / `--canary-version` serves exactly that,
alone: it neither writes nor follows the shared split file (a second `kfct serve
--version 1` on another port once rewrote it and switched production to a rejected
version, unaudited). `--no-watch` serves the configured alias and ignores the file too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfct.contracts.split_state import SplitState

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
    log_encode_in_child: bool = True  # the log's encoding off the serving process (serving.predlog_encoder)
    max_request_bytes: int | None = None
    id_column: str | None = None
    wait_for_model: bool = True
    access_log: bool = False
    fast: bool = True
    switch_interval: float | None = 0.0005  # seconds; see `tune_runtime`
    paired_reference_version: str | None = None  # the champion a canary pod is judged against (`attach_reference`)
    extra: dict = field(default_factory=dict)


class Running:
    """A server started by `start`: its URL, router and a `stop()`."""

    def __init__(
        self,
        server: Any,
        uv_server: Any,
        router: Any,
        watcher: Any,
        prediction_log: Any,
        thread: threading.Thread,
        sock: socket.socket,
        state_path: Path | None,
    ):
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
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def shutdown(router: Any, watcher: Any, prediction_log: Any) -> None:
    """Stop in order; a failing step never skips the prediction log's final flush."""
    try:
        if watcher is not None:
            watcher.stop()
    finally:
        try:
            if router is not None:
                router.drain_shadow(5.0)
                router.close()
        finally:
            if prediction_log is not None:
                prediction_log.close()


def build(opts: ServerOptions) -> tuple[Any, Any, Any, Any, Path | None]:
    """(model server, router, watcher, prediction log, state path) — nothing listening yet."""
    from kfct.config import load_config
    from kfct.contracts.split_state import state_path
    from kfct.runtime.settings import get_settings
    from kfct.serving.app import KfctModelServer, add_kfct_routes
    from kfct.serving.prediction_log import PredictionLogger
    from kfct.serving.predictor import ChurnPredictor
    from kfct.serving.router import ChurnRouter, SplitWatcher

    settings = get_settings()
    cfg = load_config()
    name = opts.model_name or cfg.register_.model_name
    id_column = opts.id_column or cfg.dataset.id_column
    champion = ChurnPredictor(
        name,
        model_name=name,
        alias=opts.alias,
        version=opts.version,
        model_dir=opts.model_dir,
        expected_sha256=opts.model_sha256,
        id_column=id_column,
        fast=opts.fast,
    )
    plog = None
    if opts.log_predictions:
        plog = PredictionLogger(
            root=opts.prediction_log_dir,
            id_column=id_column,  # type: ignore[arg-type]  # None: no ids
            flush_seconds=opts.log_flush_seconds,
            encode_in_child=opts.log_encode_in_child,
        )
    router = ChurnRouter(name, champion, id_column=id_column, prediction_log=plog)
    spath = None
    if pinned_state(opts, name) is None and opts.model_dir is None and opts.watch:
        # the shared split file is the local control plane (registry versions only)
        spath = Path(opts.state_path) if opts.state_path else state_path(name, settings.home)
    # A server that follows the champion alias (not one pinned on its command line: those have no
    # split file) converges on the registry aliases at start and on every watch cycle.
    watcher = (
        SplitWatcher(
            router,
            spath,
            poll_seconds=opts.poll_seconds,
            retry_seconds=opts.retry_seconds,
            follow_aliases=opts.alias == "champion",
        )
        if spath is not None
        else None
    )
    token = settings.model_repository_token
    server = KfctModelServer(
        host=opts.host or settings.serving_host,
        http_port=opts.port if opts.port is not None else settings.serving_port,
        max_request_bytes=opts.max_request_bytes or settings.max_request_bytes,
        access_log=opts.access_log,
        extra_routes=add_kfct_routes(router, spath),
        repository_token=token.get_secret_value() if token else None,
        router=router,
    )
    server.register_models([router])
    return server, router, watcher, plog, spath


def pinned_state(opts: ServerOptions, name: str) -> SplitState | None:
    """The split an explicit command line pins (applied in memory, never written), or None."""
    from kfct.contracts.split_state import SplitState

    if opts.model_dir is not None or not (opts.version or opts.canary_version or opts.shadow):
        return None
    pct = opts.canary_percent
    return SplitState(
        model_name=name,
        champion_version=str(opts.version) if opts.version else None,
        canary_version=str(opts.canary_version) if opts.canary_version else None,
        mode="shadow" if opts.shadow else "canary",
        canary_percent=float(pct if pct is not None else (0.0 if opts.shadow else 10.0)) if opts.canary_version else 0.0,
        reason="kfct serve command line (this server only)",
    ).validate()


def tune_runtime(switch_interval: float | None) -> None:
    """Measured causes of the tail latency (`kfct.serving` docs, bench/results.md):

    - full GC passes over everything mlflow, pandas, kserve and the model left on the heap
      (gen2 up to 0.9 s, gen1 up to 60 ms under load): once loaded, that heap is frozen
      (`gc.freeze`: the collector skips it), so only request garbage is ever traversed;
    - request garbage is almost all freed by reference counting, yet at 16 connections the
      default thresholds (700, 10, 10) ran ~2,400 collections in 10 s, 1.1 s of pauses in all
      (gen2 up to 92 ms, traversing the prediction log's queued records); (20000, 20, 1000)
      measured 4 collections, 48 ms;
    - the prediction-log writer thread builds its Arrow table in pure Python for up to a few
      hundred ms every flush; with CPython's default 5 ms switch interval the event loop waited
      up to 5 ms per GIL hand-off. A shorter interval bounds that wait.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 1_000)
    if switch_interval:
        sys.setswitchinterval(switch_interval)


def _initial_load(router: Any, watcher: Any, wait: bool, watch: bool = True, pinned: SplitState | None = None) -> None:
    if pinned is not None:  # explicit versions: load them, follow nothing
        if wait:
            router.apply_state(pinned)
        else:
            threading.Thread(target=router.apply_state, args=(pinned,), name="kfct-initial-load", daemon=True).start()
        return
    if watcher is not None:
        if wait or not watch:
            watcher.check()  # apply the file (or load the configured champion) before listening
        if watch:
            watcher.start()
    elif wait:
        router.route.champion.load()
        router._set_route(router.route)
    else:  # model_dir mode without waiting: load in the background

        def bg() -> None:
            if router.route.champion.load():
                router._set_route(router.route)

        threading.Thread(target=bg, name="kfct-initial-load", daemon=True).start()


def attach_reference(
    router: Any, version: str, retry_seconds: float = 2.0, max_retry_seconds: float = 60.0, stop: threading.Event | None = None
) -> threading.Thread:
    """Load registered `version` of the served model as the router's `reference` (a canary pod's champion),
    in the background, retrying with backoff: pairing is the rollout's evidence, never a condition of
    serving. Until it loads, the pod exports no kfct_paired_* series and a rollout waits (then fails for
    lack of evidence: it never promotes without it)."""
    from kfct.serving.predictor import ChurnPredictor, fetch_version

    base = router.route.champion

    def run() -> None:
        delay = retry_seconds
        while stop is None or not stop.is_set():
            ref = ChurnPredictor(
                router.name,
                model_name=base.model_name,
                alias=None,
                version=str(version),
                id_column=router.id_column,
                fast=base.fast,
            )
            try:
                ref.install(fetch_version(base.model_name, version=str(version), id_column=router.id_column, fast=base.fast))
            except Exception as exc:  # noqa: BLE001 - any load failure is retried; serving goes on
                log.error(
                    "paired reference v%s of %s not loaded (retry in %.0f s): %s: %s",
                    version,
                    base.model_name,
                    delay,
                    type(exc).__name__,
                    exc,
                )
                time.sleep(delay)
                delay = min(delay * 2, max_retry_seconds)
                continue
            router.reference = ref
            log.info("model %s: scoring a share of its requests with v%s too (paired judgement)", router.name, version)
            return

    t = threading.Thread(target=run, name="kfct-paired-reference", daemon=True)
    t.start()
    return t


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
    _initial_load(router, watcher, opts.wait_for_model, opts.watch, pinned_state(opts, router.name))
    from kfct.runtime.settings import get_settings

    s = get_settings()
    sock = _bind(opts.host or s.serving_host, opts.port if opts.port is not None else s.serving_port)
    tune_runtime(opts.switch_interval)
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

    from kfct.runtime.settings import get_settings

    s = get_settings()
    host = opts.host or s.serving_host
    port = opts.port if opts.port is not None else s.serving_port
    try:
        # First: a process that cannot serve touches nothing (a second server on a taken port
        # once uploaded and deleted the first one's prediction-log spill files before exiting).
        sock = _bind(host, port)
    except OSError as exc:
        print(f"kfct: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 4
    try:
        server, router, watcher, plog, spath = build(opts)
    except Exception as exc:
        from kfct.serving.prediction_log import SpillDirectoryInUse

        if not isinstance(exc, SpillDirectoryInUse):
            raise
        print(f"kfct: cannot serve: {exc}", file=sys.stderr)
        sock.close()
        return 4
    _initial_load(router, watcher, opts.wait_for_model, opts.watch, pinned_state(opts, router.name))
    if opts.paired_reference_version:
        attach_reference(router, opts.paired_reference_version, opts.retry_seconds)
    champ = router.route.champion
    if (opts.model_dir or pinned_state(opts, router.name)) and (champ is None or champ.current is None):
        # In a pod, a model that cannot load never will: exit so Kubernetes shows it, not a silent 503.
        what = opts.model_dir or f"v{opts.version or '@' + opts.alias}"
        err = router.last_error or (champ.last_error if champ else None) or "no model"
        print(f"kfct: cannot serve {what}: {err}", file=sys.stderr)
        shutdown(router, watcher, plog)
        sock.close()
        return 3
    r = router.route
    from kfct.contracts import replicas

    replica = replicas.register(router.name, f"http://{host}:{sock.getsockname()[1]}", s.home)  # for `kfct rollout`
    print(
        f"kfct: serving {router.name} on http://{host}:{sock.getsockname()[1]}  "
        f"champion v{r.champion.loaded_version if r.champion else None}"
        + (f", {r.mode} v{r.canary.loaded_version} at {r.percent:g}%" if r.canary else "")
        + (f"  (split file {spath})" if spath else ""),
        flush=True,
    )
    import signal

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
    # that was there before it: make that a KeyboardInterrupt, i.e. a clean exit 0.
    signal.signal(signal.SIGTERM, _interrupt)
    tune_runtime(opts.switch_interval)
    try:
        # in-flight requests get GRACE_SECONDS to finish, never longer
        uvicorn.Server(server.rest.uvicorn_config(timeout_graceful_shutdown=GRACE_SECONDS)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        replicas.unregister(replica)
        bounded_shutdown(router, watcher, plog)
    return 0


GRACE_SECONDS = 5  # in-flight requests at SIGTERM
SHUTDOWN_SECONDS = 20.0  # everything after: under Kubernetes' default 30 s grace, whatever the store does


def bounded_shutdown(router: Any, watcher: Any, prediction_log: Any, limit: float = SHUTDOWN_SECONDS) -> None:
    """`shutdown` with a deadline: the prediction log's close keeps within its own budget, and a
    watchdog ends the process if anything still holds it past `limit` (once, a SIGTERM sent while
    S3 was down was ignored; a second one stopped it)."""
    import os

    def _overdue() -> None:
        log.error("shutdown still not done after %.0f s: exiting now (rows not yet on disk are lost)", limit)
        logging.shutdown()
        os._exit(1)

    watchdog = threading.Timer(limit, _overdue)
    watchdog.daemon = True
    watchdog.start()
    try:
        shutdown(router, watcher, prediction_log)
    finally:
        watchdog.cancel()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kfct.serving", description="kfct model server (KServe ModelServer)")
    add_server_arguments(p)
    return p


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", dest="model_name", default=None, help="registered model name (default: config)")
    p.add_argument("--alias", default="champion", help="alias to serve as champion (default: champion)")
    p.add_argument("--version", default=None, help="serve this version alone (writes and follows no shared split file)")
    p.add_argument(
        "--model-dir", default=None, help="serve an MLflow model folder (InferenceService storage) instead of the registry"
    )
    p.add_argument("--model-sha256", default=None, help="expected sha256 of the model file in --model-dir")
    p.add_argument("--host", default=None, help="bind address (default: settings, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: settings, 8080; 0 = any free port)")
    p.add_argument("--canary-version", default=None, help="registered version to serve as canary")
    p.add_argument("--canary-percent", type=float, default=None, help="traffic share of the canary (0-100)")
    p.add_argument("--shadow", action="store_true", help="champion answers; the canary version is scored and logged")
    p.add_argument(
        "--no-watch", dest="watch", action="store_false", help="serve the alias (or --version) only; ignore the shared split file"
    )
    p.add_argument("--no-prediction-log", dest="log_predictions", action="store_false")
    p.add_argument("--access-log", action="store_true", help="log every request (costs latency)")
    p.add_argument(
        "--paired-reference-version",
        default=None,
        help="also score this pod's requests with this registered version (the champion a canary is "
        "judged against; default: KFCT_PAIRED_REFERENCE_VERSION, set by the deploy stage)",
    )


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """Command-line arguments -> options; a bad canary argument is a one-line `KfctError`
    (the one check for both `kfct serve` and `python -m kfct.serving`)."""
    from kfct.errors import KfctError
    from kfct.runtime.settings import get_settings

    if args.canary_percent is not None and not 0 <= args.canary_percent <= 100:
        raise KfctError(f"--canary-percent must be within 0..100, got {args.canary_percent:g}")
    if (args.canary_percent is not None or args.shadow) and not args.canary_version:
        raise KfctError("--canary-percent and --shadow need --canary-version")
    s = get_settings()
    sha = args.model_sha256 or s.model_sha256
    version = args.version
    if args.model_dir and not version:  # InferenceService: the deploy stage sets KFCT_MODEL_VERSION
        version = s.model_version
    reference = getattr(args, "paired_reference_version", None) or s.paired_reference_version
    return ServerOptions(
        model_name=args.model_name,
        alias=args.alias,
        version=version,
        model_dir=args.model_dir,
        model_sha256=sha,
        host=args.host,
        port=args.port,
        canary_version=args.canary_version,
        canary_percent=args.canary_percent,
        shadow=args.shadow,
        watch=args.watch,
        log_predictions=args.log_predictions,
        access_log=args.access_log,
        paired_reference_version=reference,
    )


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
