"""Live status of raw Envoy configs: what the node agent reports and `meshcore status --lab` merges."""

from __future__ import annotations

import datetime

from meshcore.cli import _with_live
from meshcore.agent import ConfigReason, config_statuses
from meshcore.compile import RawOrigin
from meshcore.model import EnvoyConfig, EnvoyResource, Snapshot, Source
from meshcore.proxy import Nack, NackError, Origin

_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"


def _config(name: str, selector: dict[str, str] | None = None) -> EnvoyConfig:
    return EnvoyConfig(name, "default", resources=(EnvoyResource(_LISTENER, f"default/{name}/l", {"name": "l"}),),
                       node_selector=selector or {},
                       source=Source(kind="CiliumEnvoyConfig", namespace="default", name=name))


def test_rejected_config_names_the_resource_and_envoys_message() -> None:
    broken, good, elsewhere = _config("broken"), _config("good"), _config("elsewhere", {"zone": "b"})
    raw = RawOrigin("CiliumEnvoyConfig", "default", "broken", 0, "Listener", "twins", "default/broken/twins")
    origin = Origin("CiliumEnvoyConfig default/broken resource 0 (Listener default/broken/twins)", broken.source,
                    raw=raw)
    nack = Nack("node-a", _LISTENER, "7", ("default/broken/twins",), "duplicate filter chain match",
                (origin,), datetime.datetime.now(datetime.UTC))
    snapshot = Snapshot(envoy_configs=(broken, good, elsewhere))
    found = {s.name: s for s in config_statuses(snapshot, {"zone": "a"}, refused=NackError([nack]))}
    assert found["broken"].accepted is False and found["broken"].reason is ConfigReason.REJECTED
    [error] = found["broken"].errors
    assert (error.index, error.type, error.name) == (0, "Listener", "twins")
    assert error.qualified_name == "default/broken/twins"
    assert "duplicate filter chain match" in error.message
    assert found["good"].to_data() == {"kind": "CiliumEnvoyConfig", "namespace": "default", "name": "good",
                                       "accepted": True, "reason": "Accepted", "message": "", "errors": []}
    assert found["elsewhere"].accepted is True and found["elsewhere"].reason is ConfigReason.NOT_SELECTED


def test_everything_applied_is_accepted() -> None:
    assert [s.accepted for s in config_statuses(Snapshot(envoy_configs=(_config("a"),)), {})] == [True]


def test_a_config_no_proxy_can_serve_is_not_accepted() -> None:
    [status] = config_statuses(Snapshot(envoy_configs=(_config("a"),)), {}, unserved="no envoy executable found")
    assert (status.accepted, status.reason, status.message) == (False, ConfigReason.NOT_SERVED,
                                                                "no envoy executable found")


def test_status_shows_a_rejection_as_accepted_false() -> None:
    translated = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                  "observedGeneration": 2}]}
    live = {"accepted": False, "reason": "Rejected",
            "errors": [{"resource": 0, "type": "Listener", "name": "twins", "message": "bad"}]}
    merged = _with_live(translated, live)
    [cond] = merged["conditions"]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("False", "Rejected", 2)
    assert "resource 0 (Listener twins): bad" in cond["message"]
    assert merged["errors"] == ["resource 0 (Listener twins): bad"]
    assert _with_live(translated, {"accepted": True, "errors": []}) == translated


def test_status_shows_an_unserved_config_as_accepted_false_with_the_reason() -> None:
    translated = {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}
    live = {"accepted": False, "reason": "NotServed", "message": "no node proxy could be started", "errors": []}
    [cond] = _with_live(translated, live)["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "NotServed")
    assert "no node proxy could be started" in cond["message"]
