/*
 * b2b_media.c: what the call core does with the media engine beyond ports
 * and bridges. Recording segments (one per pair of bridged legs: a
 * transfer starts a new one) and the files they leave, the media timeout
 * that ends a silent call, DTMF that an agent sends as SIP INFO, and
 * GET /api/v1/recordings/{id}.
 *
 * A call keeps the names of its segments ("2026-11-21/ID.wav",
 * "2026-11-21/ID-2.wav", relative to [media] record_dir) in c->recs, one
 * per line. A segment shorter than record_min leaves no file, so its name
 * is dropped when it ends; the writer thread's verdict (MEDIA_EV_RECORDED)
 * arrives later and corrects the list, in the call or in its CDR row, when
 * a file was lost (disk full) or kept against the prediction.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sofia-sip/sip_status.h>

#define LOG_MODULE "b2b"
#include "log.h"
#include "clk.h"
#include "conf.h"
#include "db.h"
#include "hmap.h"
#include "http/api.h"
#include "sip/b2b.h"
#include "sip/b2b_int.h"
#include "sip/sipd.h"

/* A segment being written, by media_record_start()'s tag. */
struct rec_job {
	char call_id[40];
	char name[B2B_REC_NAME];
};

/* ---- recording --------------------------------------------------------------- */

static bool recs_has(const char *recs, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = recs; *p; p += strcspn(p, "\n") + (p[strcspn(p, "\n")] != 0))
		if (!strncmp(p, name, n) && (p[n] == '\n' || !p[n]))
			return true;
	return false;
}

/* Adds or removes name in a list of lines; false if it did not fit. */
static bool recs_edit(char *recs, size_t size, const char *name, bool add)
{
	size_t n = strlen(name), len = strlen(recs);
	char *p;

	if (add) {
		if (recs_has(recs, name))
			return true;
		if (len + n + 2 > size)
			return false;
		snprintf(recs + len, size - len, "%s\n", name);
		return true;
	}
	for (p = recs; *p; p += strcspn(p, "\n") + (p[strcspn(p, "\n")] != 0)) {
		if (!strncmp(p, name, n) && p[n] == '\n') {
			memmove(p, p + n + 1, strlen(p + n + 1) + 1);
			break;
		}
	}
	return true;
}

/* "2026-11-21/ID-2.wav" -> "ID-2": the id the recordings endpoint takes. */
static void rec_id(const char *name, char *out, size_t size)
{
	const char *base = strrchr(name, '/');
	size_t n;

	base = base ? base + 1 : name;
	n = strcspn(base, ".");
	snprintf(out, size, "%.*s", (int)n, base);
}

/* The link to a recording, absolute: [api] public_url or http(s)://listen. */
int b2b_rec_url(const struct conf *cf, const char *name, char *buf, size_t size)
{
	char id[B2B_REC_NAME];
	int n;

	rec_id(name, id, sizeof(id));
	if (*cf->api.public_url) {
		size_t len = strlen(cf->api.public_url);

		if (cf->api.public_url[len - 1] == '/')
			len--;
		n = snprintf(buf, size, "%.*s/api/v1/recordings/%s", (int)len,
			     cf->api.public_url, id);
	}
	else
		n = snprintf(buf, size, "http%s://%s%s%s:%u/api/v1/recordings/%s",
			     *cf->api.tls_cert ? "s" : "",
			     strchr(cf->api.listen_host, ':') ? "[" : "",
			     cf->api.listen_host,
			     strchr(cf->api.listen_host, ':') ? "]" : "",
			     cf->api.listen_port, id);
	return n > 0 && (size_t)n < size ? 0 : -1;
}

/* The links to the segments in recs, as a JSON array. */
json_t *b2b_recs_json(const struct conf *cf, const char *recs)
{
	json_t *a = json_array();
	char name[B2B_REC_NAME], url[512];

	for (const char *p = recs; a && *p;) {
		size_t n = strcspn(p, "\n");

		if (n && n < sizeof(name)) {
			memcpy(name, p, n);
			name[n] = '\0';
			if (!b2b_rec_url(cf, name, url, sizeof(url)))
				json_array_append_new(a, json_string(url));
		}
		p += n + (p[n] != '\0');
	}
	return a;
}

/* The first recording's link, for call.ended and the CDR; false: none. */
bool b2b_rec_first_url(const struct call *c, char *buf, size_t size)
{
	char name[B2B_REC_NAME];
	size_t n = strcspn(c->recs, "\n");

	if (!n || n >= sizeof(name))
		return false;
	memcpy(name, c->recs, n);
	name[n] = '\0';
	return !b2b_rec_url(c->conf, name, buf, size);
}

/* The segment under way ends now: one shorter than record_min leaves nothing. */
static void rec_close(struct call *c, int64_t now)
{
	if (!c->rec_on)
		return;
	c->rec_on = false;
	if (now - c->rec_started_ms < c->conf->media.record_min_ms)
		recs_edit(c->recs, sizeof(c->recs), c->rec_name, false);
}

/*
 * Records the pair now bridged (caller's side left, agent's side right) as
 * a new segment; the one under way, if any, ends where this one starts.
 */
void b2b_rec_segment(struct call *c)
{
	struct b2b *b = c->b2b;
	const struct conf *cf = c->conf;
	char path[1024], key[24];
	struct rec_job *j;
	int64_t now = clk_wall_ms();
	size_t dl = strlen(cf->media.record_dir);
	int e;

	if (!cf->media.record || c->ep_in == MEDIA_EP_NONE || c->ep_out == MEDIA_EP_NONE)
		return;
	rec_close(c, now);
	c->rec_seg = c->rec_seg ? c->rec_seg + 1 : 1;
	if (media_record_path(path, sizeof(path), cf->media.record_dir, c->id,
			      c->rec_seg, now) < 0 || strlen(path) <= dl + 1 ||
	    strlen(path + dl + 1) >= sizeof(c->rec_name)) {
		log_warn("call %s: the recording path is too long; not recorded", c->id);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	snprintf(j->call_id, sizeof(j->call_id), "%s", c->id);
	snprintf(j->name, sizeof(j->name), "%s", path + dl + 1);
	snprintf(key, sizeof(key), "%" PRIu64, ++b->rec_tag);
	if (hmap_set(b->recs, key, j)) {
		free(j);
		return;
	}
	e = media_record_start(b->media, c->ep_in, c->ep_out, path,
			       cf->media.record_min_ms, b->rec_tag);
	if (e) {
		log_warn("call %s: cannot record: %s", c->id, strerror(e));
		free(hmap_del(b->recs, key));
		return;
	}
	if (!recs_edit(c->recs, sizeof(c->recs), j->name, true)) {
		log_warn("call %s: too many recording segments to list; %s is not "
			 "listed", c->id, j->name);
	}
	snprintf(c->rec_name, sizeof(c->rec_name), "%s", j->name);
	c->rec_on = true;
	c->rec_started_ms = now;
	log_debug("call %s: recording segment %u to %s", c->id, c->rec_seg, path);
}

/* The call ends (its eps are about to be freed): the last segment's fate. */
void b2b_rec_end(struct call *c)
{
	rec_close(c, clk_wall_ms());
}

/* The writer's verdict on an ended call: its CDR row is corrected. */
static void rec_fix_cdr(struct b2b *b, const struct rec_job *j, bool kept)
{
	static const char sel[] = "SELECT recordings FROM cdr WHERE call_id = ?";
	static const char upd[] = "UPDATE cdr SET recordings = ?, recording_url = ? "
				  "WHERE call_id = ?";
	char recs[B2B_RECS_MAX] = "", url[512];
	sqlite3_stmt *st = db_stmt(b->db, sel);
	struct call tmp;
	bool found = false;

	if (!st)
		return;
	sqlite3_bind_text(st, 1, j->call_id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(st, 0);

		snprintf(recs, sizeof(recs), "%s", v ? (const char *)v : "");
		found = true;
	}
	sqlite3_reset(st);
	if (!found || recs_has(recs, j->name) == kept)
		return;
	recs_edit(recs, sizeof(recs), j->name, kept);
	memset(&tmp, 0, sizeof(tmp));
	tmp.conf = b->conf;
	snprintf(tmp.recs, sizeof(tmp.recs), "%s", recs);
	db_tx(b->db);
	st = db_stmt(b->db, upd);
	if (!st)
		return;
	sqlite3_bind_text(st, 1, *recs ? recs : NULL, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, b2b_rec_first_url(&tmp, url, sizeof(url)) ? url : NULL,
			  -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, j->call_id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		log_err("CDR of %s: recordings not updated", j->call_id);
	sqlite3_reset(st);
}

static void on_recorded(struct b2b *b, const struct media_event *ev)
{
	char key[24];
	struct rec_job *j;
	struct call *c;

	snprintf(key, sizeof(key), "%" PRIu64, ev->tag);
	j = hmap_del(b->recs, key);
	if (!j)
		return;
	log_debug("call %s: recording %s ended after %" PRId64 " ms: %s", j->call_id,
		  j->name, ev->ms, ev->kept ? "kept" : ev->err ? strerror(ev->err) :
		  "too short, discarded");
	if (!ev->kept && ev->err && ev->err != ENOENT)
		log_warn("call %s: recording %s lost: %s", j->call_id, j->name,
			 strerror(ev->err));
	c = hmap_get(b->calls, j->call_id);
	if (c && !c->ending) {
		if (!recs_edit(c->recs, sizeof(c->recs), j->name, ev->kept))
			log_warn("call %s: too many recording segments to list", c->id);
	}
	else {
		rec_fix_cdr(b, j, ev->kept);
	}
	free(j);
}

/* ---- media timeout -------------------------------------------------------------- */

struct find_pair {
	media_ep_t a, b;
	struct call *found;
};

static int find_pair_cb(const char *key, void *val, void *arg)
{
	struct call *c = val;
	struct find_pair *f = arg;

	(void)key;
	if ((c->ep_in == f->a && c->ep_out == f->b) ||
	    (c->ep_in == f->b && c->ep_out == f->a)) {
		f->found = c;
		return 1;
	}
	return 0;
}

static void on_timeout(struct b2b *b, const struct media_event *ev)
{
	struct find_pair f = { ev->a, ev->b, NULL };
	struct call *c;

	hmap_apply(b->calls, find_pair_cb, &f);
	c = f.found;
	if (!c || c->ending || c->state != CALL_ANSWERED)
		return;
	log_warn("call %s: no RTP from either side for %" PRId64 " ms, ending the "
		 "call", c->id, ev->ms);
	snprintf(c->end_reason, sizeof(c->end_reason), "media_timeout");
	b2b_send_bye(c, b2b_side_dlg(c, SIDE_IN));
	b2b_send_bye(c, b2b_side_dlg(c, SIDE_OUT));
	b2b_call_end(c, "answered");
}

static int on_media_event(su_root_magic_t *m, su_wait_t *w, su_wakeup_arg_t *arg)
{
	struct b2b *b = (struct b2b *)arg;
	struct media_event ev[32];
	size_t n;

	(void)m;
	(void)w;
	while ((n = media_events(b->media, ev, 32)) > 0) {
		for (size_t i = 0; i < n; i++) {
			if (ev[i].kind == MEDIA_EV_TIMEOUT)
				on_timeout(b, &ev[i]);
			else if (ev[i].kind == MEDIA_EV_RECORDED)
				on_recorded(b, &ev[i]);
		}
		if (n < 32)
			break;
	}
	return 0;
}

/* ---- DTMF from SIP INFO ------------------------------------------------------------ */

/*
 * application/dtmf-relay ("Signal=5\r\nDuration=160") or application/dtmf
 * ("5"). Returns the digit, or 0 if the body names none.
 */
static char dtmf_digit(const char *ctype, const char *body, size_t len, unsigned *ms)
{
	char buf[256], *save = NULL, *line;
	char digit = 0;

	*ms = 100;
	if (len >= sizeof(buf))
		return 0;
	memcpy(buf, body, len);
	buf[len] = '\0';
	if (!strcasecmp(ctype, "application/dtmf")) {
		line = buf + strspn(buf, " \t\r\n");
		return strchr("0123456789*#ABCDabcd", *line) && *line &&
		       !line[1 + strspn(line + 1, " \t\r\n")] ? (char)*line : 0;
	}
	for (line = strtok_r(buf, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
		char *eq = strchr(line, '='), *v;
		size_t kl;

		if (!eq)
			continue;
		v = eq + 1 + strspn(eq + 1, " \t");
		kl = (size_t)(eq - line);
		while (kl && (line[kl - 1] == ' ' || line[kl - 1] == '\t'))
			kl--;
		v[strcspn(v, " \t")] = '\0';
		if (kl == 6 && !strncasecmp(line, "Signal", 6)) {
			if (!strcmp(v, "10"))
				digit = '*';
			else if (!strcmp(v, "11"))
				digit = '#';
			else if (v[0] && !v[1] && strchr("0123456789*#ABCDabcd", v[0]))
				digit = v[0];
			else
				return 0;
		}
		else if (kl == 8 && !strncasecmp(line, "Duration", 8)) {
			char *end;
			unsigned long d = strtoul(v, &end, 10);

			if (end != v && !*end)
				*ms = d > 5000 ? 5000 : (unsigned)d;
		}
	}
	return digit;
}

/* INFO inside an answered call's dialog, from side. Returns the status sent. */
int b2b_info(struct call *c, int side, nta_incoming_t *irq, const sip_t *sip)
{
	const char *ct = sip->sip_content_type ? sip->sip_content_type->c_type : NULL;
	media_ep_t to = side == SIDE_IN ? c->ep_out : c->ep_in;
	unsigned ms;
	char d;
	int e;

	if (!ct || (strcasecmp(ct, "application/dtmf-relay") &&
		    strcasecmp(ct, "application/dtmf"))) {
		/* other INFO packages (or a keep-alive): nothing to do */
		sipd_reply(c->b2b->sipd, irq, SIP_200_OK, TAG_END());
		return 200;
	}
	d = sip->sip_payload ? dtmf_digit(ct, sip->sip_payload->pl_data,
					  sip->sip_payload->pl_len, &ms) : 0;
	if (!d) {
		sipd_reply(c->b2b->sipd, irq, 400, "Bad DTMF", TAG_END());
		return 400;
	}
	if (c->state != CALL_ANSWERED || to == MEDIA_EP_NONE) {
		sipd_reply(c->b2b->sipd, irq, SIP_200_OK, TAG_END());
		return 200;
	}
	e = media_ep_dtmf(c->b2b->media, to, d >= 'a' ? (char)(d - 32) : d, ms);
	if (e)
		log_info("call %s: DTMF %c from INFO not sent: %s", c->id, d, strerror(e));
	else
		log_debug("call %s: DTMF %c (%u ms) from INFO relayed as RFC 4733", c->id,
			  d, ms);
	sipd_reply(c->b2b->sipd, irq, SIP_200_OK, TAG_END());
	return 200;
}

/* ---- GET /api/v1/recordings/{id} ----------------------------------------------------- */

static int job_named(const char *key, void *val, void *arg)
{
	(void)key;
	return !strcmp(((const struct rec_job *)val)->name, arg);
}

static int api_recording(struct api_req *req, void *arg)
{
	static const char sql[] = "SELECT recordings FROM cdr WHERE call_id = ?";
	struct b2b *b = arg;
	const char *id = api_req_patharg(req, 0);
	char call_id[40], recs[B2B_RECS_MAX] = "", path[1200], rid[B2B_REC_NAME];
	sqlite3_stmt *st;
	struct stat sb;
	size_t n;
	int fd;

	if (!id || !*id || strlen(id) >= 60 ||
	    id[strspn(id, "0123456789abcdefABCDEF-")] != '\0')
		return api_reply_error(req, 404, "no such recording");
	n = strcspn(id, "-");
	if (n >= sizeof(call_id))
		return api_reply_error(req, 404, "no such recording");
	memcpy(call_id, id, n);
	call_id[n] = '\0';
	st = db_stmt(b->db, sql);
	if (!st)
		return api_reply_error(req, 500, "database error");
	sqlite3_bind_text(st, 1, call_id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(recs, sizeof(recs), "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_reset(st);
	for (char *p = recs, *e; *p; p = e) {
		e = p + strcspn(p, "\n");
		if (*e)
			*e++ = '\0';
		rec_id(p, rid, sizeof(rid));
		if (strcmp(rid, id))
			continue;
		snprintf(path, sizeof(path), "%s/%s", b->conf->media.record_dir, p);
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
			if (fd >= 0)
				close(fd);
			if (hmap_apply(b->recs, job_named, p))
				return api_reply_error(req, 503, "recording %s is still being "
						       "written: retry in a second", id);
			return api_reply_error(req, 404, "recording %s is gone", id);
		}
		return api_reply_fd(req, 200, "audio/wav", fd, (size_t)sb.st_size);
	}
	if (hmap_get(b->calls, call_id))
		return api_reply_error(req, 404, "the call is in progress: its "
				       "recordings are served once it has ended");
	return api_reply_error(req, 404, "no such recording");
}

/* ---- life cycle -------------------------------------------------------------------- */

int b2b_media_init(struct b2b *b)
{
	int fd = b->media ? media_event_fd(b->media) : -1;

	if (hmap_alloc(&b->recs, 64))
		return ENOMEM;
	b->media_widx = -1;
	if (fd < 0)
		return 0;
	if (su_wait_create(&b->media_wait, fd, SU_WAIT_IN) < 0)
		return EIO;
	b->media_widx = su_root_register(b->root, &b->media_wait, on_media_event,
					 (su_wakeup_arg_t *)b, 0);
	if (b->media_widx < 0)
		return EIO;
	b2b_media_reload(b);
	return 0;
}

void b2b_media_reload(struct b2b *b)
{
	int e = media_set_timeout(b->media, b->conf->media.media_timeout_ms);

	if (e)
		log_warn("media_timeout not set: %s", strerror(e));
}

static int free_job(const char *key, void *val, void *arg)
{
	(void)key;
	(void)arg;
	free(val);
	return 0;
}

void b2b_media_fini(struct b2b *b)
{
	if (b->media_widx > 0)
		su_root_deregister(b->root, b->media_widx);
	b->media_widx = -1;
	if (b->recs) {
		hmap_apply(b->recs, free_job, NULL);
		b->recs = hmap_free(b->recs);
	}
}

int b2b_media_register(struct b2b *b, struct api *api)
{
	return api_route(api, "GET", "/api/v1/recordings/*", true, api_recording, b);
}
