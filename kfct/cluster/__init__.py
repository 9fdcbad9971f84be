"""The cluster's APIs as kfct uses them: KServe InferenceServices, the kserve SDK, cluster checks, pod env."""
