"""A Bitrix24 portal for tests: the subset of its REST API sipcrm uses, as
the public documentation (bitrix-tools/b24-rest-docs) describes it.

Auth, both kinds at once:
  * an inbound webhook: POST /rest/1/<hook>/<method> (.webhook_url);
  * an application: POST /rest/<method> with "auth" (an access token) in
    the JSON body (.rest_url), tokens from GET /oauth/token/?grant_type=
    refresh_token&client_id&client_secret&refresh_token (.token_url),
    which rotates the refresh token (an old one gets invalid_grant). A
    missing or unknown token gets 401 NO_AUTH_FOUND, an expired one 401
    expired_token (expire_tokens() expires every token given so far).

Methods: telephony.externalCall.searchCrmEntities (from .entities: phone ->
list of {"CRM_ENTITY_TYPE", "CRM_ENTITY_ID", "ASSIGNED_BY_ID", "NAME"},
ASSIGNED_BY filled in from .users), .register (EXTERNAL_CALL_ID dedups;
CRM_CREATE=1 for a number with no entity creates a lead), .show, .hide,
.finish (the call must be registered), .attachRecord (the call must be
finished), crm.contact.add, crm.lead.add, crm.deal.add, tasks.task.add.
Errors are {"error", "error_description"} with Bitrix24's statuses.

Failure injection: .fail[method] is a list consumed one entry per call of
that method: "500" (nothing done, 500), "500-after" (done, but the answer
is a 500: a lost answer), "limit" (503 QUERY_LIMIT_EXCEEDED).

.log holds (method, params) of every call that was carried out, in order;
.requests every call received, failed ones included."""
import itertools
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOOK = "hooktoken123"


class Bitrix24Emulator:
    def __init__(self, client_id="app.1", client_secret="sec.1", refresh_token="reftok0"):
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.access = {}                # token -> valid
        self.refreshes = 0
        self.rejected = 0               # requests refused for their token
        self.expires_in = 3600
        self.entities = {}
        self.users = {}                 # id -> {"USER_PHONE_INNER", "TIMEMAN_STATUS"}
        self.calls = {}                 # CALL_ID -> register params
        self.by_ext = {}                # EXTERNAL_CALL_ID -> CALL_ID
        self.finished = {}              # CALL_ID -> finish params
        self.fail = {}
        self.log = []
        self.requests = []
        self.ids = itertools.count(1001)
        self.lock = threading.Lock()
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, obj):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urllib.parse.urlparse(self.path)
                if u.path != "/oauth/token/":
                    return self.reply(404, {"error": "NOT_FOUND"})
                q = dict(urllib.parse.parse_qsl(u.query))
                self.reply(*emu.token(q))

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                try:
                    params = json.loads(raw) if raw else {}
                except ValueError:
                    return self.reply(400, {"error": "INVALID_REQUEST",
                                            "error_description": "bad JSON"})
                parts = urllib.parse.urlparse(self.path).path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["rest", "1"]:
                    if parts[2] != HOOK:
                        return self.reply(401, {"error": "NO_AUTH_FOUND",
                                                "error_description": "Wrong authorization data"})
                    method = parts[3]
                elif len(parts) == 2 and parts[0] == "rest":
                    method = parts[1]
                    tok = params.pop("auth", "")
                    valid = emu.access.get(tok)
                    if not valid:
                        emu.rejected += 1
                    if valid is None:
                        return self.reply(401, {"error": "NO_AUTH_FOUND",
                                                "error_description": "Wrong authorization data"})
                    if not valid:
                        return self.reply(401, {"error": "expired_token",
                                                "error_description": "The access token provided has expired."})
                else:
                    return self.reply(404, {"error": "ERROR_METHOD_NOT_FOUND"})
                if method.endswith(".json"):
                    method = method[:-5]
                self.reply(*emu.method(method, params))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def webhook_url(self):
        return "http://127.0.0.1:%d/rest/1/%s/" % (self.port, HOOK)

    @property
    def rest_url(self):
        return "http://127.0.0.1:%d/rest/" % self.port

    @property
    def token_url(self):
        return "http://127.0.0.1:%d/oauth/token/" % self.port

    def expire_tokens(self):
        with self.lock:
            for t in self.access:
                self.access[t] = False

    def token(self, q):
        with self.lock:
            if q.get("grant_type") != "refresh_token" or \
               q.get("client_id") != self.client_id or \
               q.get("client_secret") != self.client_secret:
                return 400, {"error": "invalid_client", "error_description": "Invalid client"}
            if q.get("refresh_token") != self.refresh_token:
                return 400, {"error": "invalid_grant", "error_description": "Invalid grant"}
            self.refreshes += 1
            at = "acctok%d" % self.refreshes
            self.refresh_token = "reftok%d" % self.refreshes
            self.access[at] = True
            return 200, {"access_token": at, "refresh_token": self.refresh_token,
                         "expires_in": self.expires_in, "client_endpoint": self.rest_url,
                         "domain": "oauth.bitrix24.tech", "member_id": "m1",
                         "scope": "telephony,crm,task", "status": "L"}

    # ---- methods --------------------------------------------------------------------
    def method(self, name, p):
        with self.lock:
            self.requests.append((name, p))
            mode = self.fail.get(name, [None]).pop(0) if self.fail.get(name) else None
            if mode == "500":
                return 500, {"error": "INTERNAL_SERVER_ERROR",
                             "error_description": "Internal server error"}
            if mode == "limit":
                return 503, {"error": "QUERY_LIMIT_EXCEEDED",
                             "error_description": "Too many requests"}
            h = getattr(self, "m_" + name.replace(".", "_").lower(), None)
            if h is None:
                return 404, {"error": "ERROR_METHOD_NOT_FOUND",
                             "error_description": "Method not found!"}
            status, result = h(p)
            if status == 200:
                self.log.append((name, p))
            if mode == "500-after":
                return 500, {"error": "INTERNAL_SERVER_ERROR",
                             "error_description": "Internal server error"}
            if status != 200:
                return status, result
            return 200, {"result": result, "time": {"start": 0, "finish": 0}}

    def found(self, phone):
        out = []
        for e in self.entities.get(phone, []):
            e = dict(e)
            u = self.users.get(str(e.get("ASSIGNED_BY_ID")), {})
            e["ASSIGNED_BY"] = {"ID": str(e.get("ASSIGNED_BY_ID")),
                                "TIMEMAN_STATUS": u.get("TIMEMAN_STATUS", "OPENED"),
                                "USER_PHONE_INNER": u.get("USER_PHONE_INNER"),
                                "WORK_PHONE": None, "PERSONAL_PHONE": None,
                                "PERSONAL_MOBILE": None}
            out.append(e)
        return out

    def m_telephony_externalcall_searchcrmentities(self, p):
        if not p.get("PHONE_NUMBER"):
            return 400, {"error": "ERROR_CORE", "error_description": "PHONE_NUMBER is empty"}
        return 200, self.found(p["PHONE_NUMBER"])

    def m_telephony_externalcall_register(self, p):
        if not p.get("USER_ID") and not p.get("USER_PHONE_INNER"):
            return 400, {"error": "ERROR_CORE",
                         "error_description": "USER_ID or USER_PHONE_INNER should be set"}
        if p.get("TYPE") not in (1, 2, 3, 4, 5, "1", "2", "3", "4", "5"):
            return 400, {"error": "ERROR_CORE", "error_description": "Unknown TYPE"}
        ext = p.get("EXTERNAL_CALL_ID")
        if ext and ext in self.by_ext:
            cid = self.by_ext[ext]
            return 200, dict(self.calls[cid]["_result"])
        cid = "externalCall.%d" % next(self.ids)
        found = self.found(p.get("PHONE_NUMBER", ""))
        res = {"CALL_ID": cid, "CRM_CREATED_LEAD": None, "CRM_CREATED_ENTITIES": [],
               "CRM_ENTITY_TYPE": found[0]["CRM_ENTITY_TYPE"] if found else None,
               "CRM_ENTITY_ID": found[0]["CRM_ENTITY_ID"] if found else None}
        if p.get("CRM_ENTITY_TYPE"):
            res["CRM_ENTITY_TYPE"] = p["CRM_ENTITY_TYPE"]
            res["CRM_ENTITY_ID"] = int(p["CRM_ENTITY_ID"])
        elif not found and str(p.get("CRM_CREATE", 0)) == "1":
            lid = next(self.ids)
            res.update(CRM_CREATED_LEAD=lid, CRM_ENTITY_TYPE="LEAD", CRM_ENTITY_ID=lid,
                       CRM_CREATED_ENTITIES=[{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lid}])
        rec = dict(p)
        rec["_result"] = res
        self.calls[cid] = rec
        if ext:
            self.by_ext[ext] = cid
        return 200, res

    def m_telephony_externalcall_show(self, p):
        return 200, p.get("CALL_ID") in self.calls

    def m_telephony_externalcall_hide(self, p):
        return 200, p.get("CALL_ID") in self.calls

    def m_telephony_externalcall_finish(self, p):
        cid = p.get("CALL_ID")
        if cid not in self.calls:
            return 400, {"error": "ERROR_CORE", "error_description":
                         "Call is not found (call should be registered prior to finishing"}
        self.finished[cid] = p
        return 200, {"CALL_ID": cid, "PORTAL_USER_ID": p.get("USER_ID"),
                     "CALL_DURATION": p.get("DURATION"), "CALL_FAILED_CODE": p.get("STATUS_CODE"),
                     "CRM_ACTIVITY_ID": next(self.ids)}

    def m_telephony_externalcall_attachrecord(self, p):
        if p.get("CALL_ID") not in self.finished:
            return 400, {"error": "ERROR_CORE", "error_description":
                         "Call is not found in the statistic table. Looks like it is not finished yet."}
        if not p.get("RECORD_URL") and not p.get("FILENAME"):
            return 400, {"error": "ERROR_CORE", "error_description":
                         "Required parameters are not set."}
        return 200, {"FILE_ID": next(self.ids)}

    def add(self, p):
        if not isinstance(p.get("fields"), dict):
            return 400, {"error": "ERROR_CORE", "error_description": "fields required"}
        return 200, next(self.ids)

    m_crm_contact_add = m_crm_lead_add = m_crm_deal_add = add

    def m_tasks_task_add(self, p):
        f = p.get("fields") or {}
        if not f.get("TITLE") or not f.get("RESPONSIBLE_ID"):
            return 400, {"error": "ERROR_CORE", "error_description": "TITLE and RESPONSIBLE_ID"}
        return 200, {"task": {"id": str(next(self.ids)), "title": f["TITLE"]}}

    # ---- for the tests ----------------------------------------------------------------
    def done(self, method=None):
        with self.lock:
            return [(m, p) for m, p in self.log if method is None or m == method]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
