#include "routes.h"
#include "cleanup.h"
#include "rec.h"
#include "hosts.h"

#include <stdio.h>
#include <string.h>

static const char *skip_slashes(const char *p) {
        while (*p == '/')
                p++;
        return p;
}

static bool is_thp_char(char c) {
        return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '-';
}

/* Matches "/+NAME" and returns what follows, or NULL. */
static const char *match_segment(const char *p, const char *name) {
        size_t len = strlen(name);
        if (*p != '/')
                return NULL;
        p = skip_slashes(p);
        if (strncmp(p, name, len) != 0)
                return NULL;
        return p + len;
}

/* Matches "/+ARG" to the end of the target, ARG being [0-9A-Za-z_-]+. */
static bool match_arg(const char *p, struct route *rt) {
        if (*p != '/')
                return false;
        p = skip_slashes(p);
        const char *start = p;
        while (is_thp_char(*p))
                p++;
        if (p == start || *p != '\0')
                return false;
        rt->arg = start;
        rt->arg_len = (size_t) (p - start);
        return true;
}

static bool only_slashes(const char *p) {
        return *skip_slashes(p) == '\0';
}

/* Matches "/+NAME" of a valid host name and returns what follows, or NULL. */
static const char *match_host(const char *p, struct route *rt) {
        if (*p != '/')
                return NULL;
        p = skip_slashes(p);
        const char *start = p;
        while (*p && *p != '/')
                p++;
        if (!tk_host_name_valid_n(start, (size_t) (p - start)))
                return NULL;
        rt->host = start;
        rt->host_len = (size_t) (p - start);
        return p;
}

/* What follows /h/NAME: the shared routes' adv and rec, with their slashes. */
static void match_host_route(const char *p, bool get, bool post, struct route *rt) {
        const char *rest;

        if (!(p = match_host(p, rt)))
                return;
        if ((rest = match_segment(p, "adv"))) {
                if (only_slashes(rest) || match_arg(rest, rt))
                        rt->kind = get ? ROUTE_HOST_ADV : ROUTE_METHOD_NOT_ALLOWED;
        } else if ((rest = match_segment(p, "rec"))) {
                if (match_arg(rest, rt))
                        rt->kind = post ? ROUTE_HOST_REC : ROUTE_METHOD_NOT_ALLOWED;
        }
        if (rt->kind == ROUTE_NOT_FOUND)
                rt->host = NULL, rt->host_len = 0, rt->arg = NULL, rt->arg_len = 0;
}

void route_match(const char *prefix, const char *method, const char *target, struct route *rt) {
        const char *p = target, *rest;
        bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;

        memset(rt, 0, sizeof(*rt));
        rt->kind = ROUTE_NOT_FOUND;
        if (strlen(target) > TANG_MAX_URI) {
                rt->kind = ROUTE_URI_TOO_LONG;
                return;
        }
        if (prefix && prefix[0]) {
                p = match_segment(p, prefix);
                if (!p)
                        return;
        }
        if ((rest = match_segment(p, "adv"))) {
                if (only_slashes(rest) || match_arg(rest, rt))
                        rt->kind = get ? ROUTE_ADV : ROUTE_METHOD_NOT_ALLOWED;
        } else if ((rest = match_segment(p, "rec"))) {
                if (match_arg(rest, rt))
                        rt->kind = post ? ROUTE_REC : ROUTE_METHOD_NOT_ALLOWED;
        } else if ((rest = match_segment(p, "health"))) {
                if (only_slashes(rest))
                        rt->kind = get ? ROUTE_HEALTH : ROUTE_METHOD_NOT_ALLOWED;
        } else if ((rest = match_segment(p, "h")) && *rest == '/')
                match_host_route(rest, get, post, rt);
}

static void reply_status(struct reply *reply, int status) {
        reply->status = status;
        reply->content_type = NULL;
        reply->body = NULL;
        reply->len = 0;
}

static void reply_text(struct reply *reply, int status, const char *text) {
        reply->status = status;
        reply->content_type = "text/plain";
        reply->len = (size_t) snprintf(reply->buf, sizeof(reply->buf), "%s\n", text);
        reply->body = reply->buf;
}

/* Tang answers 500 with no body; one line saying which fault it is lets a
 * client tell its user more than the status. */
static void adv_unavailable(const struct served *s, struct reply *reply) {
        const char *why = ADV_NO_KEY_BODY;

        if (s && s->usable)
                why = ADV_DIR_GONE_BODY;
        else if (s && s->no_adv == SERVED_NO_ADV_UNREADABLE)
                why = ADV_UNREADABLE_BODY;
        else if (s && s->no_adv == SERVED_NO_ADV_REMOVED)
                why = ADV_REMOVED_BODY;
        reply_text(reply, 500, why);
}

static void serve_adv(const struct served *s, const struct route *rt, struct reply *reply) {
        const struct served_adv *adv = NULL;

        if (!s || !s->usable || served_adv_withheld(s))
                return adv_unavailable(s, reply);
        if (rt->arg_len == 0)
                adv = &s->advs[0];
        else {
                const struct thp_entry *e = served_find(s, rt->arg, rt->arg_len);
                adv = e ? served_adv_get(s, e) : NULL;
        }
        if (!adv)
                return reply_status(reply, 404);
        reply->status = 200;
        reply->content_type = "application/jose+json";
        reply->body = adv->jws;
        reply->len = adv->len;
}

static enum rec_outcome rec_outcome_of(int status) {
        switch (status) {
        case 200:
                return REC_OUTCOME_RECOVERED;
        case 400:
                return REC_OUTCOME_BAD_REQUEST;
        case 403:
                return REC_OUTCOME_NOT_EXCHANGE;
        case 404:
                return REC_OUTCOME_UNKNOWN_KEY;
        default:
                return REC_OUTCOME_UNAVAILABLE;
        }
}

static void serve_rec_shared(const struct served *s, const struct route *rt, const char *body, size_t len,
                             struct reply *reply) {
        json_auto_t *req = NULL;

        /* Tang's order: the request is validated before the key is looked up. */
        int r = rec_check_request(body, len, &req);
        if (r < 0)
                return reply_status(reply, rec_status(r));
        const struct thp_entry *e = s ? served_find(s, rt->arg, rt->arg_len) : NULL;
        /* The server has this key, but not in memory: answering 404 (or 500)
         * would have the client rebind volumes whose key is fine. 503 is
         * what no tang server answers, so a client can say what it means. */
        if (!e && served_unreadable(s, rt->arg, rt->arg_len))
                return reply_text(reply, 503, REC_UNREADABLE_BODY);
        if (!s || !s->usable)
                return reply_status(reply, 500);
        if (!e)
                return reply_status(reply, 404);
        reply->key = e->key->thp[TK_HASH_S256];
        reply->key_rotated = e->key->hidden;
        if (!e->key->ecmr)
                return reply_status(reply, 403);
        r = rec_exchange(e->key->ecmr, req, reply->buf, sizeof(reply->buf), &reply->len);
        if (r < 0)
                return reply_status(reply, rec_status(r));
        reply->status = 200;
        reply->content_type = "application/jwk+json";
        reply->body = reply->buf;
}

static void serve_rec(const struct served *s, const struct route *rt, const char *body, size_t len,
                      struct reply *reply) {
        serve_rec_shared(s, rt, body, len, reply);
        if (reply->outcome == REC_OUTCOME_NONE)
                reply->outcome = rec_outcome_of(reply->status);
}

/* The host a per-host route names: NULL (404 sent) when there is none.
 * Unknown names create nothing: only an administrator adds hosts. */
static const struct served_host *route_host(const struct served *s, const struct route *rt, struct reply *reply) {
        const struct served_host *h = s ? served_find_host(s, rt->host, rt->host_len) : NULL;
        if (!h) {
                reply_status(reply, 404);
                return NULL;
        }
        reply->host = h->host->name;
        return h;
}

static void serve_host_adv(const struct served *s, const struct route *rt, struct reply *reply) {
        const struct served_adv *adv;

        if (!s || !s->usable || served_adv_withheld(s))
                return adv_unavailable(s, reply);
        const struct served_host *h = route_host(s, rt, reply);
        if (!h)
                return;
        reply->key = h->adv_thp;
        if (h->host->state == TK_HOST_REVOKED)
                return reply_text(reply, 403, HOST_REVOKED_BODY);
        if (rt->arg_len == 0)
                adv = served_host_adv_get(s, h, NULL);
        else {
                /* Signed also by one of the shared signing keys, as /adv/{thp}. */
                const struct thp_entry *e = served_find(s, rt->arg, rt->arg_len);
                adv = e ? served_host_adv_get(s, h, e) : NULL;
        }
        if (!adv)
                return reply_status(reply, 404);
        reply->status = 200;
        reply->content_type = "application/jose+json";
        reply->body = adv->jws;
        reply->len = adv->len;
}

/* Held: the answer is computed first, so that a request that fails anyway
 * (a point off the curve) spends no permission; then one allow token is
 * removed, or the answer is dropped. */
static void serve_host_rec(const struct served *s, const struct route *rt, const char *body, size_t len,
                           struct reply *reply) {
        json_auto_t *req = NULL;

        int r = rec_check_request(body, len, &req);
        if (r < 0)
                return reply_status(reply, rec_status(r));
        const struct served_host *h = route_host(s, rt, reply);
        if (!h)
                return;
        /* The host's keys only: a shared key is unknown here. */
        const struct thp_entry *e = served_find_host_key(h, rt->arg, rt->arg_len);
        /* As on the shared /rec: the key is there but not readable by us,
         * so 404 (bind again) would be the wrong advice. */
        if (!e && served_host_unreadable(h, rt->arg, rt->arg_len))
                return reply_text(reply, 503, REC_UNREADABLE_BODY);
        if (!e)
                return reply_status(reply, 404);
        reply->key = e->key->thp[TK_HASH_S256];
        reply->key_rotated = e->key->hidden;
        if (!e->key->ecmr)
                return reply_status(reply, 403);
        if (h->host->state == TK_HOST_REVOKED) {
                reply->outcome = REC_OUTCOME_REVOKED;
                return reply_text(reply, 403, HOST_REVOKED_BODY);
        }
        r = rec_exchange(e->key->ecmr, req, reply->buf, sizeof(reply->buf), &reply->len);
        if (r < 0)
                return reply_status(reply, rec_status(r));
        if (h->host->state == TK_HOST_HELD) {
                if (tk_host_allow_consume(h->host->dir) < 0) {
                        explicit_bzero(reply->buf, sizeof(reply->buf));
                        reply->outcome = REC_OUTCOME_HELD;
                        return reply_text(reply, 403, HOST_HELD_BODY);
                }
                reply->outcome = REC_OUTCOME_ALLOWED;
        }
        reply->status = 200;
        reply->content_type = "application/jwk+json";
        reply->body = reply->buf;
}

/* For load balancers: 200 "ok" or "degraded" while /adv and /rec can be
 * answered (degraded: from keys in memory only, the directory behind them
 * being gone or unreadable), 503 "unavailable" when they cannot. The state
 * only: the reasons name the key directory and its files, which are no
 * business of the network; tetherd logs them when the state changes. */
static void serve_health(const struct served *s, struct reply *reply) {
        enum served_state state = served_state(s);

        reply->status = state == SERVED_STATE_UNAVAILABLE ? 503 : 200;
        reply->len = (size_t) snprintf(reply->buf, sizeof(reply->buf), "%s\n", served_state_name(state));
        reply->content_type = "text/plain";
        reply->body = reply->buf;
}

const char *rec_outcome_name(enum rec_outcome o) {
        static const char *const names[REC_OUTCOME_MAX] = {
                [REC_OUTCOME_NONE] = "none",
                [REC_OUTCOME_RECOVERED] = "recovered",
                [REC_OUTCOME_ALLOWED] = "allowed",
                [REC_OUTCOME_REVOKED] = "revoked",
                [REC_OUTCOME_HELD] = "held",
                [REC_OUTCOME_NOT_EXCHANGE] = "not_exchange",
                [REC_OUTCOME_UNKNOWN_KEY] = "unknown_key",
                [REC_OUTCOME_BAD_REQUEST] = "bad_request",
                [REC_OUTCOME_UNAVAILABLE] = "unavailable",
        };
        return (unsigned) o < REC_OUTCOME_MAX && names[o] ? names[o] : "none";
}

void route_serve(const struct served *s, const struct route *rt, const char *body, size_t len,
                 struct reply *reply) {
        reply->outcome = REC_OUTCOME_NONE;
        reply->host = NULL;
        reply->key = NULL;
        reply->key_rotated = false;
        switch (rt->kind) {
        case ROUTE_ADV:
                return serve_adv(s, rt, reply);
        case ROUTE_REC:
                return serve_rec(s, rt, body, len, reply);
        case ROUTE_HEALTH:
                return serve_health(s, reply);
        case ROUTE_HOST_ADV:
                return serve_host_adv(s, rt, reply);
        case ROUTE_HOST_REC:
                serve_host_rec(s, rt, body, len, reply);
                if (reply->outcome == REC_OUTCOME_NONE)
                        reply->outcome = rec_outcome_of(reply->status);
                return;
        case ROUTE_METHOD_NOT_ALLOWED:
                return reply_status(reply, 405);
        case ROUTE_URI_TOO_LONG:
                return reply_status(reply, 414);
        case ROUTE_NOT_FOUND:
        default:
                return reply_status(reply, 404);
        }
}
