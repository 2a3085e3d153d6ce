"""An amoCRM account for tests: the subset of API v4 sipcrm uses, as the
public documentation (amocrm.ru/developers, amocrm/amocrm-api-php)
describes it.

Auth: "Authorization: Bearer <token>", a long-lived token (.long_token)
or an OAuth access token from POST /oauth2/access_token (JSON: client_id,
client_secret, grant_type=refresh_token, refresh_token, redirect_uri),
which rotates the refresh token. A bad or expired token gets 401
application/problem+json; expire_tokens() expires every token so far.

  GET  /api/v4/contacts?query=D, /api/v4/companies?query=D: a fuzzy search
       (D anywhere in the digits of a PHONE value, or in the name), 204
       when nothing matches
  POST /api/v4/contacts, /api/v4/leads, /api/v4/tasks: create, answer
       {"_embedded": {"<kind>": [{"id", "request_id"}]}}
  POST /api/v4/leads/unsorted/sip: an unsorted entry with its contact and
       lead; a source_uid seen before is a 400
  POST /api/v4/calls: filed with the contact or company of the phone (by
       its last 10 digits); none: the call is in "errors"

.contacts and .companies are lists of entity dicts with "id", "name",
"responsible_user_id" and "custom_fields_values" (phone() builds one).
Failure injection: .fail["POST /api/v4/calls"] = ["500", "500-after",
"429"], consumed one per request. .log: (method, path, body) of requests
carried out; .requests: all of them."""
import itertools
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def phone(entity_id, name, number, responsible):
    return {"id": entity_id, "name": name, "responsible_user_id": responsible,
            "custom_fields_values": [{"field_id": 1, "field_name": "Phone",
                                      "field_code": "PHONE", "field_type": "multitext",
                                      "values": [{"value": number, "enum_code": "WORK"}]}]}


def digits(s):
    return re.sub(r"\D", "", s or "")


class AmoCrmEmulator:
    def __init__(self, long_token="lt-secret", client_id="cid", client_secret="csec",
                 refresh_token="reftok0", redirect_uri="https://sipcrm.example/oauth"):
        self.long_token = long_token
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token, self.redirect_uri = refresh_token, redirect_uri
        self.access = {}
        self.refreshes = 0
        self.contacts, self.companies = [], []
        self.unsorted_uids = set()
        self.fail = {}
        self.log, self.requests = [], []
        self.ids = itertools.count(5001)
        self.lock = threading.Lock()
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, obj=None, ctype="application/hal+json"):
                body = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(status)
                if body:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self, method):
                u = urllib.parse.urlparse(self.path)
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self.reply(400, {"title": "Bad Request", "status": 400},
                                      "application/problem+json")
                if u.path == "/oauth2/access_token" and method == "POST":
                    return self.reply(*emu.token(body or {}))
                auth = self.headers.get("Authorization", "")
                tok = auth[7:] if auth.startswith("Bearer ") else ""
                if not (tok == emu.long_token or emu.access.get(tok)):
                    return self.reply(401, {"title": "Unauthorized", "type":
                                            "https://httpstatus.es/401", "status": 401,
                                            "detail": "Unauthorized"},
                                      "application/problem+json")
                q = dict(urllib.parse.parse_qsl(u.query))
                r = emu.handle(method, u.path, q, body)
                if r[0] >= 400:
                    return self.reply(r[0], r[1], "application/problem+json")
                return self.reply(*r)

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def expire_tokens(self):
        with self.lock:
            for t in self.access:
                self.access[t] = False

    def token(self, b):
        with self.lock:
            if b.get("client_id") != self.client_id or \
               b.get("client_secret") != self.client_secret or \
               b.get("redirect_uri") != self.redirect_uri or \
               b.get("grant_type") != "refresh_token":
                return 400, {"hint": "invalid client", "title": "Bad Request", "status": 400}
            if b.get("refresh_token") != self.refresh_token:
                return 400, {"hint": "Token has been revoked", "title": "Bad Request",
                             "status": 400}
            self.refreshes += 1
            at = "acctok%d" % self.refreshes
            self.refresh_token = "reftok%d" % self.refreshes
            self.access[at] = True
            return 200, {"token_type": "Bearer", "expires_in": 86400, "access_token": at,
                         "refresh_token": self.refresh_token}

    def handle(self, method, path, q, body):
        key = "%s %s" % (method, path)
        with self.lock:
            self.requests.append((method, path, body if body is not None else q))
            mode = self.fail[key].pop(0) if self.fail.get(key) else None
            if mode == "500":
                return 500, {"title": "Internal Server Error", "status": 500}
            if mode == "429":
                return 429, {"title": "Too Many Requests", "status": 429}
            r = self.route(method, path, q, body)
            if r[0] < 400:
                self.log.append((method, path, body if body is not None else q))
            if mode == "500-after":
                return 500, {"title": "Internal Server Error", "status": 500}
            return r

    def search(self, kind, query):
        out = [e for e in (self.contacts if kind == "contacts" else self.companies)
               if query and (query in e["name"] or any(
                   query in digits(v["value"])
                   for f in e.get("custom_fields_values") or []
                   for v in f.get("values") or []))]
        if not out:
            return 204, None
        return 200, {"_page": 1, "_links": {}, "_embedded": {kind: out}}

    def created(self, kind, items):
        return 200, {"_links": {}, "_embedded": {kind: [
            {"id": next(self.ids), "request_id": str(i)} for i in range(len(items))]}}

    def by_phone(self, number):
        for kind, lst in (("contacts", self.contacts), ("companies", self.companies)):
            for e in lst:
                for f in e.get("custom_fields_values") or []:
                    for v in f.get("values") or []:
                        if digits(v["value"])[-10:] == digits(number)[-10:]:
                            return kind, e
        return None, None

    def route(self, method, path, q, body):
        if method == "GET" and path in ("/api/v4/contacts", "/api/v4/companies"):
            return self.search(path.rsplit("/", 1)[1], q.get("query", ""))
        if method != "POST" or not isinstance(body, list) or not body:
            return 400, {"title": "Bad Request", "status": 400}
        if path == "/api/v4/contacts":
            res = self.created("contacts", body)
            for item, made in zip(body, res[1]["_embedded"]["contacts"]):
                c = dict(item)
                c["id"] = made["id"]
                self.contacts.append(c)
            return res
        if path in ("/api/v4/leads", "/api/v4/tasks"):
            return self.created(path.rsplit("/", 1)[1], body)
        if path == "/api/v4/leads/unsorted/sip":
            out = []
            for u in body:
                if not u.get("source_uid") or not u.get("source_name") or \
                   u["source_uid"] in self.unsorted_uids:
                    return 400, {"title": "Bad Request", "status": 400,
                                 "validation-errors": [{"request_id": "0"}]}
                self.unsorted_uids.add(u["source_uid"])
                emb = u.get("_embedded") or {}
                out.append({"uid": "u-%d" % next(self.ids), "account_id": 1, "request_id": "0",
                            "_embedded": {
                                "leads": [{"id": next(self.ids)} for _ in emb.get("leads", [{}]) or [{}]],
                                "contacts": [{"id": next(self.ids)} for _ in emb.get("contacts", [])],
                                "companies": []}})
            return 200, {"_total_items": len(out), "_embedded": {"unsorted": out}}
        if path == "/api/v4/calls":
            calls, errors = [], []
            for i, c in enumerate(body):
                for k in ("direction", "duration", "source", "phone"):
                    if k not in c:
                        return 400, {"title": "Bad Request", "status": 400,
                                     "validation-errors": [{"path": k}]}
                kind, e = self.by_phone(c["phone"])
                if e is None:
                    errors.append({"request_id": str(i), "status": 204,
                                   "title": "Entity not found"})
                else:
                    calls.append({"id": next(self.ids), "entity_id": e["id"],
                                  "entity_type": kind[:-1] if kind == "contacts" else "company",
                                  "request_id": str(i)})
            return 200, {"_total_items": len(calls), "errors": [],
                         "_embedded": {"calls": calls, "errors": errors}}
        return 404, {"title": "Not Found", "status": 404}

    def done(self, key=None):
        with self.lock:
            return [(m, p, b) for m, p, b in self.log if key is None or "%s %s" % (m, p) == key]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
