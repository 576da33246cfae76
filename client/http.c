#include "http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

static size_t collect(char *data, size_t size, size_t nmemb, void *userdata) {
        struct tc_http_reply *reply = userdata;
        size_t n = size * nmemb;

        if (reply->len + n > TC_HTTP_MAX_BODY)
                return 0;   /* makes curl fail with CURLE_WRITE_ERROR */
        char *nb = realloc(reply->body, reply->len + n + 1);
        if (!nb)
                return 0;
        memcpy(nb + reply->len, data, n);
        reply->body = nb;
        reply->len += n;
        reply->body[reply->len] = '\0';
        return n;
}

void tc_http_reply_clear(struct tc_http_reply *reply) {
        free(reply->body);
        memset(reply, 0, sizeof(*reply));
}

int tc_http_request(const char *url, const char *body, size_t body_len, const char *content_type,
                    long timeout_ms, struct tc_http_reply *reply, char *err, size_t errlen) {
        struct curl_slist *headers = NULL;
        char errbuf[CURL_ERROR_SIZE] = "";
        char ct[128];
        int r = 0;

        memset(reply, 0, sizeof(*reply));
        CURL *curl = curl_easy_init();
        if (!curl) {
                snprintf(err, errlen, "cannot initialize HTTP");
                return -ENOMEM;
        }
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, reply);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
        if (body) {
                snprintf(ct, sizeof(ct), "Content-Type: %s", content_type ? content_type : "application/octet-stream");
                headers = curl_slist_append(headers, ct);
                /* Tang never answers Expect: 100-continue; don't wait for it. */
                headers = curl_slist_append(headers, "Expect:");
                curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) body_len);
        }
        CURLcode cr = curl_easy_perform(curl);
        if (cr != CURLE_OK) {
                snprintf(err, errlen, "%s unreachable: %s", url, errbuf[0] ? errbuf : curl_easy_strerror(cr));
                r = cr == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
                tc_http_reply_clear(reply);
        } else
                curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply->status);
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        return r;
}
