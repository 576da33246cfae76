/* tetherd's request handling in-process: route_match and route_serve are
 * everything the daemon does with a request between libmicrohttpd and the
 * reply, with the keys of tests/fuzz/keys/ (the ones the real traffic of the
 * seed corpus was made with, so that its /rec requests reach a key) and its
 * hosts: web01 (active) and gone01 (revoked). No host is held, and the
 * directory holds no allow token: serving a held host unlink()s tokens, and
 * the harness must never change the source tree it reads its keys from.
 *
 * Input: "METHOD TARGET\nBODY". The first line holds the method and the raw
 * target, split at the first space (no space: the whole line is the target
 * of a GET); everything after the first newline is the body. A NUL ends the
 * method or target, as in the C strings libmicrohttpd hands over. */
#include "fuzz.h"

#include "ecpoint.h"
#include "hosts.h"
#include "routes.h"
#include "served.h"

#include <dirent.h>
#include <string.h>
#include <jansson.h>

#define HOST_ACTIVE "web01"
#define HOST_REVOKED "gone01"

static struct served *served;

/* Every thumbprint (all hashes) of a key set, to tell which side a kid is on. */
struct kids {
        const char **thp;
        size_t n;
};
static struct kids shared_kids, host_kids;
static const struct served_host *host_active, *host_revoked;

static void kids_add(struct kids *k, const struct tk_keyset *ks) {
        k->thp = realloc(k->thp, (k->n + ks->n_keys * TK_HASH_COUNT) * sizeof(*k->thp));
        FUZZ_ASSERT(k->thp);
        for (size_t i = 0; i < ks->n_keys; i++)
                for (size_t h = 0; h < TK_HASH_COUNT; h++)
                        if (ks->keys[i].thp[h])
                                k->thp[k->n++] = ks->keys[i].thp[h];
}

static bool kids_have(const struct kids *k, const char *s, size_t len) {
        for (size_t i = 0; s && i < k->n; i++)
                if (strlen(k->thp[i]) == len && memcmp(k->thp[i], s, len) == 0)
                        return true;
        return false;
}

static bool is_name(const char *s, size_t len, const char *name) {
        return s && strlen(name) == len && memcmp(s, name, len) == 0;
}

/* The guarantee that nothing here unlinks: tetherd removes allow tokens
 * only when it serves a held host, so there must be neither. */
static void assert_no_allow_token(const struct tk_host *h) {
        DIR *d = opendir(h->dir);
        struct dirent *de;

        FUZZ_ASSERT(d);
        while ((de = readdir(d)))
                if (strncmp(de->d_name, TK_HOST_ALLOW_PREFIX, strlen(TK_HOST_ALLOW_PREFIX)) == 0) {
                        fprintf(stderr, "server-request: %s/%s: an allow token in the fuzz key directory; the "
                                "harness must never unlink one, remove it from the source tree\n", h->dir, de->d_name);
                        abort();
                }
        closedir(d);
        FUZZ_ASSERT(h->state != TK_HOST_HELD && h->n_allow == 0);
}

static void load_hosts(void) {
        struct tk_hosts *hosts = NULL;

        if (tk_hosts_load(FUZZ_KEYDIR, NULL, NULL, NULL, &hosts) < 0 || !hosts || hosts->n != 2 ||
            served_set_hosts(served, hosts) < 0) {
                fprintf(stderr, "server-request: cannot load the hosts %s and %s of %s/%s\n", HOST_ACTIVE,
                        HOST_REVOKED, FUZZ_KEYDIR, TK_HOSTS_SUBDIR);
                abort();
        }
        for (size_t i = 0; i < served->n_hosts; i++) {
                assert_no_allow_token(&hosts->hosts[i]);
                kids_add(&host_kids, hosts->hosts[i].ks);
        }
        host_active = served_find_host(served, HOST_ACTIVE, strlen(HOST_ACTIVE));
        host_revoked = served_find_host(served, HOST_REVOKED, strlen(HOST_REVOKED));
        FUZZ_ASSERT(host_active && host_active->host->state == TK_HOST_ACTIVE);
        FUZZ_ASSERT(host_revoked && host_revoked->host->state == TK_HOST_REVOKED);
        /* A kid on both sides would make the invariants below vacuous. */
        for (size_t i = 0; i < host_kids.n; i++)
                FUZZ_ASSERT(!kids_have(&shared_kids, host_kids.thp[i], strlen(host_kids.thp[i])));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        struct tk_keyset *ks = NULL;
        (void) argc, (void) argv;

        if (tk_keyset_load(FUZZ_KEYDIR, NULL, NULL, &ks) < 0 || ks->n_keys == 0 || served_build(ks, &served) < 0 ||
            !served->healthy) {
                fprintf(stderr, "server-request: cannot load the keys of %s\n", FUZZ_KEYDIR);
                abort();
        }
        kids_add(&shared_kids, served->ks);
        load_hosts();
        return 0;
}

struct request {
        char *method;
        char *target;
        char *body;       /* exact size, no NUL: tetherd passes (body, len) */
        size_t body_len;
};

static void request_split(const uint8_t *data, size_t size, struct request *req) {
        const uint8_t *nl = memchr(data, '\n', size);
        size_t line_len = nl ? (size_t) (nl - data) : size;
        const uint8_t *sp = memchr(data, ' ', line_len);

        if (sp) {
                req->method = fuzz_cstring(data, (size_t) (sp - data));
                req->target = fuzz_cstring(sp + 1, line_len - (size_t) (sp - data) - 1);
        } else {
                req->method = strdup("GET");
                req->target = fuzz_cstring(data, line_len);
        }
        FUZZ_ASSERT(req->method);
        req->body_len = nl ? size - line_len - 1 : 0;
        req->body = fuzz_copy(nl ? nl + 1 : data, req->body_len);
}

static void request_free(struct request *req) {
        free(req->method);
        free(req->target);
        free(req->body);
}

static bool is_adv_of(const struct served_adv *advs, const struct reply *reply) {
        for (size_t i = 0; i < served->n_advs; i++)
                if (reply->body == advs[i].jws && reply->len == advs[i].len)
                        return true;
        return false;
}

/* A 200 from /rec is a JWK holding a valid point of one of our curves. */
static void check_rec_reply(const struct reply *reply) {
        json_auto_t *jwk = json_loadb(reply->body, reply->len, JSON_REJECT_DUPLICATES, NULL);
        const char *crv = NULL, *x = NULL, *y = NULL;
        FUZZ_ASSERT(jwk);
        FUZZ_ASSERT(json_unpack(jwk, "{s:s,s:s,s:s}", "crv", &crv, "x", &x, "y", &y) == 0);
        EC_GROUP *group = EC_GROUP_new_by_curve_name(ecpoint_curve_nid(crv));
        EC_POINT *point = NULL;
        FUZZ_ASSERT(group);
        FUZZ_ASSERT(ecpoint_decode(group, x, strlen(x), y, strlen(y), NULL, &point) == 0);
        EC_POINT_free(point);
        EC_GROUP_free(group);
}

static void check_reply(const struct route *rt, const struct reply *reply) {
        /* Touch every byte: a body pointing into freed or foreign memory is
         * reported by AddressSanitizer here rather than on some socket. */
        unsigned sum = 0;
        FUZZ_ASSERT(reply->len == 0 || reply->body);
        for (size_t i = 0; i < reply->len; i++)
                sum += (unsigned char) reply->body[i];
        (void) sum;

        bool host_route = rt->kind == ROUTE_HOST_ADV || rt->kind == ROUTE_HOST_REC;
        const struct served_host *h = host_route ? served_find_host(served, rt->host, rt->host_len) : NULL;
        /* A host name reaches the lookup only when valid (405s keep it too). */
        FUZZ_ASSERT(!host_route || rt->host);
        if (rt->host)
                FUZZ_ASSERT(tk_host_name_valid_n(rt->host, rt->host_len));
        /* Only a served host is named in the reply (the ledger records it). */
        FUZZ_ASSERT(!reply->host || (h && reply->host == h->host->name));
        /* No held host: nothing is ever allowed, held, or unlinked. */
        FUZZ_ASSERT(reply->outcome != REC_OUTCOME_ALLOWED && reply->outcome != REC_OUTCOME_HELD);

        switch (reply->status) {
        case 200:
                FUZZ_ASSERT(rt->kind == ROUTE_ADV || rt->kind == ROUTE_REC || rt->kind == ROUTE_HEALTH ||
                            host_route);
                FUZZ_ASSERT(reply->content_type);
                /* A revoked host gets nothing, on any route. */
                FUZZ_ASSERT(h != host_revoked);
                /* A kid of the other side is unknown: host keys only on /h/NAME/rec, and a
                 * host's key never on the shared routes. */
                if (rt->kind == ROUTE_ADV || rt->kind == ROUTE_REC)
                        FUZZ_ASSERT(!kids_have(&host_kids, rt->arg, rt->arg_len));
                if (rt->kind == ROUTE_HOST_REC)
                        FUZZ_ASSERT(!kids_have(&shared_kids, rt->arg, rt->arg_len));
                if (rt->kind == ROUTE_ADV)
                        FUZZ_ASSERT(is_adv_of(served->advs, reply));
                if (rt->kind == ROUTE_HOST_ADV)
                        FUZZ_ASSERT(h == host_active && is_adv_of(h->advs, reply));
                if (rt->kind == ROUTE_REC) {
                        FUZZ_ASSERT(reply->len > 0);
                        FUZZ_ASSERT(kids_have(&shared_kids, reply->key, reply->key ? strlen(reply->key) : 0));
                        check_rec_reply(reply);
                }
                if (rt->kind == ROUTE_HOST_REC) {
                        FUZZ_ASSERT(h == host_active && reply->len > 0);
                        FUZZ_ASSERT(is_name(reply->host, strlen(reply->host), HOST_ACTIVE));
                        FUZZ_ASSERT(served_find_host_key(h, reply->key, reply->key ? strlen(reply->key) : 0));
                        check_rec_reply(reply);
                }
                break;
        case 400: case 403: case 404: case 405: case 414:
                break;
        default:
                /* 500 and 503 only come from a server without usable keys. */
                FUZZ_ASSERT(!"unexpected status");
        }
        if (rt->kind == ROUTE_HEALTH)
                FUZZ_ASSERT(reply->status == 200);
}

/* Behind an endpoint prefix, "/tang" + T routes exactly as T does without. */
static void check_prefix(const struct request *req, const struct route *plain) {
        size_t len = strlen(req->target);
        struct route rt;
        char *prefixed;

        if (len + 5 > TANG_MAX_URI)
                return;
        FUZZ_ASSERT(asprintf(&prefixed, "/tang%s", req->target) > 0);
        route_match("tang", req->method, prefixed, &rt);
        FUZZ_ASSERT(rt.kind == plain->kind && rt.arg_len == plain->arg_len);
        FUZZ_ASSERT(rt.arg_len == 0 || memcmp(rt.arg, plain->arg, rt.arg_len) == 0);
        free(prefixed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct request req = {};
        struct route rt;
        struct reply reply;

        request_split(data, size, &req);
        if (req.body_len > TANG_MAX_BODY) {
                request_free(&req);
                return 0;   /* tetherd answers 413 and never calls route_serve */
        }
        route_match(NULL, req.method, req.target, &rt);
        check_prefix(&req, &rt);

        /* tetherd keeps bodies of /rec requests only. */
        bool rec = rt.kind == ROUTE_REC || rt.kind == ROUTE_HOST_REC;
        route_serve(served, &rt, rec ? req.body : "", rec ? req.body_len : 0, &reply);
        check_reply(&rt, &reply);

        /* Before the first key load: never a 200, and /rec still validates first. */
        route_serve(NULL, &rt, rec ? req.body : "", rec ? req.body_len : 0, &reply);
        FUZZ_ASSERT(reply.status != 200);
        request_free(&req);
        return 0;
}
