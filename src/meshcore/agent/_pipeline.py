"""Objects → translation → plan for one node, kept between generations so a change costs what it touches.

The pipeline holds a :class:`~meshcore._translator.Translator` and the last
:class:`~meshcore.compile.CompiledPlan`. A generation given as every object is first
turned into the change it makes (objects compared by key, then resourceVersion or
content); a generation given as a change is applied as it is. An EndpointSlice change
then rebuilds one Service, recompiles its frontends and hands the kernel only those;
anything wider translates or compiles everything, with the same result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from .._translator import ObjectKey, Translator, object_key
from .._translate import Translation
from ..adapter import Adapter
from ..compile import BpfDiff, BpfPlan, CompiledPlan, CompileOptions
from ..kube import KubeObject

__all__ = ["Generation", "Pipeline"]

def node_key(name: str) -> ObjectKey:
    """The (apiVersion, kind, namespace, name) of the v1 Node ``name`` (cluster-scoped)."""
    return ("v1", "Node", "", name)


@attrs.frozen
class Generation:
    """One generation through the pipeline: its translation, plan and node labels.

    ``bpf_change`` is (the plan the previous generation compiled, the frontends that
    differ from it) when the kernel can be told only those; ``scope`` says what was
    rebuilt (see :attr:`~meshcore.agent.GenerationReport.scope`).
    """

    translation: Translation
    compiled: CompiledPlan
    labels: Mapping[str, str]
    bpf_change: tuple[BpfPlan, BpfDiff] | None = None
    scope: str = "whole"


class Pipeline:
    """Translation and compile for node ``node``, incremental where the change allows it."""

    def __init__(self, node: str, default_labels: Mapping[str, str], adapters: Sequence[Adapter] | None,
                 options: CompileOptions) -> None:
        self.node = node
        self.default_labels = dict(default_labels)
        self.options = options
        self._translator = Translator(adapters)
        self._compiled: CompiledPlan | None = None

    def objects(self, objects: Iterable[KubeObject]) -> Generation:
        """The generation holding exactly ``objects``."""
        listed = list(objects)
        if self._translator.translation is None:
            return self._compile(self._translator.translate(listed))
        found = self._translator.changes(listed)
        if found is None:
            return self._compile(self._translator.translate(listed))
        upserted, deleted = found
        order = [object_key(o) for o in listed]
        return self._compile(self._translator.update(upserted, deleted, order))

    def changes(self, upserted: Iterable[KubeObject], deleted: Iterable[ObjectKey]) -> Generation:
        """The generation the previous one becomes with ``upserted`` added or replaced and ``deleted`` removed."""
        return self._compile(self._translator.update(upserted, deleted))

    @property
    def translation(self) -> Translation | None:
        """The last generation's translation (None before the first)."""
        return self._translator.translation

    def recompile(self) -> Generation:
        """The last generation compiled again with the current :attr:`options`."""
        translation = self._translator.translation
        if translation is None:
            raise ValueError("nothing was translated yet")
        return self._compile(translation, whole=True)

    def labels(self) -> dict[str, str]:
        """The node's labels: its Node object's, else the defaults."""
        node = self._translator.objects.get(node_key(self.node))
        return dict(node.labels) if node is not None else dict(self.default_labels)

    def _compile(self, translation: Translation, whole: bool = False) -> Generation:
        labels = self.labels()
        options = attrs.evolve(self.options, node_labels=labels)
        previous = self._compiled
        if previous is None:
            compiled = CompiledPlan.compile(translation.snapshot, self.node, options)
        else:
            compiled = previous.recompile(translation.snapshot, self.node, options)
        self._compiled = compiled
        replaced = None if whole else self._translator.replaced
        if replaced is None:
            return Generation(translation, compiled, labels)
        if previous is None or compiled.bpf_diff is None:
            return Generation(translation, compiled, labels, scope="compiled whole")
        count = f"{len(replaced)} service{'' if len(replaced) == 1 else 's'}"
        return Generation(translation, compiled, labels, (previous.plan.bpf, compiled.bpf_diff), count)
