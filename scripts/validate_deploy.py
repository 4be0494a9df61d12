#!/usr/bin/env python3
"""Validate deploy/k8s offline: every object against its schema, then the references between them.

- Kubernetes' own kinds against the OpenAPI schemas that the kubernetes-validate package ships,
  strict (unknown fields are errors), for each version in K8S_VERSIONS.
- The Gateway API's and the Inference Extension's kinds against their CRDs' openAPIV3Schema,
  vendored in deploy/schemas (see its README), made strict as the API server is: where a CRD does
  not preserve unknown fields it prunes them, and kubectl's strict field validation refuses them,
  so every object schema with properties gets additionalProperties: false. CEL rules
  (x-kubernetes-validations) are not evaluated; they are counted in the report.
- What no schema covers: the files kustomization.yaml lists, the endpoint picker's and
  prometheus-adapter's configurations inside their ConfigMaps, and the names, labels and ports by
  which the objects find each other, the grace period against the shutdown timeout, the probes.

Then a self-check: known-bad variants of the manifests must each be refused, so that a validation
that stopped biting fails too. Exit status 1 on any problem.
"""
import copy
import glob
import json
import os
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
K8S = os.path.join(ROOT, "deploy", "k8s")
SCHEMAS = os.path.join(ROOT, "deploy", "schemas")
# The oldest Kubernetes these manifests need (the preStop sleep action is on by default from 1.30)
# and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load_docs():
    """(file, doc) for every object under deploy/k8s, kustomization files aside."""
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True)):
        if os.path.basename(path) == "kustomization.yaml":
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.relpath(path, ROOT), doc))
    return docs


def strict(schema):
    """The CRD schema as the API server applies it: unknown fields refused unless preserved."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k == "x-kubernetes-validations" else strict(v)) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def count_cel(schema):
    if isinstance(schema, dict):
        return len(schema.get("x-kubernetes-validations", [])) + sum(
            count_cel(v) for v in schema.values())
    if isinstance(schema, list):
        return sum(count_cel(v) for v in schema)
    return 0


def load_crds():
    crds = {}
    for path in sorted(glob.glob(os.path.join(SCHEMAS, "*.json"))):
        with open(path) as f:
            for v in json.load(f):
                api = f"{v['group']}/{v['version']}"
                schema = v["openAPIV3Schema"]
                # metadata is the API server's ObjectMeta, checked by check_metadata.
                schema["properties"]["metadata"] = {"type": "object"}
                crds[(api, v["kind"])] = (strict(schema), count_cel(schema))
    return crds


def check_metadata(where, doc, errors):
    meta = doc.get("metadata") or {}
    extra = set(meta) - {"name", "namespace", "labels", "annotations"}
    if extra:
        errors.append(f"{where}: metadata has {sorted(extra)}")
    name = meta.get("name", "")
    if not DNS1123.match(name) or len(name) > 63:
        errors.append(f"{where}: metadata.name {name!r} is not a DNS-1123 label")


def validate_schemas(docs, crds, errors, report):
    for path, doc in docs:
        kind, api = doc.get("kind"), doc.get("apiVersion")
        where = f"{path}: {kind}/{(doc.get('metadata') or {}).get('name')}"
        if (api, kind) in crds:
            schema, cel = crds[(api, kind)]
            check_metadata(where, doc, errors)
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
                loc = ".".join(str(p) for p in e.absolute_path)
                errors.append(f"{where}: {loc}: {e.message}")
            report.append(f"{where}: {api} CRD schema ({cel} CEL rules not evaluated)")
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                loc = ".".join(str(p) for p in e.path)
                errors.append(f"{where}: Kubernetes {version}: {loc}: {e.message}")
            except kubernetes_validate.utils.SchemaNotFoundError as e:
                errors.append(f"{where}: {e.message}")
        report.append(f"{where}: Kubernetes {', '.join(K8S_VERSIONS)} (strict)")


def find(docs, kind, name=None):
    return [d for _, d in docs if d.get("kind") == kind
            and (name is None or d["metadata"].get("name") == name)]


def one(docs, kind, name, errors, why):
    found = find(docs, kind, name)
    if len(found) != 1:
        errors.append(f"{why}: {kind}/{name}: {len(found)} found, want 1")
        return None
    return found[0]


def flag(args, name):
    """The value of --name=VALUE or --name VALUE in a container's args, else None."""
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_kustomizations(errors):
    for kfile in glob.glob(os.path.join(K8S, "**", "kustomization.yaml"), recursive=True):
        d = os.path.dirname(kfile)
        with open(kfile) as f:
            k = yaml.safe_load(f)
        listed = set(k.get("resources", []))
        here = {os.path.basename(p) for p in glob.glob(os.path.join(d, "*.yaml"))}
        here.discard("kustomization.yaml")
        rel = os.path.relpath(kfile, ROOT)
        for r in sorted(listed - here):
            errors.append(f"{rel}: lists {r}, which does not exist")
        for r in sorted(here - listed):
            errors.append(f"{rel}: does not list {r}")


def check_epp_config(where, text, errors):
    """An EndpointPickerConfig: its kind, and every pluginRef names a plugin it declares."""
    cfg = yaml.safe_load(text)
    if cfg.get("apiVersion") != "llm-d.ai/v1alpha1" or cfg.get("kind") != "EndpointPickerConfig":
        errors.append(f"{where}: not an llm-d.ai/v1alpha1 EndpointPickerConfig")
    names = set()
    for p in cfg.get("plugins", []):
        if "type" not in p:
            errors.append(f"{where}: a plugin without a type")
        names.add(p.get("name", p.get("type")))
    refs = [r["pluginRef"] for prof in cfg.get("schedulingProfiles", [])
            for r in prof.get("plugins", [])]
    for src in (cfg.get("dataLayer") or {}).get("sources", []):
        refs.append(src["pluginRef"])
        refs += [e["pluginRef"] for e in src.get("extractors", [])]
    for r in refs:
        if r not in names:
            errors.append(f"{where}: pluginRef {r} names no plugin")
    if not cfg.get("schedulingProfiles"):
        errors.append(f"{where}: no schedulingProfiles")
    return cfg


def check_references(docs, errors):
    """How the objects find each other, and the numbers that must agree."""
    dep = one(docs, "Deployment", "frugal", errors, "model servers")
    if not dep:
        return
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    c = pod["spec"]["containers"][0]
    args = c.get("args", [])
    frugal_env = c.get("env", [])
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if not selects(dep["spec"]["selector"]["matchLabels"], labels):
        errors.append("Deployment/frugal: its selector does not select its pods")

    # Shutdown: SIGKILL must come after the preStop sleep and the whole drain.
    timeout = int(flag(args, "shutdown-timeout") or 30)
    sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if grace <= timeout + sleep:
        errors.append(f"Deployment/frugal: terminationGracePeriodSeconds {grace} is not above "
                      f"preStop sleep {sleep} + --shutdown-timeout {timeout}")
    # Probes: readiness follows loading and draining, liveness only the process.
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health":
        errors.append("Deployment/frugal: readinessProbe must GET /health")
    for probe in ("livenessProbe", "startupProbe"):
        if c.get(probe, {}).get("httpGet", {}).get("path") != "/health/live":
            errors.append(f"Deployment/frugal: {probe} must GET /health/live")
    res = c.get("resources", {})
    if res.get("requests", {}).get("cpu") != res.get("limits", {}).get("cpu"):
        errors.append("Deployment/frugal: CPU request and limit differ (frugal's threads follow "
                      "the limit)")
    for d in find(docs, "Deployment"):
        sc = d["spec"]["template"]["spec"].get("securityContext", {})
        for cc in d["spec"]["template"]["spec"]["containers"]:
            csc = cc.get("securityContext", {})
            name = d["metadata"]["name"]
            if not sc.get("runAsNonRoot") or not isinstance(sc.get("runAsUser"), int) or \
                    sc.get("runAsUser") == 0:
                errors.append(f"Deployment/{name}: not a non-root numeric user")
            if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation", True) \
                    or csc.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"Deployment/{name}: root filesystem writable, privilege escalation "
                              "or capabilities left")
    if flag(args, "host") != "0.0.0.0":
        errors.append("Deployment/frugal: serve must listen on 0.0.0.0")
    if str(ports.get("http")) != flag(args, "port"):
        errors.append("Deployment/frugal: the port named http is not --port")
    kv = flag(args, "kv-events-endpoint")
    kv_port = int(kv.rsplit(":", 1)[1]) if kv else None
    if kv_port is not None and ports.get("kv-events") != kv_port:
        errors.append("Deployment/frugal: the port named kv-events is not --kv-events-endpoint's")

    # Services select pods that have their target ports.
    for svc in find(docs, "Service"):
        sel = svc["spec"].get("selector", {})
        targets = [d for d in find(docs, "Deployment")
                   if selects(sel, d["spec"]["template"]["metadata"]["labels"])]
        if not targets:
            errors.append(f"Service/{svc['metadata']['name']}: selects no Deployment's pods")
        for t in targets:
            names = {p.get("name") for cc in t["spec"]["template"]["spec"]["containers"]
                     for p in cc.get("ports", [])}
            for p in svc["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                if isinstance(tp, str) and tp not in names:
                    errors.append(f"Service/{svc['metadata']['name']}: targetPort {tp} is no "
                                  "port of its pods")
    for pdb in find(docs, "PodDisruptionBudget"):
        if not selects(pdb["spec"]["selector"]["matchLabels"], labels):
            errors.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selects no frugal pod")

    # The pool: frugal's pods on frugal's port, its picker a Service with that port.
    for pool in find(docs, "InferencePool"):
        name = pool["metadata"]["name"]
        if not selects(pool["spec"]["selector"]["matchLabels"], labels):
            errors.append(f"InferencePool/{name}: selects no frugal pod")
        if [p["number"] for p in pool["spec"]["targetPorts"]] != [ports.get("http")]:
            errors.append(f"InferencePool/{name}: targetPorts are not frugal's http port")
        ref = pool["spec"]["endpointPickerRef"]
        svc = one(docs, "Service", ref["name"], errors, f"InferencePool/{name} endpointPickerRef")
        if svc and ref["port"]["number"] not in [p["port"] for p in svc["spec"]["ports"]]:
            errors.append(f"InferencePool/{name}: Service/{ref['name']} has no port "
                          f"{ref['port']['number']}")
    for obj in find(docs, "InferenceObjective"):
        one(docs, "InferencePool", obj["spec"]["poolRef"]["name"], errors,
            f"InferenceObjective/{obj['metadata']['name']} poolRef")
    for route in find(docs, "HTTPRoute"):
        rn = route["metadata"]["name"]
        for p in route["spec"]["parentRefs"]:
            one(docs, p.get("kind", "Gateway"), p["name"], errors, f"HTTPRoute/{rn} parentRef")
        for rule in route["spec"]["rules"]:
            for b in rule.get("backendRefs", []):
                one(docs, b.get("kind", "Service"), b["name"], errors, f"HTTPRoute/{rn} backendRef")

    # The picker: its pool, its config file, and the KV events it subscribes to.
    epp = one(docs, "Deployment", "frugal-epp", errors, "endpoint picker")
    if epp:
        ec = epp["spec"]["template"]["spec"]["containers"][0]
        eargs = ec.get("args", [])
        one(docs, "InferencePool", flag(eargs, "pool-name"), errors, "EPP --pool-name")
        cfgfile = flag(eargs, "config-file") or ""
        mounts = {m["name"]: m["mountPath"] for m in ec.get("volumeMounts", [])}
        vols = {v["name"]: v for v in epp["spec"]["template"]["spec"].get("volumes", [])}
        cm = None
        for vname, mpath in mounts.items():
            if cfgfile.startswith(mpath.rstrip("/") + "/") and "configMap" in vols.get(vname, {}):
                cm = one(docs, "ConfigMap", vols[vname]["configMap"]["name"], errors,
                         "EPP config volume")
                key = cfgfile[len(mpath.rstrip("/")) + 1:]
                if cm and key not in cm.get("data", {}):
                    errors.append(f"EPP --config-file {cfgfile}: no key {key} in its ConfigMap")
        if cm is None:
            errors.append(f"EPP --config-file {cfgfile}: not in a mounted ConfigMap")
        else:
            for key, text in cm.get("data", {}).items():
                cfg = check_epp_config(f"ConfigMap/{cm['metadata']['name']} {key}", text, errors)
                for p in cfg.get("plugins", []):
                    ev = (p.get("parameters") or {}).get("kvEventsConfig")
                    if not ev:
                        continue
                    disc = ev.get("podDiscoveryConfig", {})
                    sel = dict(kv.split("=", 1) for kv in
                               disc.get("podLabelSelector", "").split(",") if kv)
                    if not selects(sel, labels):
                        errors.append(f"{key}: podLabelSelector selects no frugal pod")
                    if disc.get("socketPort", 5557) != kv_port:
                        errors.append(f"{key}: socketPort is not frugal's --kv-events-endpoint "
                                      "port")
                    # llm-d reads POD and MODEL from the topic kv@POD@MODEL.
                    topic = flag(args, "kv-events-topic") or ""
                    if not topic.startswith(ev.get("topicFilter", "kv@")) or \
                            len(topic.split("@")) != 3:
                        errors.append(f"{key}: frugal's --kv-events-topic {topic!r} is not "
                                      "kv@POD@MODEL under the picker's topicFilter")
                    # The picker hashes prompts itself: CBOR, from the same seed.
                    tp = (p.get("parameters") or {}).get("tokenProcessorConfig", {})
                    env = {e["name"]: e.get("value") for e in frugal_env}
                    if flag(args, "prefix-caching-hash-algo") != "sha256_cbor":
                        errors.append(f"{key}: frugal must hash blocks as the picker does "
                                      "(--prefix-caching-hash-algo=sha256_cbor)")
                    if env.get("PYTHONHASHSEED") != tp.get("hashSeed"):
                        errors.append(f"{key}: hashSeed {tp.get('hashSeed')!r} is not frugal's "
                                      f"PYTHONHASHSEED {env.get('PYTHONHASHSEED')!r}")

    # The autoscaler reads the metric the adapter rule makes.
    adapter_names = set()
    for cm in find(docs, "ConfigMap", "prometheus-adapter"):
        rules = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
        for r in rules:
            extra = set(r) - {"seriesQuery", "resources", "name", "metricsQuery"}
            if extra:
                errors.append(f"prometheus-adapter rule: unknown keys {sorted(extra)}")
            series = r["seriesQuery"].split("{")[0].strip("'\"")
            if not re.search(r["name"]["matches"], series):
                errors.append(f"prometheus-adapter rule: name.matches misses {series}")
            if "<<.Series>>" not in r["metricsQuery"] or "<<.LabelMatchers>>" not in \
                    r["metricsQuery"]:
                errors.append("prometheus-adapter rule: metricsQuery lacks <<.Series>> or "
                              "<<.LabelMatchers>>")
            if ":" in r["name"].get("as", series):
                errors.append("prometheus-adapter rule: a custom metric's name has a colon")
            adapter_names.add(r["name"].get("as", series))
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        one(docs, ref["kind"], ref["name"], errors, f"HPA/{hpa['metadata']['name']}")
        for m in hpa["spec"]["metrics"]:
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in adapter_names:
                errors.append(f"HPA/{hpa['metadata']['name']}: no adapter rule makes "
                              f"{m['pods']['metric']['name']}")
        if hpa["spec"].get("minReplicas", 1) < 2:
            errors.append("HPA: fewer than 2 replicas leaves nothing serving during a drain")


def validate(docs, crds, report):
    errors = []
    validate_schemas(docs, crds, errors, report)
    try:
        check_references(docs, errors)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        errors.append(f"references: missing or malformed field: {e!r}")
    return errors


def broken_variants(docs):
    """(what, docs) pairs that must each be refused."""
    def variant(what, kind, name, change):
        d = copy.deepcopy(docs)
        for _, doc in d:
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                change(doc)
        return what, d

    def pod(doc):
        return doc["spec"]["template"]["spec"]

    return [
        variant("unknown field in a Deployment's pod spec", "Deployment", "frugal",
                lambda d: pod(d).update(terminationGracePeriod=75)),
        variant("a probe's port of the wrong type", "Deployment", "frugal",
                lambda d: pod(d)["containers"][0]["readinessProbe"]["httpGet"].update(port=1.5)),
        variant("unknown field in an InferencePool's spec", "InferencePool", "frugal",
                lambda d: d["spec"].update(targetPort=8080)),
        variant("an InferencePool port out of range", "InferencePool", "frugal",
                lambda d: d["spec"]["targetPorts"][0].update(number=70000)),
        variant("an InferenceObjective without its pool", "InferenceObjective", "frugal-default",
                lambda d: d["spec"].pop("poolRef")),
        variant("an HTTPRoute path match of an unknown type", "HTTPRoute", "frugal",
                lambda d: d["spec"]["rules"][0]["matches"][0]["path"].update(type="Glob")),
        variant("a grace period shorter than the drain", "Deployment", "frugal",
                lambda d: pod(d).update(terminationGracePeriodSeconds=30)),
        variant("readiness on the liveness endpoint", "Deployment", "frugal",
                lambda d: pod(d)["containers"][0]["readinessProbe"]["httpGet"].update(
                    path="/health/live")),
        variant("an endpoint picker Service that does not exist", "InferencePool", "frugal",
                lambda d: d["spec"]["endpointPickerRef"].update(name="no-such-epp")),
        variant("an endpoint picker profile naming an undeclared plugin", "ConfigMap", "frugal-epp",
                lambda d: d["data"].update({"default-plugins.yaml": d["data"][
                    "default-plugins.yaml"].replace("pluginRef: queue-scorer",
                                                    "pluginRef: queue-scorr")})),
        variant("KV events subscribed on another port", "ConfigMap", "frugal-epp",
                lambda d: d["data"].update({"kv-events-plugins.yaml": d["data"][
                    "kv-events-plugins.yaml"].replace("socketPort: 5557", "socketPort: 5558")})),
        variant("KV events under a topic the picker does not parse", "Deployment", "frugal",
                lambda d: pod(d)["containers"][0]["args"].remove(
                    "--kv-events-topic=kv@$(POD_IP)@{model}")),
        variant("KV events hashed with another seed than the picker's", "Deployment", "frugal",
                lambda d: pod(d)["containers"][0]["env"][0].update(value="7")),
        variant("an HPA metric no adapter rule makes", "HorizontalPodAutoscaler", "frugal",
                lambda d: d["spec"]["metrics"][0]["pods"]["metric"].update(
                    name="vllm:num_requests_waiting")),
    ]


def main():
    docs = load_docs()
    crds = load_crds()
    report = []
    errors = validate(docs, crds, report)
    check_kustomizations(errors)
    for line in report:
        print(f"ok   {line}")
    for e in errors:
        print(f"FAIL {e}")
    bites = 0
    variants = broken_variants(docs)
    for what, bad in variants:
        found = validate(bad, crds, [])
        if found:
            bites += 1
            print(f"ok   refused, as it must be: {what}: {found[0]}")
        else:
            errors.append(f"self-check: not refused: {what}")
            print(f"FAIL self-check: not refused: {what}")
    print(f"{len(docs)} objects, {len(errors)} problems; self-check: {bites} of "
          f"{len(variants)} broken variants refused")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
