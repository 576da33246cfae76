/* Which proxy a request goes through, by curl's rules (what Clevis users
 * had): the settings come from the caller (struct tc_proxy_env, which the
 * programs read from the environment); the library reads none. */
#pragma once

#include <stdbool.h>

#include "ctx.h"
#include "err.h"

/* A proxy to speak to, from its URL: host (an IPv6 address without
 * brackets), port (1080 when the URL gives none, as curl), and the
 * credentials of user:password@, percent-decoded, or NULL. var names the
 * setting it came from, for messages. */
/* The longest user name and password, together, a proxy URL may carry. */
#define TC_PROXY_CREDENTIALS_MAX 512

struct tc_proxy {
        const char *var;
        char *host, *port, *user, *pass;
};

/* Whether host (a name, or an IP address without brackets) is listed in
 * no_proxy, as curl 7.88 reads it: entries separated by commas or blanks;
 * "*" alone matches every host; a name entry (a leading or trailing dot
 * ignored) matches that name and the names under it, case-insensitively;
 * an IP address entry matches that address, with /BITS the addresses in
 * that range (/0 as the whole address, as curl). Unlike curl 7.88, which
 * compares an IPv6 host as a name, IPv6 entries match as addresses, CIDR
 * and [brackets] included. */
bool tc_no_proxy_match(const char *no_proxy, const char *host);

/* The proxy setting a request to host uses: http_proxy for http://,
 * https_proxy for https://, all_proxy when that one is unset, none when
 * no_proxy lists the host. NULL: no proxy. */
const struct tc_env_value *tc_proxy_select(const struct tc_proxy_env *env, bool https, const char *host);

/* Parses a proxy setting. http:// (or no scheme) only: any other scheme
 * (socks*, https) is -EPROTONOSUPPORT, with err naming the setting, the
 * scheme and what to do. Returns 0 or -errno; p is cleared first. */
int tc_proxy_parse(const struct tc_env_value *v, struct tc_proxy *p, struct tc_err *err);
/* Frees p, wiping the credentials. */
void tc_proxy_clear(struct tc_proxy *p);
