"""kfct: continuous training for tabular ML on Kubeflow Pipelines.

The package holds what every stage shares (settings, configuration, data
generator, the model object, lineage, audit). Stage logic lives in `components/`,
DAGs in `pipelines/`, the predictor in `serving/`. Nothing heavy is imported here.
"""

__version__ = "0.1.0"
