#!/usr/bin/env python3
"""kubectl get pods -A -o json | pod_sd.py > targets.json

Emulates Prometheus's kubernetes_sd (role: pod) for file_sd: one target per container port
of every pod with an IP, labelled with the __meta_kubernetes_* labels kubernetes_sd gives
(namespace, pod name/ip/phase/ready, labels, annotations, container and port), so relabel
rules written for kubernetes_sd (the chart's PodMonitor) run on it unchanged. Needed because
Debian's prometheus 2.42 is built without kubernetes_sd."""
import json
import re
import sys


def name(s):
    return re.sub(r"[^a-zA-Z0-9_]", "_", s)


groups = []
for pod in json.load(sys.stdin)["items"]:
    md, spec, st = pod["metadata"], pod["spec"], pod.get("status", {})
    ip = st.get("podIP")
    if not ip:
        continue
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
    base = {
        "__meta_kubernetes_namespace": md["namespace"],
        "__meta_kubernetes_pod_name": md["name"],
        "__meta_kubernetes_pod_ip": ip,
        "__meta_kubernetes_pod_phase": st.get("phase", ""),
        "__meta_kubernetes_pod_ready": str(ready).lower(),
        "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
        "__meta_kubernetes_pod_uid": md.get("uid", ""),
    }
    for k, v in (md.get("labels") or {}).items():
        base["__meta_kubernetes_pod_label_" + name(k)] = v
        base["__meta_kubernetes_pod_labelpresent_" + name(k)] = "true"
    for k, v in (md.get("annotations") or {}).items():
        base["__meta_kubernetes_pod_annotation_" + name(k)] = v
        base["__meta_kubernetes_pod_annotationpresent_" + name(k)] = "true"
    for c in spec.get("containers", []):
        for p in c.get("ports", []):
            labels = dict(base)
            labels.update({
                "__meta_kubernetes_pod_container_name": c["name"],
                "__meta_kubernetes_pod_container_image": c.get("image", ""),
                "__meta_kubernetes_pod_container_port_name": p.get("name", ""),
                "__meta_kubernetes_pod_container_port_number": str(p["containerPort"]),
                "__meta_kubernetes_pod_container_port_protocol": p.get("protocol", "TCP"),
            })
            groups.append({"targets": [f"{ip}:{p['containerPort']}"], "labels": labels})
json.dump(groups, sys.stdout, indent=1)
