"""Benchmark the operator at scale against a baseline revision of itself, on the same local cluster, in one run.

For each operator (this checkout, then --baseline, a git revision checked out into a temporary worktree), on
the local control plane (hack/k8s/cluster.sh up; kwok plays the kubelet of its fake fleet):

  1. start `python -m gpt_operator run` as the operator's own service account (its RBAC, and the audit
     policy logs its reads), leader election on;
  2. apply N GPTDeployments (staging, 1 replica, builtin:tiny, 100m CPU) and time until all are Ready;
  3. at rest for --rest seconds: count its writes, LISTs and GETs in the audit log, and the CPU seconds of
     the operator and of kube-apiserver; read the operator's RSS;
  4. delete them all and wait until they are gone (the baseline needs its finalizer removed by itself).

    eval "$(hack/k8s/cluster.sh env)"
    .venv/bin/python hack/bench_operator.py                         # N=500, baseline 951316d
    .venv/bin/python hack/bench_operator.py --count 50 --rest 30 --baseline HEAD~3

Prints a table and the ratios new/baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = "serving.gpt-operator.dev"
NAMESPACE = "bench-operator"
SA_NAMESPACE = "gpt-operator-system"
USER = f"system:serviceaccount:{SA_NAMESPACE}:gpt-operator"
WRITES = {"create", "update", "patch", "delete"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def apiserver_pid() -> int:
    state = Path(os.environ.get("GPT_K8S_CLUSTER_DIR", Path(os.environ.get("TMPDIR", "/tmp")) / "gpt-operator-k8s"))
    return int((state / "pids" / "kube-apiserver").read_text())


def service_account_kubeconfig(directory: Path) -> Path:
    """A kubeconfig that acts as the operator's service account (token from the TokenRequest API)."""
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "gptdeployments.yaml"))
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "leader-election.yaml"):
        text = (ROOT / "manifests" / "base" / name).read_text()
        kubectl("apply", "--server-side", "-n", SA_NAMESPACE, "-f", "-", input=text)
    token = kubectl("create", "token", "gpt-operator", "-n", SA_NAMESPACE, "--duration=2h").strip()
    config = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    config["users"] = [{"name": "operator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "operator"
    path = directory / "operator.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def add_nodes(count: int) -> list[str]:
    """Enough fake spot CPU nodes (kwok keeps them Ready) for `count` pods, like the fleet's cpu-spot-0."""
    template = json.loads(kubectl("get", "node", "cpu-spot-0", "-o", "json"))
    names = [f"bench-spot-{i}" for i in range(count // 100 + 1)]
    for name in names:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {**template["metadata"]["labels"], "kubernetes.io/hostname": name},
            },
            "spec": {"taints": []},
            "status": {"allocatable": template["status"]["allocatable"], "capacity": template["status"]["capacity"]},
        }
        kubectl("apply", "-f", "-", input=json.dumps(node))
    kubectl("wait", "--for=condition=Ready", *[f"node/{n}" for n in names], "--timeout=60s")
    return names


def manifests(count: int) -> str:
    docs = []
    for i in range(count):
        docs.append(
            {
                "apiVersion": f"{GROUP}/v1alpha1",
                "kind": "GPTDeployment",
                "metadata": {"name": f"g{i:04d}", "namespace": NAMESPACE},
                "spec": {
                    "environment": "staging",
                    "replicas": 1,
                    "model": {"source": "builtin:tiny"},
                    "resources": {"cpu": "100m", "memory": "128Mi"},
                    "capacity": {"type": "spot", "nodeSelector": {"type": "kwok"}},  # never the real node
                },
            }
        )
    return "\n---\n".join(json.dumps(d) for d in docs)


def ready_count() -> int:
    items = json.loads(kubectl("get", "gptd", "-n", NAMESPACE, "-o", "json"))["items"]
    return sum(
        1
        for o in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (o.get("status") or {}).get("conditions", [])
        )
    )


def audit(since: datetime, until: datetime) -> Counter[str]:
    counts: Counter[str] = Counter()
    path = os.environ["GPT_E2E_AUDIT_LOG"]
    with open(path) as log:
        for line in log:
            event = json.loads(line)
            if event.get("user", {}).get("username") != USER:
                continue
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if not since <= at < until:
                continue
            resource = (event.get("objectRef") or {}).get("resource", "")
            verb = event["verb"]
            if resource == "leases":  # leader election's heartbeat (its writes are not in the audit policy)
                continue
            if verb in WRITES:
                counts["write"] += 1
            elif verb in ("list", "get"):
                counts[verb] += 1
    return counts


@dataclass
class Result:
    name: str
    to_ready_s: float = 0.0
    rest: Counter[str] = field(default_factory=Counter)
    operator_cpu: float = 0.0  # cores, average at rest
    apiserver_cpu: float = 0.0
    rss_mb: float = 0.0


def measure(name: str, source: Path, kubeconfig: Path, count: int, rest_s: float, log_dir: Path) -> Result:
    result = Result(name)
    # each operator with its own CRD: a newer schema defaults fields an older operator does not know
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(source / "crds" / "gptdeployments.yaml"))
    kubectl("create", "namespace", NAMESPACE, check=False)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": os.pathsep.join(str(source / p) for p in ("operator", "runtime", "model")),
        "GPT_OPERATOR_LIVENESS_ENDPOINT": "",
        "GPT_OPERATOR_LEASE_NAMESPACE": SA_NAMESPACE,
        "GPT_OPERATOR_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    log = (log_dir / f"{name}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "gpt_operator", "run"], cwd=source, env=env, stdout=log, stderr=log)
    try:
        time.sleep(5)
        if proc.poll() is not None:
            raise SystemExit(f"{name}: the operator exited with {proc.returncode}; see {log.name}")
        started = time.monotonic()
        kubectl("apply", "--server-side", "-f", "-", input=manifests(count))
        while (ready := ready_count()) < count:
            if time.monotonic() - started > 900:
                raise SystemExit(f"{name}: only {ready}/{count} Ready after 900 s")
            time.sleep(1)
        result.to_ready_s = time.monotonic() - started
        time.sleep(10)  # the last writes of becoming Ready
        api = apiserver_pid()
        cpu0, api0, t0, since = cpu_seconds(proc.pid), cpu_seconds(api), time.monotonic(), datetime.now(UTC)
        time.sleep(rest_s)
        cpu1, api1, t1, until = cpu_seconds(proc.pid), cpu_seconds(api), time.monotonic(), datetime.now(UTC)
        result.operator_cpu = (cpu1 - cpu0) / (t1 - t0)
        result.apiserver_cpu = (api1 - api0) / (t1 - t0)
        result.rss_mb = rss_mb(proc.pid)
        time.sleep(2)
        result.rest = audit(since, until)
        kubectl("delete", "gptd", "--all", "-n", NAMESPACE, "--wait=true", "--timeout=600s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=300s", check=False)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rest", type=float, default=60.0, help="seconds at rest to measure")
    parser.add_argument("--baseline", default="951316d", help="git revision of the baseline operator")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    for var in ("KUBECONFIG", "GPT_E2E_AUDIT_LOG"):
        if not os.environ.get(var):
            raise SystemExit(f'{var} is not set: eval "$(hack/k8s/cluster.sh env)" first')
    # An operator already running in the cluster would reconcile the benchmark's objects too (and hold the Lease).
    deployed = kubectl("get", "deployment", "gpt-operator", "-n", SA_NAMESPACE, "-o", "name", check=False).strip()
    if deployed:
        replicas = kubectl("get", deployed, "-n", SA_NAMESPACE, "-o", "jsonpath={.spec.replicas}").strip()
        kubectl("scale", deployed, "-n", SA_NAMESPACE, "--replicas=0")
        kubectl(
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app.kubernetes.io/name=gpt-operator",
            "-n",
            SA_NAMESPACE,
            "--timeout=120s",
            check=False,
        )
    try:
        return run(args)
    finally:
        if deployed:
            kubectl("scale", deployed, "-n", SA_NAMESPACE, f"--replicas={replicas}")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        work = Path(tmp)
        kubeconfig = service_account_kubeconfig(work)
        nodes = add_nodes(args.count)
        runs = [("new", ROOT)]
        if not args.skip_baseline:
            base = work / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True)
            runs.append((f"baseline {args.baseline}", base))
        results = []
        try:
            for name, source in runs:
                print(f"==> {name}: {args.count} GPTDeployments", file=sys.stderr)
                results.append(measure(name.split()[0], source, kubeconfig, args.count, args.rest, work))
                print(results[-1], file=sys.stderr)
        finally:
            kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "gptdeployments.yaml"))
            kubectl("delete", "node", *nodes, "--wait=false", check=False)
            if not args.skip_baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(work / "baseline")], cwd=ROOT, check=False)
            print(f"logs: {work} (removed)", file=sys.stderr)
    rest = f"at rest ({args.rest:.0f} s)"
    rows = [
        ("time to all Ready (s)", lambda r: r.to_ready_s, "{:.1f}"),
        (f"writes {rest}", lambda r: r.rest["write"], "{:.0f}"),
        (f"LISTs {rest}", lambda r: r.rest["list"], "{:.0f}"),
        (f"GETs {rest}", lambda r: r.rest["get"], "{:.0f}"),
        ("operator CPU at rest (cores)", lambda r: r.operator_cpu, "{:.3f}"),
        ("kube-apiserver CPU at rest (cores)", lambda r: r.apiserver_cpu, "{:.3f}"),
        ("operator RSS (MB)", lambda r: r.rss_mb, "{:.0f}"),
    ]
    names = [r.name for r in results]
    print(f"\n{args.count} GPTDeployments\n")
    print(
        f"| {'measure':36} | "
        + " | ".join(f"{n:>10}" for n in names)
        + (" | new/baseline |" if len(results) == 2 else " |")
    )
    print("|" + "-" * 38 + "|" + "|".join("-" * 12 for _ in names) + ("|--------------|" if len(results) == 2 else "|"))
    for label, get, fmt in rows:
        values = [get(r) for r in results]
        cells = " | ".join(f"{fmt.format(v):>10}" for v in values)
        ratio = ""
        if len(values) == 2:
            ratio = f" | {values[0] / values[1]:12.3f}" if values[1] else " | {:>12}".format("-")
        print(f"| {label:36} | {cells}{ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
