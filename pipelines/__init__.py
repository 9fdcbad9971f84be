"""The `@dsl.pipeline` DAGs (CT and monitoring), their compiler entry and the KFP client code."""
