/* Proxy selection as curl 7.88 does it (lib/url.c detect_proxy, lib/noproxy.c),
 * which is what Clevis users had: tang servers behind the same proxy
 * settings must be reached the same way. */
#include "proxy.h"
#include "cleanup.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <openssl/crypto.h>

#define BLANKS " \t"

/* ip (of family) within the range net/bits; bits 0 is the whole address,
 * as curl's Curl_cidr4_match and Curl_cidr6_match. */
static bool in_range(const unsigned char *ip, const unsigned char *net, size_t len, unsigned bits) {
        if (bits == 0)
                bits = (unsigned) len * 8;
        size_t bytes = bits / 8;
        unsigned rest = bits % 8;
        if (memcmp(ip, net, bytes) != 0)
                return false;
        if (rest == 0)
                return true;
        unsigned char mask = (unsigned char) (0xff << (8 - rest));
        return (ip[bytes] & mask) == (net[bytes] & mask);
}

/* An IP entry: ADDRESS, ADDRESS/BITS, [IPV6] or [IPV6]/BITS. */
static bool ip_entry_matches(const char *entry, size_t n, int family, const unsigned char *ip) {
        char buf[128];
        if (n >= sizeof(buf))
                return false;
        memcpy(buf, entry, n);
        buf[n] = '\0';
        char *addr = buf, *slash = strchr(buf, '/');
        size_t max = family == AF_INET ? 32 : 128;
        unsigned bits = 0;
        if (slash) {
                *slash = '\0';
                const char *b = slash + 1;
                if (!*b || strspn(b, "0123456789") != strlen(b) || strlen(b) > 3)
                        return false;
                bits = (unsigned) atoi(b);
                if (bits > max)
                        return false;
        }
        size_t al = strlen(addr);
        if (family == AF_INET6 && al >= 2 && addr[0] == '[' && addr[al - 1] == ']') {
                addr[al - 1] = '\0';
                addr++;
        }
        unsigned char net[16];
        if (inet_pton(family, addr, net) != 1)
                return false;
        return in_range(ip, net, max / 8, bits);
}

/* A name entry: the name itself, or any name ending in "." + entry. */
static bool name_entry_matches(const char *entry, size_t n, const char *host, size_t hl) {
        if (n && entry[n - 1] == '.')
                n--;
        if (n && entry[0] == '.')
                entry++, n--;
        if (n == 0)
                return false;
        if (n == hl)
                return strncasecmp(entry, host, n) == 0;
        return n < hl && host[hl - n - 1] == '.' && strncasecmp(entry, host + hl - n, n) == 0;
}

bool tc_no_proxy_match(const char *no_proxy, const char *host) {
        if (!no_proxy || !*no_proxy || !host || !*host)
                return false;
        if (strcmp(no_proxy, "*") == 0)
                return true;
        unsigned char ip[16];
        int family = inet_pton(AF_INET, host, ip) == 1 ? AF_INET : inet_pton(AF_INET6, host, ip) == 1 ? AF_INET6 : 0;
        size_t hl = strlen(host);
        if (!family && host[hl - 1] == '.')
                hl--;
        for (const char *p = no_proxy; *p;) {
                p += strspn(p, BLANKS ",");
                size_t n = strcspn(p, BLANKS ",");
                if (n && (family ? ip_entry_matches(p, n, family, ip) : name_entry_matches(p, n, host, hl)))
                        return true;
                p += n;
        }
        return false;
}

static bool set(const struct tc_env_value *v) {
        return v->value && *v->value;
}

const struct tc_env_value *tc_proxy_select(const struct tc_proxy_env *env, bool https, const char *host) {
        const struct tc_env_value *v = https ? &env->https : &env->http;
        if (!set(v))
                v = &env->all;
        if (!set(v))
                return NULL;
        if (set(&env->no) && tc_no_proxy_match(env->no.value, host))
                return NULL;
        return v;
}

static void wipe_free(char *s) {
        if (s)
                OPENSSL_cleanse(s, strlen(s));
        free(s);
}

void tc_proxy_clear(struct tc_proxy *p) {
        free(p->host);
        free(p->port);
        wipe_free(p->user);
        wipe_free(p->pass);
        *p = (struct tc_proxy) {};
}

static int hexval(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* s[0..n) with %XX decoded, as curl decodes the proxy's user and password. */
static char *decode(const char *s, size_t n) {
        char *out = malloc(n + 1), *o = out;
        if (!out)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
                        *o++ = (char) (hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
                        i += 2;
                } else
                        *o++ = s[i];
        }
        *o = '\0';
        return out;
}

static bool is_scheme(const char *s, size_t len) {
        if (len == 0 || !isalpha((unsigned char) s[0]))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!isalnum((unsigned char) s[i]) && !strchr("+-.", s[i]))
                        return false;
        return true;
}

int tc_proxy_parse(const struct tc_env_value *v, struct tc_proxy *p, struct tc_err *err) {
        *p = (struct tc_proxy) { .var = v->name };
        const char *s = v->value, *sep = strstr(s, "://");
        /* Only letters, digits, '+', '-' and '.' after a letter make a scheme
         * (as curl reads it); anything else before "://" may be part of a
         * password and is never printed. */
        if (sep && !is_scheme(s, (size_t) (sep - s)))
                goto malformed;
        if (sep) {
                size_t sl = (size_t) (sep - s);
                if (sl != 4 || strncasecmp(s, "http", 4) != 0) {
                        bool known = (sl == 5 && strncasecmp(s, "https", 5) == 0) ||
                                     (sl >= 6 && strncasecmp(s, "socks", 5) == 0);
                        return tc_fail(err, -EPROTONOSUPPORT,
                                       "%s: %s%.*s:// proxies are not supported: tether speaks to http:// proxies "
                                       "only; give an http:// proxy in %s, or list the server in no_proxy to reach "
                                       "it directly",
                                       v->name, known ? "" : "unknown scheme ", (int) sl, s, v->name);
                }
                s = sep + 3;
        }
        /* The authority: [user[:password]@]host[:port], up to a path. */
        size_t alen = strcspn(s, "/?#");
        const char *at = memrchr(s, '@', alen), *hp = at ? at + 1 : s, *end = s + alen;
        const char *host = hp, *host_end, *port = NULL;
        if (*hp == '[') {
                const char *close = memchr(hp, ']', (size_t) (end - hp));
                if (!close)
                        goto malformed;
                host = hp + 1;
                host_end = close;
                if (close + 1 < end) {
                        if (close[1] != ':')
                                goto malformed;
                        port = close + 2;
                }
        } else {
                const char *colon = memchr(hp, ':', (size_t) (end - hp));
                host_end = colon ? colon : end;
                port = colon ? colon + 1 : NULL;
        }
        if (host_end == host)
                goto malformed;
        size_t port_len = port ? (size_t) (end - port) : 0;
        if (port && (port_len == 0 || port_len > 5 || strspn(port, "0123456789") < port_len ||
                     atoi(port) < 1 || atoi(port) > 65535))
                goto malformed;
        p->host = strndup(host, (size_t) (host_end - host));
        p->port = port ? strndup(port, port_len) : strdup("1080");
        if (!p->host || !p->port)
                goto oom;
        if (at) {
                const char *colon = memchr(s, ':', (size_t) (at - s));
                p->user = decode(s, (size_t) ((colon ? colon : at) - s));
                p->pass = colon ? decode(colon + 1, (size_t) (at - colon - 1)) : strdup("");
                if (!p->user || !p->pass)
                        goto oom;
                /* Proxy-Authorization is built in a fixed buffer (http.c). */
                if (strlen(p->user) + strlen(p->pass) > TC_PROXY_CREDENTIALS_MAX) {
                        tc_proxy_clear(p);
                        return tc_fail(err, -E2BIG, "%s: the proxy's user name and password are longer than %d bytes "
                                       "together: use shorter ones", v->name, TC_PROXY_CREDENTIALS_MAX);
                }
        }
        return 0;
malformed:
        tc_proxy_clear(p);
        return tc_fail(err, -EINVAL, "%s is not a proxy URL (http://[USER:PASSWORD@]HOST[:PORT]): set it to one, or "
                       "unset it", v->name);
oom:
        tc_proxy_clear(p);
        return tc_fail(err, -ENOMEM, "out of memory");
}
