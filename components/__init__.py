"""Pipeline stages. Each module: a pure core (DataFrames, paths, plain values) and a
thin component function (`verb_noun`) that `pipelines/ct.py` wraps with `dsl.component`.

Component functions import what they use inside their body: kfp copies only the
function's source into the container, so module-level imports are not there.
"""
