/* tetherd's request handling in-process: route_match and route_serve are
 * everything the daemon does with a request between libmicrohttpd and the
 * reply, with the keys of tests/fuzz/keys/ (the ones the real traffic of the
 * seed corpus was made with, so that its /rec requests reach a key).
 *
 * Input: "METHOD TARGET\nBODY". The first line holds the method and the raw
 * target, split at the first space (no space: the whole line is the target
 * of a GET); everything after the first newline is the body. A NUL ends the
 * method or target, as in the C strings libmicrohttpd hands over. */
#include "fuzz.h"

#include "ecpoint.h"
#include "routes.h"
#include "served.h"

#include <string.h>
#include <jansson.h>

static struct served *served;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        struct tk_keyset *ks = NULL;
        (void) argc, (void) argv;

        if (tk_keyset_load(FUZZ_KEYDIR, NULL, NULL, &ks) < 0 || ks->n_keys == 0 || served_build(ks, &served) < 0 ||
            !served->healthy) {
                fprintf(stderr, "server-request: cannot load the keys of %s\n", FUZZ_KEYDIR);
                abort();
        }
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

static bool is_served_adv(const struct reply *reply) {
        for (size_t i = 0; i < served->n_advs; i++)
                if (reply->body == served->advs[i].jws && reply->len == served->advs[i].len)
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

        switch (reply->status) {
        case 200:
                FUZZ_ASSERT(rt->kind == ROUTE_ADV || rt->kind == ROUTE_REC || rt->kind == ROUTE_HEALTH);
                if (rt->kind == ROUTE_ADV)
                        FUZZ_ASSERT(reply->content_type && is_served_adv(reply));
                if (rt->kind == ROUTE_REC) {
                        FUZZ_ASSERT(reply->content_type && reply->len > 0);
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
        bool rec = rt.kind == ROUTE_REC;
        route_serve(served, &rt, rec ? req.body : "", rec ? req.body_len : 0, &reply);
        check_reply(&rt, &reply);

        /* Before the first key load: never a 200, and /rec still validates first. */
        route_serve(NULL, &rt, rec ? req.body : "", rec ? req.body_len : 0, &reply);
        FUZZ_ASSERT(reply.status != 200);
        request_free(&req);
        return 0;
}
