import time
import pytest
from _proxy_support import backends, dest, proxy_port, request, service, snapshot, table
from meshcore import model as m
pytestmark = pytest.mark.envoy

@pytest.mark.parametrize("i", range(4))
def test_empty_after(apply, proxy_env, i):
    with backends("web") as (web,):
        svc = service("web", [web])
        rt = table(svc, m.HttpRoute("r", timeout_ms=5, destinations=[dest(svc)]))
        plan = apply(snapshot([svc], [rt]))
        try:
            apply(snapshot([svc], []))
            plan = apply(snapshot([svc], [rt]))
        except TimeoutError as e:
            print(e)
            print(proxy_env.cp.status(proxy_env.node))
            raise
        assert request(proxy_port(plan, "web")).status == 200
