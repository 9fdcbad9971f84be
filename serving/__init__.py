"""kfct serving: KServe predictor, local canary router, metrics, prediction log.

Modules (import what you need; nothing heavy happens at package import):
- `serving.predictor`  ChurnPredictor(kserve.Model): one registered version.
- `serving.router`     ChurnRouter: champion + canary/shadow behind one model name.
- `serving.server`     start_in_thread(...), serve(...), `python -m serving`.
- `serving.split_state` the split file the deploy stage and rollout write.
- `serving.metrics`    Prometheus series and the per-version window stats.
- `serving.prediction_log` rolling parquet log + read_prediction_log(since).
"""
