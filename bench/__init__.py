"""`make bench`: kfct measured side by side with the tools users would pick instead.

`python -m bench [--quick] [--only serving,scoring,training,pipeline]` writes
`bench/results.md`, `bench/results.json` and `bench/results.png` and prints the table.

Modules, each named by what it measures or does:
- `bench.load`      the HTTP load generator (stdlib only; runs in its own process);
- `bench.peers`     starting/stopping the servers compared (kfct, `mlflow models serve`,
                    a plain FastAPI app as in the case study) and the FastAPI app itself;
- `bench.model`     the one registered model every section uses;
- `bench.serving`   latency and throughput of the three servers under the same load;
- `bench.predlog_tail` the prediction log's cost to the tail: wrk at one connection, log on / off / MLServer;
- `bench.predlog_cpu` the serving process's own CPU for its prediction log (load-proof; standalone);
- `bench.scoring`   batch scoring rows/s on 2.1M customers (kfct vs MLflow pyfunc);
- `bench.training`  training wall time at 100k and 1M rows (CPU; GPU figure from a file);
- `bench.pipeline`  the local CT pipeline, wall time per stage;
- `bench.report`    the Markdown table, the JSON record and the PNG chart.

Nothing is imported here: `python -m bench.load` must start in milliseconds.
"""
