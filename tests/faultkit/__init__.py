"""Fault injection for tests: a TCP proxy that can refuse, hang, slow down or cut connections.

from tests.faultkit.proxy import FaultProxy
with FaultProxy("127.0.0.1", moto_port) as proxy:
    settings.s3_endpoint = f"127.0.0.1:{proxy.port}"
    proxy.mode = "refuse"   # the store is away
    ...
    proxy.mode = "pass"     # it is back
"""
