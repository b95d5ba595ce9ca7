"""A small in-process ADS server that replays recorded istiod "api" generator responses.

It stands in for istiod, which cannot run here (no Kubernetes API server): the responses
were written from istiod's api generator (pilot/pkg/networking/apigen), not captured from
a live istiod.

Responses come from ``tests/data/istiod/recorded.yaml`` (specs in YAML form, encoded here
into the real Istio messages and MCP resources). Every request a client sends is
recorded; :meth:`RecordedIstiod.push` sends a new state of one type to open streams.
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import yaml
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from meshcore_istio import parse_spec

DATA = Path(__file__).resolve().parents[2] / "data" / "istiod"
RECORDED = DATA / "recorded.yaml"
MCP_RESOURCE = "istio.mcp.v1alpha1.Resource"


def _mcp(name: str) -> Any:
    return message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(name))


def encode_resource(item: Mapping[str, Any]) -> any_pb2.Any:
    """One recorded resource → the Any istiod sends: an MCP Resource packing the spec message.

    ``body.spec`` is YAML-form and parsed with the adapter's parser; ``body.message`` (a
    message built in a test) or ``body.value`` (raw bytes) is sent as given.
    """
    meta, body = item["metadata"], item["body"]
    kind = body["type_url"].rpartition(".")[2]
    if "value" in body:
        value = body["value"]
    else:
        message: Message = body["message"] if "message" in body else parse_spec(kind, body["spec"])
        value = message.SerializeToString()
    resource = _mcp(MCP_RESOURCE)(body=any_pb2.Any(type_url=body["type_url"], value=value))
    resource.metadata.name = meta["name"]
    resource.metadata.version = str(meta.get("version", ""))
    resource.metadata.labels.update(meta.get("labels") or {})
    resource.metadata.annotations.update(meta.get("annotations") or {})
    if "create_time" in meta:
        stamp = meta["create_time"]
        if isinstance(stamp, datetime.datetime):
            resource.metadata.create_time.FromDatetime(stamp)
        else:
            resource.metadata.create_time.FromJsonString(stamp)
    return any_pb2.Any(type_url=f"type.googleapis.com/{MCP_RESOURCE}", value=resource.SerializeToString())


def response(type_url: str, resources: list[Mapping[str, Any]], version: str,
             nonce: str | None = None) -> discovery_pb2.DiscoveryResponse:
    """A DiscoveryResponse as istiod's api generator builds it."""
    return discovery_pb2.DiscoveryResponse(
        type_url=type_url, version_info=version, nonce=nonce or str(uuid.uuid4()),
        resources=[encode_resource(r) for r in resources])


def recorded() -> dict[str, dict[str, Any]]:
    """The recorded responses by type URL (YAML form)."""
    data = yaml.safe_load(RECORDED.read_text())
    return {r["type_url"]: r for r in data["responses"]}


class RecordedIstiod:
    """Serves the recorded responses on 127.0.0.1 (port 0 the first time, the same port on restart)."""

    def __init__(self, reject_unknown: bool = False) -> None:
        self.recorded = recorded()
        self.responses = {url: response(url, r["resources"], r["version_info"], r["nonce"])
                          for url, r in self.recorded.items()}
        self.reject_unknown = reject_unknown
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.port = 0
        self._cond = threading.Condition()
        self._streams: list[queue.SimpleQueue[Any]] = []
        self._server: Any = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> RecordedIstiod:
        """Bind and serve."""
        server = grpc.server(ThreadPoolExecutor(max_workers=8, thread_name_prefix="test-istiod"))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert port, f"cannot bind 127.0.0.1:{self.port}"
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Cut every stream and stop serving."""
        with self._cond:
            for out in self._streams:
                out.put(None)
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    def push(self, type_url: str, resources: list[Mapping[str, Any]], version: str) -> discovery_pb2.DiscoveryResponse:
        """Make ``resources`` the state of ``type_url`` and send it on every open stream."""
        sent = response(type_url, resources, version)
        with self._cond:
            self.responses[type_url] = sent
            for out in self._streams:
                out.put(sent)
        return sent

    def wait_for(self, match: Callable[[discovery_pb2.DiscoveryRequest], bool],
                 timeout: float = 5.0) -> discovery_pb2.DiscoveryRequest:
        """The first recorded request ``match`` accepts (waiting for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.requests if match(r)]
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no such request within {timeout}s; got {list(self.requests)}"
                self._cond.wait(remaining)

    # --- the stream -------------------------------------------------------------------

    def _read(self, requests: Any, out: queue.SimpleQueue[Any]) -> None:
        try:
            for request in requests:
                with self._cond:
                    self.requests.append(request)
                    self._cond.notify_all()
                    if request.response_nonce:
                        continue  # an ACK or NACK
                    sent = self.responses.get(request.type_url)
                if sent is None and self.reject_unknown:
                    out.put(f"unknown type {request.type_url}")
                    return
                out.put(sent if sent is not None else response(request.type_url, [], "0"))
        except grpc.RpcError:
            pass
        finally:
            out.put(None)

    def _serve(self, requests: Any, context: grpc.ServicerContext) -> Any:
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._cond:
            self._streams.append(out)
        threading.Thread(target=self._read, args=(requests, out), daemon=True).start()
        try:
            while True:
                item = out.get()
                if item is None:
                    return
                if isinstance(item, str):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, item)
                yield item
        finally:
            with self._cond:
                self._streams.remove(out)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, server: RecordedIstiod) -> None:
        self._server = server

    def StreamAggregatedResources(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._server._serve(request_iterator, context)
