"""meshcore: a sidecar-free service-mesh data plane as a library.

The public API, for controllers and embedding::

    import meshcore

    result = meshcore.translate(["manifests/"])      # Kubernetes YAML → Snapshot
    for d in result.diagnostics: print(d)
    plan = meshcore.compile_plan(result.snapshot, node="node-1")
    for decision in plan.decisions: print(decision.service, decision.datapath, decision.reason)

``Translator`` and ``CompiledPlan`` keep a translation and a plan current as objects
change, at the cost of what changed.

See docs/embedding.md.
"""

from ._codes import TranslateCode
from ._translate import Translation, load, translate, translate_objects
from ._translator import Translator
from .adapter import Adapter, ApiKind, Fragment
from .compile import CompiledPlan, CompileOptions, Plan, compile_plan
from .kube import ServiceRanges
from .model import Diagnostic, Severity, Snapshot
from .registry import discover, register, unregister

__version__ = "0.1.0"

__all__ = [
    "Adapter", "ApiKind", "CompileOptions", "CompiledPlan", "Diagnostic", "Fragment", "Plan", "ServiceRanges",
    "Severity", "Snapshot", "TranslateCode", "Translation", "Translator", "__version__", "compile_plan", "discover",
    "load", "register", "translate", "translate_objects", "unregister",
]
