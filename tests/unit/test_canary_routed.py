"""`canary_routed`: does KServe's HTTPRoute carry the canary's weight? (issue 20, item 2)

The route dicts are shaped as KServe v0.20 (kserve/kserve aaac4e294)
pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/httproute_reconciler.go writes them:
`createHTTPRouteRule` backendRefs, reweighted by `applyCanaryWeights` (only ready canaries).
"""

from __future__ import annotations


def isvc(percent: int = 10) -> dict:
    return {
        "metadata": {"name": "churn", "namespace": "kfct"},
        "spec": {
            "predictor": {"model": {"storageUri": "s3://b/1"}},
            "canary": [{"predictor": {"name": "v7", "model": {"storageUri": "s3://b/7"}}, "trafficPercent": percent}],
        },
        "status": {"canaryStatuses": [{"name": "v7", "ready": True}], "url": "http://churn-kfct.example.com"},
    }


def route(*refs: tuple[str, int | None], rules: int = 1) -> dict:
    backend = [
        {"kind": "Service", "name": n, "namespace": "kfct", "port": 80, **({} if w is None else {"weight": w})} for n, w in refs
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "churn", "namespace": "kfct"},
        "spec": {
            "hostnames": ["churn-kfct.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backend} for _ in range(rules)
            ],
        },
    }


def test_weights_as_kserve_writes_them_are_routed():
    from kfct.cluster.kserve_isvc import canary_routed

    ok, why = canary_routed(isvc(), route(("churn-predictor", 90), ("churn-v7-predictor", 10), rules=2), "7")
    assert ok, why


def test_no_route_names_gateway_api():
    from kfct.cluster.kserve_isvc import canary_routed

    ok, why = canary_routed(isvc(), None, "7")
    assert not ok and "no HTTPRoute kfct/churn" in why and "enableGatewayApi" in why


def test_weights_absent_or_wrong_are_named():
    from kfct.cluster.kserve_isvc import canary_routed

    for r in (
        route(("churn-predictor", None)),  # the route before any canary: one unweighted backend
        route(("churn-predictor", 100), ("churn-v7-predictor", 0)),
        route(("churn-predictor", 90), ("churn-v7-predictor", 10), rules=1)
        | {
            "spec": {
                "rules": [
                    {"backendRefs": [{"name": "churn-predictor", "weight": 90}, {"name": "churn-v7-predictor", "weight": 10}]},
                    {"backendRefs": [{"name": "churn-predictor"}]},
                ]
            }
        },
    ):
        ok, why = canary_routed(isvc(), r, "7")
        assert not ok and "does not carry canary v7's weight" in why and "churn-v7-predictor at 10" in why


def test_stable_address_is_status_url_not_the_predictor_service():
    from kfct.cluster.kserve_isvc import stable_address

    obj = isvc()
    obj["status"]["address"] = {"url": "http://churn-predictor.kfct.svc.cluster.local"}
    assert stable_address(obj) == "http://churn-kfct.example.com"
    assert stable_address({"status": {}}) is None
