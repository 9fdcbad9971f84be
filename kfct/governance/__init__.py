"""The registry and its governance: MLflow facade, locks, reconciliation, audit trail, lineage."""
