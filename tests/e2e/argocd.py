"""Argo CD on the host, against the e2e cluster (tests/e2e/test_argocd.py): redis-server, the repo-server, the
application-controller and argocd-server (--insecure, for the action API), all from the one multi-call binary that
`hack/tools.sh argocd` builds, on free loopback ports, as Argo CD's own e2e runs them (ARGOCD_FAKE_IN_CLUSTER: the
in-cluster destination https://kubernetes.default.svc is the KUBECONFIG's API server). Its namespace gets the
argocd-cm (our health check and actions from manifests/argocd), argocd-rbac-cm and argocd-secret (a generated
admin password, never logged, and server.secretkey). The git repository is a local bare repo (file://)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..tools import tool_binary
from .kube import ROOT, Kube, free_port

ARGOCD_CM = ROOT / "manifests" / "argocd" / "component" / "argocd-cm.yaml"
COMPONENTS = ("argocd-repo-server", "argocd-application-controller", "argocd-server")


class GitRepo:
    """A bare repository (file://, what the Application's source names) and a work tree that commits to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "deploy.git"
        self.work = root / "work"
        self.url = f"file://{self.bare}"
        self._git("init", "--bare", "--initial-branch=main", str(self.bare), cwd=root)
        self._git("clone", "--quiet", self.url, str(self.work), cwd=root)

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "e2e",
            "GIT_AUTHOR_EMAIL": "e2e@example.com",
            "GIT_COMMITTER_NAME": "e2e",
            "GIT_COMMITTER_EMAIL": "e2e@example.com",
        }
        return subprocess.run(
            ["git", *args], cwd=cwd or self.work, env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()

    def add_tree(self, source: Path, path: str) -> None:
        """Copy a directory into the work tree at `path` (symlinks resolved: the chart's crds/ link), for the
        next commit."""
        shutil.copytree(source, self.work / path, symlinks=False, dirs_exist_ok=True)

    def commit(self, files: dict[str, Any], message: str) -> str:
        """Write each path's object(s) as YAML, commit, push to the bare repo; the new revision (sha)."""
        for path, obj in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(yaml.safe_dump_all(obj if isinstance(obj, list) else [obj], sort_keys=False))
        self._git("add", "-A")
        self._git("commit", "--quiet", "-m", message)
        self._git("push", "--quiet", "origin", "HEAD:main")
        return self._git("rev-parse", "HEAD")


class ArgoCD:
    """The running components, and the Application status and action API a user of Argo CD sees."""

    def __init__(self, kube: Kube, namespace: str, server_url: str, password: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.server_url = server_url
        self._password = password  # never printed
        self._token: str | None = None

    # --- the API (argocd-server) ---

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"argocd-server {method} {path}: {exc.code} {exc.read().decode()[:500]}") from None

    def login(self) -> None:
        """A session token for admin (POST /api/v1/session), as the CLI and UI get one."""
        self._token = None
        self._token = self._request("POST", "/api/v1/session", {"username": "admin", "password": self._password})[
            "token"
        ]

    def _resource_query(self, app: str, obj: dict[str, Any]) -> dict[str, str]:
        group, _, version = obj["apiVersion"].rpartition("/")
        return {
            "name": app,
            "appNamespace": self.namespace,
            "namespace": obj["metadata"]["namespace"],
            "resourceName": obj["metadata"]["name"],
            "group": group,
            "version": version,
            "kind": obj["kind"],
        }

    def actions(self, app: str, obj: dict[str, Any]) -> dict[str, bool]:
        """The resource's actions as Argo CD lists them: name -> enabled."""
        query = urllib.parse.urlencode(self._resource_query(app, obj))
        listed = self._request("GET", f"/api/v1/applications/{app}/resource/actions?{query}")["actions"] or []
        return {a["name"]: not a.get("disabled", False) for a in listed}

    def run_action(self, app: str, obj: dict[str, Any], action: str) -> None:
        """Run a resource action (POST .../resource/actions/v2), as the UI's action menu does."""
        self._request(
            "POST",
            f"/api/v1/applications/{app}/resource/actions/v2",
            {**self._resource_query(app, obj), "action": action},
        )

    def resource_health(self, app: str, kind: str, name: str) -> dict[str, Any]:
        """One resource's health as the UI shows it on its card (the resource tree: since Argo CD 3.0 the
        resources' health is not kept in the Application's status)."""
        tree = self._request("GET", f"/api/v1/applications/{app}/resource-tree?appNamespace={self.namespace}")
        for node in tree.get("nodes") or []:
            if node.get("kind") == kind and node.get("name") == name:
                return node.get("health") or {}
        return {}

    def wait_health(
        self,
        app: str,
        name: str,
        status: str,
        message: str | None = None,
        without: str | None = None,
        timeout: float = 180,
    ) -> dict[str, Any]:
        """Wait until the GPTDeployment's health (from our Lua) is `status`, its message containing `message`
        (and not `without`)."""

        def probe() -> dict[str, Any] | None:
            health = self.resource_health(app, "GPTDeployment", name)
            text = health.get("message", "")
            ok = health.get("status") == status and (message is None or message in text)
            ok = ok and (without is None or without not in text)
            return health if ok else None

        what = f"Application {app}: GPTDeployment {name} {status}" + (f" ({message!r})" if message else "")
        last: list[dict[str, Any]] = []

        def remembered() -> dict[str, Any] | None:
            last[:] = [self.resource_health(app, "GPTDeployment", name)]
            return probe()

        try:
            return self.kube.eventually(remembered, what, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast health: {last}") from None

    # --- the Application, as kubectl shows it ---

    def app(self, name: str) -> dict[str, Any]:
        obj = self.kube.get("applications.argoproj.io", name, self.namespace)
        assert obj is not None, f"Application {name} is gone"
        return obj

    def refresh(self, name: str) -> None:
        """Ask for a hard refresh (what a git webhook or `argocd app get --hard-refresh` does) instead of waiting for
        the next poll of the repository."""
        self.kube.annotate("applications.argoproj.io", name, self.namespace, "argocd.argoproj.io/refresh", "hard")

    def wait_app(self, name: str, what: str, check: Any, timeout: float = 180) -> dict[str, Any]:
        """Wait until check(application) holds; on timeout, say what the Application's status was."""

        def probe() -> dict[str, Any] | None:
            obj = self.app(name)
            return obj if check(obj) else None

        try:
            return self.kube.eventually(probe, f"Application {name}: {what}", timeout=timeout)
        except AssertionError as exc:
            status = self.app(name).get("status", {})
            summary = {k: status.get(k) for k in ("health", "sync", "conditions", "operationState")}
            raise AssertionError(f"{exc}\nApplication status: {json.dumps(summary)[:3000]}") from None


def _config(namespace: str, password_hash: str) -> list[dict[str, Any]]:
    shipped = yaml.safe_load(ARGOCD_CM.read_text())
    labels = {"app.kubernetes.io/part-of": "argocd"}
    argocd_cm = {
        **shipped,
        "metadata": {**shipped["metadata"], "namespace": namespace},
        # a user's own settings beside ours (the shipped file carries only the GPTDeployment keys)
        "data": {**shipped["data"], "timeout.reconciliation": "10s", "admin.enabled": "true"},
    }
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [
        argocd_cm,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-rbac-cm", "namespace": namespace, "labels": labels},
            "data": {"policy.default": "role:readonly"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "argocd-secret", "namespace": namespace, "labels": labels},
            "stringData": {
                "admin.password": password_hash,
                "admin.passwordMtime": now,
                "server.secretkey": secrets.token_urlsafe(32),
            },
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "default", "namespace": namespace},
            "spec": {
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": "*"}],
                "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
            },
        },
    ]


def _wait_port(url: str, procs: dict[str, subprocess.Popen[bytes]], logs: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"Argo CD did not answer {url} in {timeout:.0f}s (logs in {logs})")


@contextlib.contextmanager
def running(kube: Kube, namespace: str, work: Path) -> Iterator[ArgoCD]:
    """Start Argo CD for `namespace` (already created); stop every process at the end."""
    binary = tool_binary("argocd")
    crds = Path(binary).parent / "crds"
    for crd in ("application-crd.yaml", "appproject-crd.yaml", "applicationset-crd.yaml"):
        kube.run("apply", "--server-side", "--force-conflicts", "-f", str(crds / crd))
    names = ("applications", "appprojects", "applicationsets")
    kube.eventually(
        lambda: all(
            kube.attempt("wait", "--for=condition=Established", f"crd/{n}.argoproj.io").returncode == 0 for n in names
        ),
        "the Argo CD CRDs established",
    )

    password = secrets.token_urlsafe(18)
    # the CLI's own bcrypt (the hash Argo CD checks): the password is an argument of a short-lived child, not logged
    password_hash = subprocess.run(
        [binary, "account", "bcrypt", "--password", password],
        env={**os.environ, "ARGOCD_BINARY_NAME": "argocd"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    kube.apply(_config(namespace, password_hash))

    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(
        subprocess.run(
            [kube.kubectl, "config", "view", "--raw", "--minify", "--flatten"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    logs = work / "logs"
    for sub in ("logs", "tls", "ssh", "gpg-keys", "gpg-source", "bin"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    for component in COMPONENTS:  # argv[0] picks the component
        os.symlink(binary, work / "bin" / component)
    # the repo-server renders Helm sources with the helm CLI on its PATH (charts/gpt-operator from git)
    os.symlink(tool_binary("helm"), work / "bin" / "helm")
    redis_port, repo_port, server_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "ARGOCD_FAKE_IN_CLUSTER": "true",
        "ARGOCD_TLS_DATA_PATH": str(work / "tls"),
        "ARGOCD_SSH_DATA_PATH": str(work / "ssh"),
        "ARGOCD_GNUPGHOME": str(work / "gpg-keys"),
        "ARGOCD_GPG_DATA_PATH": str(work / "gpg-source"),
        "ARGOCD_GPG_ENABLED": "false",
        "HOME": str(work),
        # git-verify-wrapper.sh (beside the binary), which the repo-server runs for every revision
        "PATH": f"{Path(binary).parent}:{work / 'bin'}:{os.environ['PATH']}",
    }
    common = ["--namespace", namespace, "--loglevel", "info", "--redis", f"127.0.0.1:{redis_port}"]
    repo = f"127.0.0.1:{repo_port}"
    commands: dict[str, list[str]] = {
        "redis": [
            shutil.which("redis-server") or "redis-server",
            "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        ],
        "argocd-repo-server": [
            str(work / "bin" / "argocd-repo-server"), "--loglevel", "info", "--redis", f"127.0.0.1:{redis_port}",
            "--address", "127.0.0.1", "--port", str(repo_port),
            "--metrics-address", "127.0.0.1", "--metrics-port", str(free_port()), "--revision-cache-expiration", "5s",
        ],
        "argocd-application-controller": [
            str(work / "bin" / "argocd-application-controller"), *common, "--repo-server", repo,
            "--metrics-port", str(free_port()), "--app-resync", "10", "--app-resync-jitter", "0",
            "--self-heal-timeout-seconds", "2",
        ],
        "argocd-server": [
            str(work / "bin" / "argocd-server"), *common, "--repo-server", repo,
            "--insecure", "--address", "127.0.0.1", "--port", str(server_port),
            "--metrics-address", "127.0.0.1", "--metrics-port", str(free_port()),
            "--dex-server", "http://127.0.0.1:1", "--staticassets", str(work),
        ],
    }  # fmt: skip
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (logs / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
            if name == "redis":
                time.sleep(0.5)
        url = f"http://127.0.0.1:{server_port}"
        _wait_port(f"{url}/healthz", procs, logs)
        argocd = ArgoCD(kube, namespace, url, password)
        argocd.login()
        yield argocd
    finally:
        for proc in reversed(list(procs.values())):
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
