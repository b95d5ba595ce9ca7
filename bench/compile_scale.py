"""Scale of translation and compile: a synthetic cluster of N Services × M endpoints.

Prints, for one run: YAML load, translate (core kinds → inventory → Snapshot), Snapshot
hash, compile, and peak memory (max RSS of a fresh process per stage set). The ratio
lines compare this size against a 10× smaller cluster measured in the same run, which
shows whether any stage grows worse than linearly (×10 is linear). Adapters are
discovered before anything is timed, and compile is the best of three runs. Compile's
growth is also measured interleaved in one process (the 1/10 size and this size
compiled in turn, five rounds; the median of the per-round ratios with their
interquartile range), which a shared machine's load moves much less.

``--pods`` makes every endpoint a Pod of the input that its EndpointSlice names
(``targetRef``), as in a real cluster: N × M pods, so compile sees workloads behind
every backend.

    .venv/bin/python bench/compile_scale.py [--services 10000] [--endpoints 10] [--pods]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

from _harness import ratio_text


def synthetic_yaml(services: int, endpoints: int, pods: bool = False) -> str:
    """Services with EndpointSlices (as a controller would see them) in 100 namespaces; with ``pods``, their pods."""
    docs = []
    for ns in range(min(100, services)):
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{ns}\n")
    for i in range(services):
        ns = f"ns-{i % 100}"
        a, b = divmod(i, 250)
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\n"
            f"spec:\n  clusterIP: 10.96.{a}.{b + 1}\n  ports:\n  - name: http\n    port: 80\n"
            f"    targetPort: 8080\n    protocol: TCP\n"
        )
        addresses = [f"10.{100 + i // 6500}.{(i // 25) % 256}.{(i % 25) * 10 + e}" for e in range(endpoints)]
        target = "  targetRef: {{kind: Pod, name: svc-{i}-{e}, namespace: {ns}}}\n" if pods else ""
        eps = "".join(
            f"- addresses: [\"{address}\"]\n"
            f"  conditions: {{ready: true}}\n" + target.format(i=i, e=e, ns=ns)
            for e, address in enumerate(addresses)
        )
        if pods:
            docs.extend(
                f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{i}-{e}\n  namespace: {ns}\n"
                f"  labels: {{app: svc-{i}}}\nspec:\n  containers: [{{name: app, image: app}}]\n"
                f"status:\n  podIP: {address}\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
                for e, address in enumerate(addresses)
            )
        docs.append(
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-abcde\n"
            f"  namespace: {ns}\n  labels:\n    kubernetes.io/service-name: svc-{i}\n"
            f"addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n{eps}"
        )
    return "---\n".join(docs)


def measure(services: int, endpoints: int, pods: bool) -> dict[str, Any]:
    """Run every stage once in this process (compile three times) and return seconds and peak MiB."""
    import meshcore
    from meshcore.kube import load_text

    meshcore.translate(objects=[])  # discovering the adapters is not part of any stage
    text = synthetic_yaml(services, endpoints, pods)
    import yaml
    as_dicts = list(yaml.load_all(text, Loader=yaml.CSafeLoader))
    as_json = json.dumps({"apiVersion": "v1", "kind": "List", "items": as_dicts})
    t0 = time.perf_counter()
    objects, diags = load_text(text, "synthetic.yaml")
    t1 = time.perf_counter()
    json_objects, _ = load_text(as_json, "synthetic.json")
    t1j = time.perf_counter()
    result = meshcore.translate(objects=objects)
    t2 = time.perf_counter()
    digest = result.snapshot.content_hash
    t3 = time.perf_counter()
    compiles = []
    for _ in range(3):
        c0 = time.perf_counter()
        plan = meshcore.compile_plan(result.snapshot, "node-1")
        compiles.append(time.perf_counter() - c0)
    t4 = time.perf_counter()
    from_dicts = meshcore.translate(objects=as_dicts)
    t5 = time.perf_counter()
    rounds = interleaved_compile_ratios(result.snapshot, max(1, services // 10), endpoints, pods)
    assert not diags and result.ok, (diags[:3], result.errors[:3])
    assert len(json_objects) == len(objects)
    assert from_dicts.snapshot.content_hash == digest
    assert len(result.snapshot.services) == services and digest
    assert len(plan.bpf.services) == services
    return {
        "yaml_s": t1 - t0, "json_s": t1j - t1, "translate_s": t2 - t1j, "hash_s": t3 - t2,
        "compile_s": min(compiles), "dicts_s": t5 - t4,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mib_of_yaml": len(text) / 2**20, "compile_ratios": rounds,
    }


def interleaved_compile_ratios(snapshot: object, smaller: int, endpoints: int, pods: bool) -> list[float]:
    """Per round, compile time of ``snapshot`` over that of the cluster of ``smaller`` services."""
    import meshcore

    small = meshcore.translate(text=synthetic_yaml(smaller, endpoints, pods)).snapshot
    small.content_hash
    ratios = []
    for _ in range(5):
        t0 = time.perf_counter()
        meshcore.compile_plan(small, "node-1")
        t1 = time.perf_counter()
        meshcore.compile_plan(snapshot, "node-1")  # type: ignore[arg-type]
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    return ratios


def measure_memory(services: int, endpoints: int, pods: bool) -> dict[str, float]:
    """Peak memory of the path a user takes: YAML text → Snapshot → Plan, nothing else held."""
    import meshcore

    text = synthetic_yaml(services, endpoints, pods)
    result = meshcore.translate(text=text)
    del text
    plan = meshcore.compile_plan(result.snapshot, "node-1")
    assert result.ok and len(plan.bpf.services) == services
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--pods", action="store_true", help="every endpoint a Pod of the input")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.services, args.endpoints, args.pods)))
        return
    if args.child_memory:
        print(json.dumps(measure_memory(args.services, args.endpoints, args.pods)))
        return

    def run(n: int, mode: str = "--child") -> dict[str, Any]:
        out = subprocess.run([sys.executable, __file__, mode, "--services", str(n), "--endpoints",
                              str(args.endpoints), *(["--pods"] if args.pods else [])],
                             check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    small = run(max(1, args.services // 10))
    big = run(args.services)
    print(f"compile_scale: {args.services} services × {args.endpoints} endpoints"
          f"{' (each a pod of the input)' if args.pods else ''} ({big['mib_of_yaml']:.1f} MiB of YAML)")
    for key, label in (("yaml_s", "YAML load"), ("json_s", "JSON load (same objects)"),
                       ("translate_s", "translate → Snapshot"), ("dicts_s", "translate from dicts"),
                       ("hash_s", "Snapshot content hash"), ("compile_s", "compile → Plan")):
        print(f"  {label:<24} {big[key]:7.2f} s   (×{big[key] / max(small[key], 1e-9):5.1f} vs 1/10 size "
              f"{small[key]:.3f} s; linear = ×10)")
    for label, total in (("YAML load + translate", big["yaml_s"] + big["translate_s"]),
                         ("JSON load + translate", big["json_s"] + big["translate_s"]),
                         ("dicts (a controller)", big["dicts_s"])):
        print(f"  {label:<24} {total:7.2f} s   target ≤ 3 s: {'met' if total <= 3 else 'not met'}")
    print(f"  {'compile, interleaved':<24} ×{ratio_text(big['compile_ratios'])} for 10× the services "
          "(median of per-round ratios [IQR]; linear = ×10)")
    memory = run(args.services, "--child-memory")["peak_mib"]
    print(f"  {'peak memory (max RSS)':<24} {memory:7.0f} MiB for YAML text → Snapshot → Plan "
          f"  target ≤ 300 MiB: {'met' if memory <= 300 else 'not met'}")


if __name__ == "__main__":
    main()
