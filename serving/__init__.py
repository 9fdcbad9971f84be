"""kfct serving: KServe predictor, local canary router, metrics, prediction log.

Modules (import what you need; nothing heavy happens at package import):
- `kfct.serving.predictor`  ChurnPredictor(kserve.Model): one registered version.
- `kfct.serving.router`     ChurnRouter: champion + canary/shadow behind one model name; pairs a
                            canary's requests with the champion for the rollout.
- `kfct.serving.routing`    the sticky split and who sent a request (pure).
- `kfct.serving.shadow`     the bounded background worker (shadow scoring, paired scoring).
- `kfct.serving.split_watcher` applies the split file / registry aliases off the request path.
- `kfct.serving.http_limits` the bound on a request's head (431).
- `kfct.serving.server`     start_in_thread(...), serve(...), `python -m kfct.serving`.
- `kfct.serving.metrics`    Prometheus series and the per-version window stats.
- `kfct.serving.prediction_log` the writer of the rolling parquet log.
- `kfct.serving.schemas`    request shapes, V2 datatype checks, the 400s bad input gets.
- `kfct.serving.v2_binary`  the V2 binary tensor extension, parsed strictly (every malformed part a 400).
- `kfct.serving.predlog_spill` the log's bounded on-disk backlog while the store is away.
- `kfct.serving.predlog_encoder` the log's batches encoded in a child process.
- `kfct.serving.readiness`  why the server is not ready (503 body, gauges).

The contracts serving shares with the stages live in the library layer:
`kfct.contracts.split_state` (the split file), `kfct.contracts.window_stats` (what a rollout compares),
`kfct.contracts.prediction_log` (the log's layout and its reader), `kfct.contracts.replicas` (which local servers serve).
"""
