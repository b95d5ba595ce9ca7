"""Compile: Snapshot (+ node) → Plan, deciding per service port between eBPF and Envoy."""

from ._compile import WEIGHT_SCALE, CompileOptions, compile_plan
from ._diff import BpfDiff, diff_bpf
from ._plan import BpfBackend, BpfPlan, BpfService, Datapath, Decision, EnvoyPlan, Plan

__all__ = [
    "WEIGHT_SCALE", "BpfBackend", "BpfDiff", "BpfPlan", "BpfService", "CompileOptions",
    "Datapath", "Decision", "EnvoyPlan", "Plan", "compile_plan", "diff_bpf",
]
