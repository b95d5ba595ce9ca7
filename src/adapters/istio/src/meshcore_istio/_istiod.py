"""A config source that subscribes to istiod over ADS with the "api" generator.

One stream carries a state-of-the-world subscription per kind: every response replaces
that kind's objects (an empty one removes them all). Each response is acknowledged with
its version and nonce; one with a resource that does not decode is rejected (NACK naming
the object and the field) and the kind keeps its previous objects. When the stream
fails the source keeps the last good objects and reconnects with capped backoff.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from meshcore.kube import KubeObject

from ._istiod_decode import ALL_KINDS, IstiodError, ResourceError, decode_resources, subscription_url
from ._istiod_types import (
    DEFAULT_NODE_ID,
    MIN_BACKOFF,
    REJECTIONS,
    IstiodStatus,
    IstiodTypeStatus,
    TypeState,
    check_address,
    log,
)


class IstiodSource:
    """Istio objects served by istiod's "api" generator at ``address`` (plaintext xDS, port 15010).

    ``kinds`` defaults to every kind the adapter handles; ``version`` is the API version
    requested (``v1``; ``v1alpha3`` for an istiod older than 1.22, which then asks
    security.istio.io for ``v1beta1``). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, address: str, *, node_id: str = DEFAULT_NODE_ID, kinds: Sequence[str] | None = None,
                 version: str = "v1", metadata: Mapping[str, str] | None = None, max_backoff: float = 10.0) -> None:
        from envoy.config.core.v3 import base_pb2
        from google.protobuf import struct_pb2

        self.address = check_address(address)
        self.type_urls: tuple[str, ...] = tuple(dict.fromkeys(subscription_url(k, version) for k in (kinds or ALL_KINDS)))
        self._version = version
        meta = struct_pb2.Struct()
        meta.update({**(metadata or {}), "GENERATOR": "api"})
        self._node = base_pb2.Node(id=node_id, user_agent_name="meshcore", metadata=meta)
        self._max_backoff = max_backoff
        self._cond = threading.Condition()
        self._types = {u: TypeState() for u in self.type_urls}
        self._generation = 0
        self._connected = self._ever_connected = False
        self._error = self._rejected = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._call: Any = None
        self._callbacks: list[Callable[[list[KubeObject]], None]] = []

    # --- public API -------------------------------------------------------------------

    def start(self) -> IstiodSource:
        """Open the stream in a background thread (once); returns the source."""
        with self._cond:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="meshcore-istiod", daemon=True)
                self._thread.start()
        return self

    def close(self) -> None:
        """End the stream and stop reconnecting; :meth:`watch` iterators end."""
        with self._cond:
            self._stop.set()
            call, thread = self._call, self._thread
            self._cond.notify_all()
        if call is not None:
            call.cancel()
        # Called from an on_change callback, the stream thread ends by itself once back in its loop.
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def __enter__(self) -> IstiodSource:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def snapshot(self, timeout: float = 10.0) -> list[KubeObject]:
        """Every object once each subscribed type has been received; raises :class:`IstiodError` otherwise."""
        self.start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = [u for u, t in self._types.items() if not t.received]
                if not missing:
                    return self._objects()
                if self._rejected:
                    raise IstiodError(self._rejection())
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    raise IstiodError(self._missing(missing, timeout))
                self._cond.wait(remaining)

    def objects(self) -> list[KubeObject]:
        """The objects held now (types not received yet contribute nothing)."""
        with self._cond:
            return self._objects()

    def watch(self, timeout: float | None = None) -> Iterator[list[KubeObject]]:
        """Yield every object once all types arrived, then again after each change, until :meth:`close`.

        Raises ``TimeoutError`` when nothing new arrives within ``timeout`` seconds, and
        :class:`IstiodError` when the server rejects the subscription.
        """
        self.start()
        seen = -1
        while True:
            with self._cond:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._stop.is_set() and not (self._ready() and self._generation != seen):
                    if self._rejected:
                        raise IstiodError(self._rejection())
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"istiod at {self.address}: no change within {timeout:g}s")
                    self._cond.wait(remaining)
                if self._stop.is_set():
                    return
                seen = self._generation
                current = self._objects()
            yield current

    def on_change(self, callback: Callable[[list[KubeObject]], None]) -> Callable[[], None]:
        """Call ``callback(objects)`` from the stream thread after each change; returns a remover."""
        with self._cond:
            self._callbacks.append(callback)

        def remove() -> None:
            with self._cond:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        return remove

    def status(self) -> IstiodStatus:
        """Whether the stream is up, and the accepted version and last rejection per type."""
        with self._cond:
            types = {u: IstiodTypeStatus(t.version, len(t.objects), t.error) for u, t in self._types.items()
                     if t.received or t.error}
            return IstiodStatus(self.address, self._connected, types, self._error)

    # --- internals --------------------------------------------------------------------

    def _objects(self) -> list[KubeObject]:
        return [o for t in self._types.values() for o in t.objects]

    def _ready(self) -> bool:
        return all(t.received for t in self._types.values())

    def _rejection(self) -> str:
        return (f"istiod at {self.address} rejected the subscription to {', '.join(self.type_urls)}: "
                f"{self._rejected} (does this istiod serve version {self._version!r}? Istio before 1.22 "
                "serves v1alpha3)")

    def _missing(self, missing: list[str], timeout: float) -> str:
        if not self._ever_connected:
            return f"istiod at {self.address} is unreachable ({self._error or 'no answer'}) after {timeout:g}s"
        why = [f"{u} ({self._types[u].error})" if self._types[u].error else u for u in missing]
        return f"istiod at {self.address}: no accepted response within {timeout:g}s for {', '.join(why)}"

    def _run(self) -> None:
        backoff, last = MIN_BACKOFF, ""
        while not self._stop.is_set():
            had_state = any(t.received for t in self._types.values())
            got = self._stream()
            if self._stop.is_set():
                return
            backoff = MIN_BACKOFF if got else min(backoff * 2, self._max_backoff)
            event = ("istiod stream lost; keeping the last good configuration and reconnecting"
                     if had_state or got else "cannot read from istiod; retrying")
            # One warning per distinct failure; repeats of it while retrying are debug.
            report = log().warning if (got or self._error != last) else log().debug
            report(event, address=self.address, error=self._error, retry_in=round(backoff, 2))
            last = self._error
            self._stop.wait(backoff)

    def _stream(self) -> bool:
        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for url in self.type_urls:
            requests.put(discovery_pb2.DiscoveryRequest(node=self._node, type_url=url,
                                                        version_info=self._types[url].version))
        channel = grpc.insecure_channel(self.address)
        received = False
        try:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
                iter(requests.get, None))
            with self._cond:
                self._call = call
                if self._stop.is_set():
                    call.cancel()
            for response in call:
                if not received:
                    received = self._connected_now()
                reply = self._handle(response)
                if reply is not None:
                    requests.put(reply)
            self._failed("istiod ended the stream", "")
        except grpc.RpcError as exc:
            self._failed(f"{exc.code().name}: {exc.details()}", exc.code().name)
        finally:
            requests.put(None)
            with self._cond:
                self._call = None
                self._connected = False
            channel.close()
        return received

    def _connected_now(self) -> bool:
        with self._cond:
            again = self._ever_connected
            self._connected = self._ever_connected = True
            self._error = self._rejected = ""
        if again:
            log().info("istiod stream re-established; resyncing", address=self.address)
        return True

    def _failed(self, error: str, code: str) -> None:
        with self._cond:
            if self._stop.is_set():
                return
            self._error = error
            if code in REJECTIONS:
                self._rejected = error
            self._cond.notify_all()

    def _handle(self, response: Any) -> Any:
        from envoy.service.discovery.v3 import discovery_pb2
        from google.rpc import status_pb2

        url = response.type_url
        state = self._types.get(url)
        if state is None:
            log().warning("istiod sent a type that was not requested", address=self.address, type_url=url)
            return None
        try:
            objects = decode_resources(response.resources, url, self.address)
        except Exception as exc:  # noqa: BLE001 - whatever fails to decode is rejected, never fatal
            reason = f"{url}: {exc}" if isinstance(exc, ResourceError) else f"{url}: cannot decode: {exc!r}"
            log().warning("istiod response rejected; keeping the previous objects", address=self.address,
                           type_url=url, version=response.version_info, error=str(exc))
            with self._cond:
                state.error = reason
                self._cond.notify_all()
            return discovery_pb2.DiscoveryRequest(type_url=url, version_info=state.version,
                                                  response_nonce=response.nonce,
                                                  error_detail=status_pb2.Status(code=3, message=reason))
        with self._cond:
            changed = not state.received or objects != state.objects
            state.received, state.objects, state.version, state.error = True, objects, response.version_info, ""
            ready = self._ready()
            if changed:
                self._generation += 1
                self._cond.notify_all()
            callbacks, current = list(self._callbacks), self._objects()
        if changed and ready:
            for callback in callbacks:
                try:
                    callback(current)
                except Exception as exc:  # a caller's bug must not end the subscription
                    log().error("istiod change callback failed", address=self.address, error=repr(exc))
        return discovery_pb2.DiscoveryRequest(type_url=url, version_info=response.version_info,
                                              response_nonce=response.nonce)


def read_istiod(address: str, timeout: float = 10.0) -> list[KubeObject]:
    """Every Istio object istiod at ``address`` serves, read once (the ``meshcore.sources`` entry ``istiod``)."""
    with IstiodSource(address) as source:
        return source.snapshot(timeout)
