/*
 * b2b_int.h: the B2BUA's private structs, shared by b2b.c (branches,
 * forks, call end), b2b_in.c (the caller's leg) and b2b_cdr.c (CDR, API).
 */
#ifndef SIPCRM_B2B_INT_H
#define SIPCRM_B2B_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <jansson.h>
#include <sofia-sip/nta.h>
#include <sofia-sip/sip.h>

#include "crm/crm.h"
#include "media/media.h"
#include "conf.h"
#include "routing/route.h"
#include "sip/msdp.h"

struct api;

#define B2B_REC_NAME 96         /* "YYYY-MM-DD/CALLID-SEG.wav" and room */
#define B2B_RECS_MAX 512        /* a call's segment names, one per line */

struct b2b {
	su_root_t *root;
	struct sipd *sipd;
	struct reg *reg;
	struct media *media;
	struct crm *crm;
	struct db *db;
	struct conf *conf;
	struct hmap *calls;             /* id -> struct call */
	char *server;
	struct media_prompt *greeting;  /* [media] greeting, NULL: none */
	struct media_prompt *ringback;  /* tone or file, NULL: none */
	struct hmap *did_greetings;     /* path -> prompt, DID overrides */
	struct hmap *acts;              /* ext -> struct agent_act (b2b_event.c) */
	struct metric *m_active;
	struct metric *m_calls[6];      /* by disposition */
	struct hmap *recs;              /* recording tag -> struct rec_job */
	uint64_t rec_tag;               /* the last tag given out */
	struct blf_sub *blf;            /* dialog-event subscriptions (b2b_blf.c) */
	su_wait_t media_wait;           /* the engine's event fd */
	int media_widx;
};

enum call_state {
	CALL_INIT,
	CALL_EARLY,             /* 183 sent, greeting playing, CRM asked */
	CALL_ROUTING,           /* forks ringing */
	CALL_ANSWERED,
	CALL_ENDED,
};

/*
 * The in-dialog state of one side of an answered call: SIDE_IN is the
 * caller's dialog, SIDE_OUT the winning branch's. Offers are relayed from
 * one side to the other (re-INVITE, UPDATE) and each side keeps its own
 * session timer (RFC 4028), as a B2BUA's legs are separate dialogs.
 */
enum { SIDE_IN = 0, SIDE_OUT = 1 };

struct side {
	struct call *call;
	int idx;                        /* SIDE_IN or SIDE_OUT */
	enum msdp_mode sent_mode;       /* the direction of our last SDP to it */
	nta_incoming_t *irq;            /* its offer, waiting for the other side */
	sip_method_t irq_method;
	nta_outgoing_t *orq;            /* our re-INVITE/UPDATE to it */
	sip_method_t orq_method;
	struct msdp_info offer;         /* irq's offer: applied when accepted */
	struct msdp_info cur;           /* the SDP it last agreed to */
	bool have_cur;
	bool ack_sdp;                   /* our offer went in a 200: the ACK answers */
	uint64_t ver;                   /* o= version of our SDP towards it */
	int64_t se_ms;                  /* session interval; 0: no session timer */
	bool we_refresh;                /* sipcrm sends the refreshes */
	bool timer_feature;             /* it said Supported: timer */
	bool allow_update;              /* it allows UPDATE (cheaper refresh) */
	su_timer_t *tmr_se;
	/* SDES-SRTP towards it: our a=crypto lines in the last SDP we sent it
	   (two in an offer, one in an answer), kept across re-INVITEs so that
	   its SRTP sessions survive them */
	bool savp;                      /* our SDP to it is RTP/SAVP */
	bool srtp_required;             /* [media] srtp = require: it must use SRTP */
	struct msdp_crypto sdes[2];
	size_t nsdes;
};

/* What a branch is for. */
enum leg_role {
	LEG_BRANCH,             /* a target of the routing plan */
	LEG_C2C_AGENT,          /* click-to-call: the agent's phone, rung first */
	LEG_XFER,               /* a transfer's target */
};

struct leg {
	struct leg *next;
	struct call *call;
	enum leg_role role;
	const char *offer;              /* its SDP when not the call's out_offer */
	const char *from_user;          /* From when not the call's */
	const char *from_name;
	nta_leg_t *dlg;
	nta_outgoing_t *orq;
	size_t fork;
	unsigned idx;
	char uri[320];
	char agent[33];
	char route[128];                /* NAT: where the contact registered from */
	int status;
	bool cancelled;
	bool ringing;
	bool pending_final;
	bool early_media;               /* its 183 SDP feeds the caller */
	bool act_ringing;               /* counted as ringing its agent */
	unsigned auth_tries;            /* digest answers sent to the trunk */
	bool savp;                      /* an agent's phone offered SRTP */
	bool srtp_fellback;             /* it refused SRTP: offered plain again */
	struct msdp_crypto sdes[2];     /* our offer's a=crypto lines to it */
	size_t nsdes;
	const struct conf_trunk *trunk; /* a trunk leg: credentials */
	int64_t started_ms, answered_ms, ended_ms;
	struct sockaddr_storage peer;   /* where its 2xx came from */
	bool have_peer;
};

struct call {
	struct b2b *b2b;
	char id[40];
	enum route_direction dir;
	enum call_state state;
	char from[64], from_name[64], to[64], did[64];
	char from_host[128];            /* From host on the branches */
	char caller_agent[33];          /* internal and outbound: who called */
	char carry[768];                /* Diversion/History-Info lines for the branches */
	struct conf *conf;
	struct route_settings set;
	struct route_plan *plan;        /* until the answer: 5 KB not kept per call */
	size_t fork;
	bool fork_started;

	nta_leg_t *in_dlg;
	nta_incoming_t *in_irq;
	struct sockaddr_storage in_src; /* where the caller's INVITE came from */
	bool have_in_src;
	struct msdp_info in_sdp;
	char in_answer[1024];           /* our SDP towards the caller */
	char out_offer[1024];           /* our SDP towards the branches */
	uint64_t sess_id;

	media_ep_t ep_in, ep_out;
	uint16_t port_in, port_out;

	struct leg *legs;
	unsigned nlegs;
	struct leg *winner;

	struct crm_lookup *lookup;
	struct crm_result lres;
	bool lookup_done;
	bool greeting_min_done;
	bool sent_180;
	bool early_relay;               /* a branch's early media is bridged */
	bool caller_100rel;             /* Require: 100rel: 1xx go reliably */
	bool late_offer;                /* INVITE without SDP: ours goes in the 200 */
	struct side side[2];
	struct leg *in_leg;             /* click-to-call: the agent's leg is the
					   caller's side (SIDE_IN) */
	struct xfer *xfer;              /* a transfer under way */
	char in_callid[128];            /* Call-ID of the caller's dialog */
	char c2c_number[64];            /* click-to-call: the client's number */

	su_timer_t *tmr_fork, *tmr_greeting, *tmr_lookup, *tmr_free;
	int64_t started_ms, answered_ms, ended_ms;

	int best_status;
	char best_phrase[64];
	char disposition[12];
	char first_agent[33], last_agent[33];
	int pending;                    /* transactions that keep it alive */
	unsigned ev_seq;                /* seq of its last event */
	bool ev_started;                /* call.started emitted */
	char ev_rung[128];              /* agents reported ringing, "|101|102|" */
	bool act_caller, act_winner;    /* counted as busy: caller_agent, winner */
	bool ending;
	bool in_callback;
	char end_reason[16];            /* "media_timeout", "session_timeout" */
	char recs[B2B_RECS_MAX];        /* recording segments, one per line */
	char rec_name[B2B_REC_NAME];    /* the segment being recorded */
	unsigned rec_seg;
	bool rec_on;
	int64_t rec_started_ms;
};

/* b2b.c */
struct leg *b2b_leg_new(struct call *c, const char *uri, const char *agent,
			const char *route);
int b2b_leg_invite(struct call *c, struct leg *l);
/* Whether irq comes from the address that answered l (any port): the
   only source trusted for requests in l's dialog. True before an answer. */
bool b2b_leg_from_peer(const struct leg *l, nta_incoming_t *irq);
/* Whether irq comes from the address in peer (any port). */
bool b2b_from_addr(const struct sockaddr_storage *peer, nta_incoming_t *irq);
void b2b_leg_answer_ack(struct leg *l, const sip_t *sip);
void b2b_cancel_role(struct call *c, enum leg_role role, const struct leg *keep);
size_t b2b_ring_agent(struct call *c, const char *ext, enum leg_role role,
		      const char *offer, const char *from_user);
struct call *b2b_call_find(struct b2b *b, const char *in_callid);
const char *b2b_contact(const struct call *c, char *buf, size_t sz);
const char *b2b_contact_of(const struct b2b *b, char *buf, size_t sz);
void b2b_timer_arm(su_timer_t **t, struct b2b *b, int64_t ms, su_timer_f f,
		   void *arg);
void b2b_timer_disarm(su_timer_t **t);
void b2b_new_id(char id[40]);
void b2b_route(struct call *c);
void b2b_call_end(struct call *c, const char *disposition);
void b2b_send_bye(struct call *c, nta_leg_t *dlg);
void b2b_cancel_others(struct call *c);
void b2b_call_maybe_free(struct call *c);
void b2b_call_free_now(struct call *c);
void b2b_leg_final_after_end(struct leg *l);

/* b2b_dlg.c */
void b2b_side_init(struct call *c);
int b2b_se_request(struct call *c, const sip_t *sip);
void b2b_se_response(struct call *c, int side, const sip_t *sip);
void b2b_se_start(struct call *c, int side);
int b2b_se_header(const struct call *c, int side, char *buf, size_t sz);
void b2b_side_cleanup(struct call *c);
nta_leg_t *b2b_side_dlg(const struct call *c, int side);
int b2b_apply_peer(struct call *c, int side, const struct msdp_info *info);
int b2b_build_sdp(struct call *c, int side, int answer_pt, int te_pt,
		  enum msdp_mode mode);
int b2b_build_answer(struct call *c, int side, const struct msdp_info *offer,
		     enum msdp_mode mode);
int b2b_srtp_check(const struct call *c, bool required, const struct msdp_info *info);
void b2b_side_take_leg(struct call *c, int side, const struct leg *l);
void b2b_side_secure(struct call *c, int side);
void b2b_log_sdp(const struct call *c, const char *what, const sip_t *sip);
void b2b_leg_ack(nta_leg_t *dlg, const sip_t *sip);
void b2b_side_reset(struct call *c, int side);
int b2b_side_reoffer(struct call *c, int side, enum msdp_mode mode);
int b2b_side_of(const struct call *c, const struct leg *l);

/* b2b_in.c */
void b2b_call_ringing(struct call *c, struct leg *l);
void b2b_call_progress(struct call *c);
void b2b_call_answered(struct call *c, struct leg *l);
void b2b_call_failed(struct call *c, int status, const char *phrase);
void b2b_call_redirect(struct call *c);
int b2b_in_dialog(struct call *c, struct leg *l, nta_incoming_t *irq,
		  const sip_t *sip);
/* The host[:port][;params] part of a trunk's uri. */
const char *b2b_trunk_host(const char *uri);
void b2b_trunk_uri(const struct call *c, const char *number, char *out, size_t sz);
void b2b_expand_ext(const char *tmpl, const char *ext, char *out, size_t sz);
bool b2b_agent_busy(struct b2b *b, const char *ext, const struct call *self);
bool b2b_dial_allowed(const struct conf *cf, const struct conf_agent *a,
		      const char *number);

/* b2b_ctl.c: transfers, click-to-call, hangup from the API */
int b2b_refer(struct call *c, struct leg *l, nta_incoming_t *irq, const sip_t *sip);
void b2b_ctl_leg_answered(struct call *c, struct leg *l, const sip_t *sip);
void b2b_ctl_leg_failed(struct call *c, struct leg *l, int status, const char *phrase);
bool b2b_xfer_bye(struct call *c, struct leg *l);
void b2b_xfer_free(struct call *c);
int b2b_ctl_register(struct b2b *b, struct api *api);
void b2b_ev_transferred(struct call *c, const char *agent, const char *by,
			const char *mode);

/* b2b_media.c: recording segments, media timeouts, DTMF from INFO */
int b2b_media_init(struct b2b *b);
void b2b_media_reload(struct b2b *b);
void b2b_media_fini(struct b2b *b);
int b2b_media_register(struct b2b *b, struct api *api);
void b2b_rec_segment(struct call *c);
void b2b_rec_end(struct call *c);
int b2b_rec_url(const struct conf *cf, const char *name, char *buf, size_t size);
bool b2b_rec_first_url(const struct call *c, char *buf, size_t size);
json_t *b2b_recs_json(const struct conf *cf, const char *recs);
int b2b_info(struct call *c, int side, nta_incoming_t *irq, const sip_t *sip);

/* b2b_blf.c: the dialog event package (RFC 4235) */
void b2b_blf_init(struct b2b *b);
void b2b_blf_fini(struct b2b *b);
void b2b_blf_status(struct b2b *b, const char *ext, const char *status);

/* b2b_cdr.c */
void b2b_cdr_write(struct call *c);
/*
 * The open_calls row of c as its event ev is stored (same transaction):
 * what b2b_cdr_recover() needs if sipcrmd dies before the call ends.
 * b2b_cdr_write() deletes it.
 */
void b2b_cdr_note_open(struct call *c, json_t *ev);
/*
 * At start: every call a crash left in open_calls gets its CDR row
 * (disposition answered or failed, end_reason "restart") and its
 * call.ended (the next seq), and leaves the table.
 */
void b2b_cdr_recover(struct b2b *b);

/* b2b_event.c: CONTRACT §4 events and the agents' status */
void b2b_ev_started(struct call *c);
void b2b_ev_ringing(struct call *c, const char *ext);
void b2b_ev_answered(struct call *c, const struct leg *l);
void b2b_ev_ended(struct call *c);
void b2b_act_leg(struct leg *l, bool ringing);
void b2b_act_busy(struct call *c, bool caller, bool busy);
void b2b_act_call_end(struct call *c);
/* "busy", "ringing" or NULL; self's own part left out when set */
const char *b2b_agent_activity(struct b2b *b, const char *ext,
			       const struct call *self);
int b2b_act_init(struct b2b *b);
/* "offline", "idle", "ringing" or "busy" */
const char *b2b_agent_status(struct b2b *b, const char *ext);
/* how many calls the agent is in (answered, or placing) */
unsigned b2b_agent_calls(struct b2b *b, const char *ext);
void b2b_act_fini(struct b2b *b);

#endif
