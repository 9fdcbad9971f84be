"""kfct serving: KServe predictor, local canary router, metrics, prediction log.

Modules (import what you need; nothing heavy happens at package import):
- `kfct.serving.predictor`  ChurnPredictor(kserve.Model): one registered version.
- `kfct.serving.router`     ChurnRouter: champion + canary/shadow behind one model name.
- `kfct.serving.server`     start_in_thread(...), serve(...), `python -m kfct.serving`.
- `kfct.serving.metrics`    Prometheus series and the per-version window stats.
- `kfct.serving.prediction_log` the writer of the rolling parquet log.
- `kfct.serving.predlog_spill` the log's bounded on-disk backlog while the store is away.
- `kfct.serving.readiness`  why the server is not ready (503 body, gauges).

The contracts serving shares with the stages live in the library layer:
`kfct.split_state` (the split file), `kfct.window_stats` (what a rollout compares),
`kfct.prediction_log` (the log's layout and its reader).
"""
