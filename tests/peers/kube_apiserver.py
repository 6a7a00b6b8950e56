"""A fake Kubernetes API server on loopback: the parts stitch's ingress controller uses.

No real kube-apiserver can be installed on the test machines, so this speaks what the controller
sends, the way the API server answers it (https://kubernetes.io/docs/reference/using-api/api-concepts/):

- LIST of a collection, across namespaces or in one, with `metadata.resourceVersion`;
- WATCH (`?watch=true&resourceVersion=N`): a chunked stream of JSON events, one per line, with
  every change after N, `BOOKMARK` events when `allowWatchBookmarks=true`, and for a
  resourceVersion older than the history kept an `ERROR` event with a `410 Gone` Status (what
  the API server sends when etcd has compacted it), after which the stream ends;
- GET, POST (create, `409 AlreadyExists`), PUT (replace, `409 Conflict` on a stale
  resourceVersion), PATCH with `application/merge-patch+json` on an object or its `/status`,
  DELETE;
- any resource listed in RESOURCES (Ingresses, IngressClasses, Services, Secrets,
  EndpointSlices, Gateways, GatewayClasses, HTTPRoutes, Leases, Events);
- `fieldSelector` on LIST and WATCH with `field=value` terms on `type` and `metadata.*`
  (what stitch selects TLS Secrets with); other fields are refused with 400, as the API server
  refuses a field a kind does not support.

The test drives it through `/_fake/...` (never used by stitch):
- POST /_fake/apply: YAML documents, created or replaced (a spec change bumps generation);
- POST /_fake/delete: YAML documents naming objects to delete;
- POST /_fake/expire: YAML documents applied *without* watch events, then the history is
  compacted: every open watch gets `410 Gone`, so only a fresh LIST shows those documents;
- GET /_fake/requests: every request stitch made (method, path, query);
- GET /_fake/writes: every write stitch made (method, path, body) with the Lease holders at
  that moment.

Usage: kube_apiserver.py [--port N] [--no-gateway-api]; prints `listening on 127.0.0.1:PORT`
when ready. `--no-gateway-api` serves no gateway.networking.k8s.io kinds (404, as a cluster
without the Gateway API CRDs does).
"""

import argparse
import copy
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml

import lifeline

# (group, version, plural) -> (kind, namespaced)
RESOURCES = {
    ("networking.k8s.io", "v1", "ingresses"): ("Ingress", True),
    ("networking.k8s.io", "v1", "ingressclasses"): ("IngressClass", False),
    ("", "v1", "services"): ("Service", True),
    ("", "v1", "secrets"): ("Secret", True),
    ("discovery.k8s.io", "v1", "endpointslices"): ("EndpointSlice", True),
    ("gateway.networking.k8s.io", "v1", "gateways"): ("Gateway", True),
    ("gateway.networking.k8s.io", "v1", "gatewayclasses"): ("GatewayClass", False),
    ("gateway.networking.k8s.io", "v1", "httproutes"): ("HTTPRoute", True),
    ("coordination.k8s.io", "v1", "leases"): ("Lease", True),
    ("events.k8s.io", "v1", "events"): ("Event", True),
}
BY_KIND = {(g, v, kind): (g, v, plural) for (g, v, plural), (kind, _) in RESOURCES.items()}

BOOKMARK_EVERY = 0.5


def field_selector(query):
    """A predicate over objects for `fieldSelector=a=b,c!=d` (None: the selector is refused)."""
    text = query.get("fieldSelector") or ""
    terms = []
    for term in filter(None, text.split(",")):
        negate = "!=" in term
        field, _, value = term.partition("!=" if negate else "=")
        value = value.lstrip("=")
        path = field.split(".")
        if path[0] not in ("type", "metadata"):
            return None
        terms.append((path, value, negate))

    def matches(obj):
        for path, value, negate in terms:
            v = obj
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if (str(v) == value) == negate:
                return False
        return True
    return matches


def api_version(group, version):
    return f"{group}/{version}" if group else version


class Store:
    def __init__(self):
        self.lock = threading.Condition()
        # Like etcd's revision, resourceVersions only grow, across restarts too: a client that
        # resumes a watch on a restarted server gets every change made since.
        self.rv = int(time.time() * 1000)
        self.objects = {}  # (res, ns, name) -> object
        self.history = []  # (rv, res, ns, type, object)
        self.compacted = 0  # watches from an older resourceVersion get 410
        self.epoch = 0  # bumped by expire: open watches end with 410
        self.requests = []
        self.writes = []

    def next_rv(self):
        self.rv += 1
        return self.rv

    def emit(self, res, ns, kind, obj, silent=False):
        if not silent:
            self.history.append((int(obj["metadata"]["resourceVersion"]), res, ns, kind, copy.deepcopy(obj)))
        self.lock.notify_all()

    def put(self, res, obj, silent=False, keep_status=True):
        """Create or replace an object from a full document; returns (object, created)."""
        meta = obj.setdefault("metadata", {})
        kind, namespaced = RESOURCES[res]
        ns = meta.get("namespace", "default") if namespaced else ""
        if namespaced:
            meta["namespace"] = ns
        key = (res, ns, meta["name"])
        old = self.objects.get(key)
        meta["resourceVersion"] = str(self.next_rv())
        obj["apiVersion"] = api_version(res[0], res[1])
        obj["kind"] = kind
        if old is None:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta["generation"] = 1
        else:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            changed = old.get("spec") != obj.get("spec")
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if changed else 0)
            if keep_status and "status" not in obj and "status" in old:
                obj["status"] = old["status"]
        self.objects[key] = obj
        self.emit(res, ns, "ADDED" if old is None else "MODIFIED", obj, silent)
        return obj, old is None

    def delete(self, res, ns, name):
        obj = self.objects.pop((res, ns, name), None)
        if obj is not None:
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.next_rv())
            self.emit(res, ns, "DELETED", obj)
        return obj

    def lease_holders(self):
        return {
            f"{ns}/{name}": (o.get("spec") or {}).get("holderIdentity")
            for (res, ns, name), o in self.objects.items()
            if res[2] == "leases"
        }


STORE = Store()


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def parse_path(path):
    """(res, namespace or None, name or None, subresource or None), or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    ns = None
    if len(rest) >= 2 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest:
        return None
    res = (group, version, rest[0])
    if res not in RESOURCES:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return res, ns, name, sub


def resource_of(doc):
    group, _, version = doc["apiVersion"].rpartition("/")
    res = BY_KIND.get((group, version, doc["kind"]))
    if res is None:
        raise ValueError(f"unknown kind {doc['apiVersion']} {doc['kind']}")
    return res


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self.body()
        if url.path.startswith("/_fake/"):
            return self.control(method, url.path, body)
        with STORE.lock:
            STORE.requests.append({"method": method, "path": url.path, "query": query})
        parsed = parse_path(url.path)
        if parsed is None:
            return self.reply(404, status(404, "NotFound", f"the server could not find {url.path}"))
        res, ns, name, sub = parsed
        kind, namespaced = RESOURCES[res]
        if method == "GET" and name is None:
            selected = field_selector(query)
            if selected is None:
                return self.reply(400, status(400, "BadRequest", f"field selector {query.get('fieldSelector')!r}: field not supported"))
            if query.get("watch") in ("true", "1"):
                return self.watch(res, ns, query, selected)
            return self.list(res, ns, kind, selected)
        if method == "POST" and name is None:
            doc = json.loads(body)
            doc.setdefault("metadata", {})
            if namespaced:
                doc["metadata"]["namespace"] = ns or doc["metadata"].get("namespace", "default")
            with STORE.lock:
                key = (res, doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
                if key in STORE.objects:
                    return self.reply(409, status(409, "AlreadyExists", f"{kind} {key[2]} already exists"))
                obj, _ = STORE.put(res, doc)
                self.record(method, url.path, doc)
                return self.reply(201, obj)
        if name is None:
            return self.reply(405, status(405, "MethodNotAllowed", method))
        key = (res, ns or "", name)
        with STORE.lock:
            current = STORE.objects.get(key)
            if method == "GET":
                if current is None:
                    return self.reply(404, status(404, "NotFound", f'{kind} "{name}" not found'))
                return self.reply(200, current)
            if method == "DELETE":
                obj = STORE.delete(res, key[1], name)
                if obj is None:
                    return self.reply(404, status(404, "NotFound", f'{kind} "{name}" not found'))
                return self.reply(200, obj)
            if current is None:
                return self.reply(404, status(404, "NotFound", f'{kind} "{name}" not found'))
            if method == "PUT":
                doc = json.loads(body)
                sent_rv = (doc.get("metadata") or {}).get("resourceVersion")
                if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                    return self.reply(409, status(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again"))
                doc.setdefault("metadata", {})["name"] = name
                if namespaced:
                    doc["metadata"]["namespace"] = ns
                self.record(method, url.path, doc)
                obj, _ = STORE.put(res, doc)
                return self.reply(200, obj)
            if method == "PATCH":
                if "merge-patch" not in (self.headers.get("Content-Type") or ""):
                    return self.reply(415, status(415, "UnsupportedMediaType", "only merge patches"))
                patch = json.loads(body)
                if sub == "status":
                    patch = {"status": patch.get("status")}
                else:
                    patch.pop("status", None)
                self.record(method, url.path, patch)
                obj = merge_patch(current, patch)
                obj, _ = STORE.put(res, obj, keep_status=False)
                return self.reply(200, obj)
        return self.reply(405, status(405, "MethodNotAllowed", method))

    def record(self, method, path, body):
        STORE.writes.append({"method": method, "path": path, "body": body,
                             "lease_holders": STORE.lease_holders(), "time": time.time()})

    def list(self, res, ns, kind, selected):
        with STORE.lock:
            items = [copy.deepcopy(o) for (r, n, _), o in sorted(STORE.objects.items())
                     if r == res and (ns is None or n == ns) and selected(o)]
            rv = STORE.rv
        for i in items:
            # Items of a list carry no kind or apiVersion: the list does.
            i.pop("kind", None)
            i.pop("apiVersion", None)
        self.reply(200, {"kind": f"{kind}List", "apiVersion": api_version(res[0], res[1]),
                         "metadata": {"resourceVersion": str(rv)}, "items": items})

    def watch(self, res, ns, query, selected):
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        deadline = time.time() + float(query.get("timeoutSeconds") or 300)
        kind, _ = RESOURCES[res]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(event):
            data = (json.dumps(event) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def gone():
            send({"type": "ERROR", "object": status(410, "Expired", f"too old resource version: {since} ({STORE.compacted})")})

        try:
            with STORE.lock:
                epoch = STORE.epoch
                if since and since < STORE.compacted:
                    gone()
                    raise BrokenPipeError
                last_bookmark = time.time()
                while time.time() < deadline:
                    if STORE.epoch != epoch:
                        gone()
                        break
                    pending = [h for h in STORE.history if h[0] > since and h[1] == res and (ns is None or h[2] == ns)]
                    for rv, _, _, typ, obj in pending:
                        # (A Secret's type is immutable: an object never leaves the selection.)
                        if selected(obj):
                            send({"type": typ, "object": obj})
                        since = rv
                    if bookmarks and time.time() - last_bookmark >= BOOKMARK_EVERY:
                        since = max(since, STORE.rv)
                        send({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version(res[0], res[1]),
                                                             "metadata": {"resourceVersion": str(since)}}})
                        last_bookmark = time.time()
                    STORE.lock.wait(timeout=BOOKMARK_EVERY)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def control(self, method, path, body):
        if method == "GET" and path == "/_fake/requests":
            with STORE.lock:
                return self.reply(200, STORE.requests)
        if method == "GET" and path == "/_fake/writes":
            with STORE.lock:
                return self.reply(200, STORE.writes)
        docs = [d for d in yaml.safe_load_all(body.decode()) if d]
        with STORE.lock:
            if path == "/_fake/apply":
                for d in docs:
                    STORE.put(resource_of(d), d)
            elif path == "/_fake/delete":
                for d in docs:
                    res = resource_of(d)
                    ns = d["metadata"].get("namespace", "default") if RESOURCES[res][1] else ""
                    STORE.delete(res, ns, d["metadata"]["name"])
            elif path == "/_fake/expire":
                for d in docs:
                    STORE.put(resource_of(d), d, silent=True)
                STORE.compacted = STORE.rv
                STORE.history = []
                STORE.epoch += 1
                STORE.lock.notify_all()
            else:
                return self.reply(404, status(404, "NotFound", path))
        return self.reply(200, {"applied": len(docs)})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-gateway-api", action="store_true")
    args = parser.parse_args()
    if args.no_gateway_api:
        for res in [r for r in RESOURCES if r[0] == "gateway.networking.k8s.io"]:
            del RESOURCES[res]
    lifeline.exit_when_stdin_closes()
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
