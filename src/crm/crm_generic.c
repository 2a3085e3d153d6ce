/*
 * crm_generic.c: [crm] type = generic, the protocol of CONTRACT §4.
 *
 * Lookup: GET lookup_url?phone=&did=&call_id= with the Bearer secret.
 * 200 with a "responsible" object is a known caller, 404 or a body without
 * it an unknown one; anything else fails the lookup.
 * Events: POST events_url, the event as the body, signed with
 * X-Sipcrm-Signature: sha256=HMAC(secret, body); any 2xx delivers.
 * Webhook: POST /api/v1/crm/generic {"invalidate": [...]} or
 * {"invalidate_all": true} drops cached lookups.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#define LOG_MODULE "crm"
#include "log.h"
#include "conf.h"
#include "db.h"
#include "crm/crm_int.h"
#include "http/api.h"

#define LOOKUP_HTTP_TIMEOUT_MS 30000    /* the call's deadline comes first */
#define EVENT_HTTP_TIMEOUT_MS  10000
#define MAX_BODY               (1 << 20)

int crm_generic_parse(const char *body, size_t len, struct crm_result *r)
{
	json_t *root = json_loadb(body, len, 0, NULL), *resp, *contact;

	if (!json_is_object(root)) {
		r->status = CRM_FAILED;
		r->cause = "bad_json";
		json_decref(root);
		return EINVAL;
	}
	contact = json_object_get(root, "contact");
	crm_json_str(r->contact_id, sizeof(r->contact_id), contact, "id");
	crm_json_str(r->contact_name, sizeof(r->contact_name), contact, "name");
	crm_json_str(r->contact_url, sizeof(r->contact_url), contact, "url");
	resp = json_object_get(root, "responsible");
	r->status = json_is_object(resp) ? CRM_KNOWN : CRM_UNKNOWN;
	crm_json_str(r->responsible_id, sizeof(r->responsible_id), resp, "id");
	crm_json_str(r->responsible_name, sizeof(r->responsible_name), resp, "name");
	crm_json_str(r->given_ext, sizeof(r->given_ext), resp, "extension");
	json_decref(root);
	return 0;
}

static void on_lookup(struct crm_lookup *l, const struct httpc_resp *r)
{
	if (r->err) {
		l->res.status = CRM_FAILED;
		l->res.cause = r->cause;
	}
	else if (r->status == 404) {
		l->res.status = CRM_UNKNOWN;
	}
	else if (r->status == 200) {
		crm_generic_parse(r->body, r->body_len, &l->res);
	}
	else {
		l->res.status = CRM_FAILED;
		l->res.cause = r->status >= 500 ? "http_5xx" : "http_other";
	}
	crm_lookup_done(l);
}

static int lookup(struct crm *c, struct crm_lookup *l)
{
	const struct conf *cf = crm_conf(c);
	char url[2048], auth[512];
	const char *hdrs[] = { auth, "Accept: application/json", NULL };
	char *p = curl_easy_escape(NULL, l->phone, 0);
	char *d = curl_easy_escape(NULL, l->did, 0);
	char *i = curl_easy_escape(NULL, l->call_id, 0);
	struct httpc_opts o = { .url = url, .headers = hdrs,
				.timeout_ms = LOOKUP_HTTP_TIMEOUT_MS,
				.max_body = MAX_BODY };

	snprintf(url, sizeof(url), "%s%sphone=%s&did=%s&call_id=%s", cf->crm.lookup_url,
		 strchr(cf->crm.lookup_url, '?') ? "&" : "?", p ? p : "", d ? d : "",
		 i ? i : "");
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", cf->crm.secret);
	curl_free(p);
	curl_free(d);
	curl_free(i);
	return crm_lookup_http(l, &o, on_lookup);
}

static void on_delivered(struct crm_delivery *d, const struct httpc_resp *r)
{
	char cause[64];

	if (!r->err && r->status >= 200 && r->status < 300) {
		crm_delivery_done(d, 0, NULL);
		return;
	}
	if (r->err)
		snprintf(cause, sizeof(cause), "%s", r->cause);
	else
		snprintf(cause, sizeof(cause), "HTTP %ld", r->status);
	crm_delivery_done(d, r->err ? r->err : EIO, cause);
}

static int deliver(struct crm *c, struct crm_delivery *d)
{
	const struct conf *cf = crm_conf(c);
	char sig[32 + 72];
	const char *hdrs[] = { "Content-Type: application/json", sig, NULL };
	struct httpc_opts o = { .method = "POST", .url = cf->crm.events_url,
				.headers = hdrs, .body = d->body, .body_len = d->len,
				.timeout_ms = EVENT_HTTP_TIMEOUT_MS,
				.max_body = 64 * 1024 };

	memcpy(sig, "X-Sipcrm-Signature: ", 20);
	if (crm_sign(cf->crm.secret, d->body, d->len, sig + 20))
		return EIO;
	return crm_delivery_http(d, &o, on_delivered);
}

static int webhook(struct crm *c, struct api_req *req)
{
	json_t *body = api_req_json(req), *list;
	int dropped = 0;

	if (!json_is_object(body))
		return api_reply_error(req, 400, "a JSON object is expected");
	if (json_is_true(json_object_get(body, "invalidate_all"))) {
		dropped = crm_cache_drop(c, NULL);
	}
	else if (json_is_array(list = json_object_get(body, "invalidate"))) {
		for (size_t i = 0; i < json_array_size(list); i++)
			if (!json_is_string(json_array_get(list, i)))
				return api_reply_error(req, 400, "invalidate holds numbers");
		for (size_t i = 0; i < json_array_size(list) && dropped >= 0; i++) {
			int k = crm_cache_drop(c, json_string_value(json_array_get(list, i)));

			dropped = k < 0 ? -1 : dropped + k;
		}
	}
	else {
		return api_reply_error(req, 400, "expected invalidate or invalidate_all");
	}
	if (dropped < 0)
		return api_reply_error(req, 500, "database error");
	log_info("CRM cache: %d entr%s dropped on request", dropped,
		 dropped == 1 ? "y" : "ies");
	return api_reply_json(req, 200, json_pack("{s:i}", "invalidated", dropped));
}

const struct crm_adapter crm_adapter_generic = {
	.name = "generic",
	.lookup = lookup,
	.deliver = deliver,
	.webhook = webhook,
};
