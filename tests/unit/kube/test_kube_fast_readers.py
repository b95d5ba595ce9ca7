"""The direct readers used for large inventories agree with the Fields readers on any input.

For any pod or endpoint, the direct reader either gives up (``Unusual``) or returns exactly
what the Fields reader returns; whenever the Fields reader reports an error, the direct
reader has given up, so no error can slip through the fast path.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from meshcore.kube import Fields, FieldError, make_object
from meshcore.kube._endpointslice import _endpoint, _fast_endpoint
from meshcore.kube._pod import _fast_facts, pod_facts
from meshcore.kube._values import Unusual

# Values of all types: now and then one replaces a well-formed value.
_junk = st.one_of(st.integers(-2, 70000), st.booleans(), st.none(), st.text(max_size=3),
                  st.lists(st.integers(), max_size=1), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


def _maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually ``good``, about one time in 25 a value of some other type."""
    return st.sampled_from([False] * 24 + [True]).flatmap(lambda junk: _junk if junk else good)


def _fields(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with any subset of the given keys."""
    return st.fixed_dictionaries({}, optional=fields)


_port = _fields(
    containerPort=_maybe(st.integers(1, 65535)),
    name=_maybe(st.sampled_from(["http", "grpc", "", "metrics"])),
    protocol=_maybe(st.sampled_from(["TCP", "UDP", "SCTP"])),
)
_container = _fields(name=_maybe(st.just("c")), ports=_maybe(st.lists(_maybe(_port), max_size=3)),
                     restartPolicy=_maybe(st.sampled_from(["Always", "OnFailure"])))
_containers = _maybe(st.lists(_maybe(_container), min_size=1, max_size=2))
_spec = st.fixed_dictionaries({"containers": _containers}, optional=dict(
    serviceAccountName=_maybe(st.sampled_from(["sa", ""])),
    serviceAccount=_maybe(st.just("legacy")),
    hostNetwork=_maybe(st.booleans()),
    nodeName=_maybe(st.just("node-1")),
    initContainers=_maybe(st.lists(_maybe(_container), max_size=2)),
))
_status = _fields(
    phase=_maybe(st.sampled_from(["Running", "Pending", "Failed"])),
    podIP=_maybe(st.sampled_from(["10.0.0.1", "fd00::1", "nope"])),
    podIPs=_maybe(st.lists(_maybe(_fields(ip=_maybe(st.sampled_from(["10.0.0.1", "fd00::1"])))), max_size=2)),
    conditions=_maybe(st.lists(_maybe(_fields(type=_maybe(st.sampled_from(["Ready", "Initialized"])),
                                              status=_maybe(st.sampled_from(["True", "False", "Unknown"])))),
                               max_size=2)),
)
_meta = _fields(
    labels=_maybe(st.dictionaries(st.sampled_from(["app", "tier"]), _maybe(st.just("web")), max_size=2)),
    annotations=_maybe(st.dictionaries(st.sampled_from(["meshcore.io/proxy", "x"]),
                                       _maybe(st.sampled_from(["none", "mesh"])), max_size=2)),
    deletionTimestamp=_maybe(st.just("2024-01-01T00:00:00Z")),
    ownerReferences=_maybe(st.lists(_maybe(_fields(kind=_maybe(st.just("ReplicaSet")),
                                                   apiVersion=_maybe(st.just("apps/v1")),
                                                   name=_maybe(st.just("web-abc")))), max_size=2)),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meta=_maybe(_meta), spec=_maybe(_spec), status=_maybe(_status))
def test_pod_readers_agree(meta: Any, spec: Any, status: Any) -> None:
    if isinstance(meta, dict):
        meta = {"name": "p", **meta}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}
    obj = make_object(body)
    try:
        slow: Any = pod_facts(obj)
    except FieldError as exc:
        slow = exc
    try:
        fast: Any = _fast_facts(body)
    except Unusual:
        event("pod: direct reader gave up")
        return
    event("pod: direct reader answered")
    assert not isinstance(slow, FieldError), f"the direct reader accepted what Fields rejects: {slow}"
    assert fast == slow


_endpoint_data = st.fixed_dictionaries({
    "addresses": _maybe(st.lists(_maybe(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "010.0.0.1"])),
                                 max_size=2)),
}, optional=dict(
    conditions=_maybe(_fields(ready=_maybe(st.booleans()), serving=_maybe(st.booleans()),
                              terminating=_maybe(st.booleans()))),
    targetRef=_maybe(_fields(kind=_maybe(st.sampled_from(["Pod", "Node"])), name=_maybe(st.just("p")),
                             namespace=_maybe(st.just("other")))),
))


@settings(max_examples=400, deadline=None)
@given(raw=_maybe(_endpoint_data), family=st.sampled_from([4, 4, 4, 6]))
def test_endpoint_readers_agree(raw: Any, family: int) -> None:
    try:
        fast = _fast_endpoint(raw, "ns", family)
    except Unusual:
        event("endpoint: direct reader gave up")
        return
    event("endpoint: direct reader answered")
    try:
        slow = _endpoint(Fields(raw, "endpoints[0]"), "ns", family)
    except FieldError as exc:
        raise AssertionError(f"the direct reader accepted what Fields rejects: {exc}") from None
    assert fast == slow
