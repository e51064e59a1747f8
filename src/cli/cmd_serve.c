/* gdn2 serve — an OpenAI-style completions server over the generation engine (src/serve), with
 * continuous batching: one engine thread runs the step loop over the active slots; HTTP requests
 * (libmicrohttpd, one thread per connection) join through a bounded queue and leave at any step.
 * docs/SERVING.md has the API, the limits and the errors. Built only when libmicrohttpd is found
 * (make says so); the byte tokenizer turns text prompts into tokens. */
#define _GNU_SOURCE /* POLLRDHUP */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gdn2.h"

#ifndef GDN2_HAVE_MHD
int cmd_serve(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "gdn2 serve: this gdn2 was built without the HTTP server: libmicrohttpd was not found at build "
                    "time (apt-get install libmicrohttpd-dev, then make)\n");
    return 1;
}
#else

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gdn2_model.h"
#include "gdn2_serve.h"
#include "gdn2_text.h"
#include "util/internal.h"

#define MAX_STOPS 4
#define MAX_BODY (1 << 20) /* request bodies above 1 MiB: 413 */

enum { PH_QUEUED = 0, PH_RUNNING = 1, PH_DONE = 2 };

/* one completion request, shared by its HTTP thread and the engine thread (fields below `phase`
 * under srv.mu); freed when both have let go (refs) */
typedef struct req {
    struct req *next; /* queue link (engine side)                                 */
    int32_t *prompt;
    int64_t P, max_tokens;
    gdn2_sampling sp;
    int32_t *stop[MAX_STOPS];
    int64_t stop_len[MAX_STOPS];
    int n_stop, stream;
    char id[48];
    long long created;
    struct MHD_Connection *conn;
    /* shared */
    int phase, cancelled, finish, refs;
    int32_t *out; /* committed output [max_tokens]                            */
    int64_t n_out, n_gen;
    char err[512];
    /* HTTP side (stream) */
    int64_t sent;      /* tokens turned into events                                */
    int final_sent;
    char *pend;        /* formatted events not yet handed to MHD                   */
    size_t pend_len, pend_off, pend_cap;
} req;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work;     /* engine thread: a request arrived or was cancelled         */
    pthread_cond_t progress; /* HTTP threads: tokens or a finish                          */
    req *qhead, *qtail;
    int64_t n_queued, n_running, n_slots, queue_cap, max_tokens, max_prompt;
    int stopping;            /* no new requests; queued ones are rejected                  */
    int abort_all;           /* drain timed out: every open request ends now              */
    int64_t live;            /* HTTP requests not yet completed                            */
    unsigned long long n_ids;
    const char *model_name;
    gdn2_engine *e;
    gdn2_model *m;
} srv;

static void req_unref(req *r) { /* under srv.mu */
    if (--r->refs > 0) return;
    free(r->prompt), free(r->out), free(r->pend);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r);
}

/* ---- the engine thread ---------------------------------------------------------------------- */
static void finish_req(req *r, int finish, const char *err) { /* under srv.mu */
    r->phase = PH_DONE;
    r->finish = finish;
    if (err) snprintf(r->err, sizeof r->err, "%s", err);
    req_unref(r);
}

static void *engine_main(void *arg) {
    (void)arg;
    gdn2_engine *e = srv.e;
    const int64_t N = gdn2_engine_slots(e);
    req **running = calloc((size_t)N, sizeof *running);
    if (!running) {
        fprintf(stderr, "gdn2 serve: out of memory for the engine thread\n");
        exit(1);
    }
    pthread_mutex_lock(&srv.mu);
    for (;;) {
        /* leave: cancelled requests free their slots */
        for (int64_t k = 0; k < N; k++)
            if (running[k] && (running[k]->cancelled || srv.abort_all)) {
                gdn2_engine_release(e, k);
                srv.n_running--;
                finish_req(running[k], GDN2_FINISH_ERROR, "cancelled");
                running[k] = NULL;
            }
        /* join: queued requests into free slots (prefill), rejected when stopping */
        while (srv.qhead && (srv.stopping || gdn2_engine_free_slots(e) > 0)) {
            req *r = srv.qhead;
            srv.qhead = r->next;
            if (!srv.qhead) srv.qtail = NULL;
            srv.n_queued--;
            if (r->cancelled || srv.stopping) {
                finish_req(r, GDN2_FINISH_ERROR, r->cancelled ? "cancelled" : "the server is shutting down");
                continue;
            }
            const int32_t *stops[MAX_STOPS];
            for (int i = 0; i < r->n_stop; i++) stops[i] = r->stop[i];
            gdn2_request q = {r->prompt, r->P, r->max_tokens, r->sp, stops, r->stop_len, r->n_stop, NULL, 0, NULL};
            int64_t k = -1;
            srv.n_running++;
            pthread_mutex_unlock(&srv.mu);
            int st = gdn2_engine_submit(e, &q, &k);
            char msg[512];
            if (st) snprintf(msg, sizeof msg, "%s", gdn2_last_error());
            pthread_mutex_lock(&srv.mu);
            if (st) {
                srv.n_running--;
                finish_req(r, GDN2_FINISH_ERROR, msg);
                pthread_cond_broadcast(&srv.progress);
                continue;
            }
            r->phase = PH_RUNNING;
            running[k] = r;
        }
        if (gdn2_engine_running(e) == 0) {
            if (srv.stopping && srv.n_running == 0 && !srv.qhead && srv.live == 0) break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&srv.work, &srv.mu, &ts);
            continue;
        }
        /* one step over the running slots (the HTTP threads go on meanwhile) */
        pthread_mutex_unlock(&srv.mu);
        int st = gdn2_engine_step(e);
        char msg[512] = "";
        if (st) snprintf(msg, sizeof msg, "model step failed: %s", gdn2_last_error());
        pthread_mutex_lock(&srv.mu);
        for (int64_t k = 0; k < N; k++) {
            req *r = running[k];
            if (!r) continue;
            gdn2_slot_output o;
            gdn2_engine_output(e, k, &o);
            if (o.n_committed > r->n_out) memcpy(r->out + r->n_out, o.tokens + r->n_out,
                                                 (size_t)(o.n_committed - r->n_out) * sizeof(int32_t));
            r->n_out = o.n_committed;
            r->n_gen = o.n_generated;
            if (o.finish != GDN2_FINISH_NONE) {
                gdn2_engine_release(e, k);
                srv.n_running--;
                running[k] = NULL;
                finish_req(r, o.finish, o.finish == GDN2_FINISH_ERROR ? msg : NULL);
            }
        }
        pthread_cond_broadcast(&srv.progress);
    }
    pthread_mutex_unlock(&srv.mu);
    free(running);
    return NULL;
}

/* ---- JSON ------------------------------------------------------------------------------------ */
/* Valid UTF-8 of bytes b[0..n) appended to out (room for 3n + 1): invalid bytes become U+FFFD; an
 * incomplete sequence at the end is held back unless final. Returns the bytes consumed. */
static size_t utf8_text(const int32_t *b, size_t n, int final, char *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned c = (unsigned)b[i] & 0xFF;
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        size_t k = 1;
        while (len && k < len && i + k < n && (((unsigned)b[i + k] & 0xC0) == 0x80)) k++;
        if (len && k < len && i + k == n && !final) break; /* may complete with the next bytes */
        int ok = len && k == len;
        if (ok && len == 2 && c < 0xC2) ok = 0; /* overlong */
        if (ok && len >= 3) {
            unsigned c1 = (unsigned)b[i + 1] & 0xFF;
            if ((len == 3 && c == 0xE0 && c1 < 0xA0) || (len == 3 && c == 0xED && c1 >= 0xA0) ||
                (len == 4 && c == 0xF0 && c1 < 0x90) || (len == 4 && (c > 0xF4 || (c == 0xF4 && c1 >= 0x90))))
                ok = 0;
        }
        if (c == 0) ok = 0; /* NUL: not representable in a C string */
        if (ok) {
            for (size_t j = 0; j < len; j++) out[o++] = (char)(b[i + j] & 0xFF);
            i += len;
        } else {
            out[o++] = (char)0xEF, out[o++] = (char)0xBF, out[o++] = (char)0xBD;
            i += 1;
        }
    }
    out[o] = 0;
    return i;
}

static const char *finish_name(int f) { return f == GDN2_FINISH_STOP ? "stop" : f == GDN2_FINISH_LENGTH ? "length" : "error"; }

/* one choice object: text and tokens of out[from..to) */
static cJSON *choice_json(const req *r, int64_t from, int64_t to, const char *text, const char *finish) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "text", text);
    cJSON_AddNumberToObject(c, "index", 0);
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    cJSON *t = cJSON_AddArrayToObject(c, "tokens"); /* gdn2: the exact byte tokens */
    for (int64_t i = from; i < to; i++) cJSON_AddItemToArray(t, cJSON_CreateNumber(r->out[i]));
    return c;
}

static cJSON *completion_head(const req *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", r->id);
    cJSON_AddStringToObject(j, "object", "text_completion");
    cJSON_AddNumberToObject(j, "created", (double)r->created);
    cJSON_AddStringToObject(j, "model", srv.model_name);
    return j;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned code, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return MHD_NO;
    size_t n = strlen(s);
    char *body = malloc(n + 2);
    if (!body) {
        free(s);
        return MHD_NO;
    }
    memcpy(body, s, n), body[n] = '\n', body[n + 1] = 0;
    free(s);
    struct MHD_Response *resp = MHD_create_response_from_buffer(n + 1, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, code, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned code, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned code, const char *type, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNumberToObject(e, "code", code);
    return send_json(c, code, j);
}

/* ---- requests -------------------------------------------------------------------------------- */
/* the client closed its end (nothing more to read and the peer is gone) */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {ci->connect_fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return 1;
    char b;
    return recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static int json_int(const cJSON *v, long long lo, long long hi, long long *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d == floor(d)) || d < (double)lo || d > (double)hi) return 0;
    *out = (long long)d;
    return 1;
}

/* whether a JSON text's strings hold the escape \u0000: cJSON decodes it into a C string, which would
 * end there (a prompt or stop string silently cut) */
static int json_nul_escape(const char *s, size_t n) {
    int in = 0;
    for (size_t i = 0; i < n; i++) {
        if (!in) {
            in = s[i] == '"';
        } else if (s[i] == '"') {
            in = 0;
        } else if (s[i] == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && i + 5 < n && !memcmp(s + i + 2, "0000", 4)) return 1;
            i++; /* the escaped character */
        }
    }
    return 0;
}

/* parse the body into r (prompt, limits, sampling, stops); 0, or an error message in err */
static int parse_request(const char *body, size_t len, req *r, char *err, size_t errn) {
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j) {
        snprintf(err, errn, "the body is not valid JSON (near byte %ld)",
                 cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - body) : 0L);
        return 1;
    }
    if (json_nul_escape(body, len)) {
        snprintf(err, errn, "a string of the body holds \\u0000 (a NUL byte): prompts and stop strings are text");
        cJSON_Delete(j);
        return 1;
    }
    int bad = 1;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt"), *v;
    long long x;
    if (!cJSON_IsObject(j)) {
        snprintf(err, errn, "the body must be a JSON object");
        goto out;
    }
    if (cJSON_IsString(p)) {
        r->P = (int64_t)strlen(p->valuestring);
        if (r->P > srv.max_prompt) {
            snprintf(err, errn, "prompt of %lld tokens exceeds the limit of %lld (--max-prompt)", (long long)r->P,
                     (long long)srv.max_prompt);
            goto out;
        }
        r->prompt = malloc((size_t)(r->P ? r->P : 1) * sizeof(int32_t));
        if (!r->prompt) goto oom;
        gdn2_byte_encode(p->valuestring, r->P, r->prompt);
    } else if (cJSON_IsArray(p) && (cJSON_GetArraySize(p) == 0 || cJSON_IsNumber(p->child))) {
        r->P = cJSON_GetArraySize(p);
        if (r->P > srv.max_prompt) {
            snprintf(err, errn, "prompt of %lld tokens exceeds the limit of %lld (--max-prompt)", (long long)r->P,
                     (long long)srv.max_prompt);
            goto out;
        }
        r->prompt = malloc((size_t)(r->P ? r->P : 1) * sizeof(int32_t));
        if (!r->prompt) goto oom;
        int64_t i = 0;
        cJSON_ArrayForEach(v, p) {
            if (!json_int(v, 0, srv.m->cfg.vocab_size - 1, &x)) {
                snprintf(err, errn, "prompt[%lld]: a token id in [0, %lld) expected", (long long)i,
                         (long long)srv.m->cfg.vocab_size);
                goto out;
            }
            r->prompt[i++] = (int32_t)x;
        }
    } else {
        snprintf(err, errn, "\"prompt\" must be a string or an array of token ids (one prompt per request)");
        goto out;
    }
    if (r->P == 0) {
        snprintf(err, errn, "\"prompt\" is empty");
        goto out;
    }
    r->max_tokens = srv.max_tokens < 16 ? srv.max_tokens : 16;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "max_tokens")) && !cJSON_IsNull(v)) {
        if (!json_int(v, 1, srv.max_tokens, &x)) {
            snprintf(err, errn, "\"max_tokens\" must be an integer in [1, %lld] (--max-tokens)", (long long)srv.max_tokens);
            goto out;
        }
        r->max_tokens = x;
    }
    r->sp.temperature = 1.0f, r->sp.top_k = 0, r->sp.top_p = 1.0f, r->sp.seed = 0;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "temperature")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 100)) {
            snprintf(err, errn, "\"temperature\" must be a number in [0, 100]");
            goto out;
        }
        r->sp.temperature = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "top_p")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0 && v->valuedouble <= 1)) {
            snprintf(err, errn, "\"top_p\" must be a number in (0, 1]");
            goto out;
        }
        r->sp.top_p = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "top_k")) && !cJSON_IsNull(v)) {
        if (!json_int(v, 0, INT_MAX, &x)) {
            snprintf(err, errn, "\"top_k\" must be an integer >= 0");
            goto out;
        }
        r->sp.top_k = (int)x;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "seed")) && !cJSON_IsNull(v)) {
        if (!json_int(v, 0, 9007199254740991LL, &x)) {
            snprintf(err, errn, "\"seed\" must be an integer in [0, 2^53)");
            goto out;
        }
        r->sp.seed = (uint64_t)x;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "n")) && !cJSON_IsNull(v) && (!json_int(v, 1, 1, &x))) {
        snprintf(err, errn, "\"n\" must be 1 (one choice per request)");
        goto out;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "stream")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) {
            snprintf(err, errn, "\"stream\" must be true or false");
            goto out;
        }
        r->stream = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "stop")) && !cJSON_IsNull(v)) {
        const cJSON *s;
        int n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
        if (n < 0 || n > MAX_STOPS) {
            snprintf(err, errn, "\"stop\" must be a string or an array of at most %d strings", MAX_STOPS);
            goto out;
        }
        for (int i = 0; i < n; i++) {
            s = cJSON_IsString(v) ? v : cJSON_GetArrayItem(v, i);
            if (!cJSON_IsString(s) || !s->valuestring[0]) {
                snprintf(err, errn, "\"stop\"[%d] must be a non-empty string", i);
                goto out;
            }
            int64_t L = (int64_t)strlen(s->valuestring);
            r->stop[i] = malloc((size_t)L * sizeof(int32_t));
            if (!r->stop[i]) goto oom;
            gdn2_byte_encode(s->valuestring, L, r->stop[i]);
            r->stop_len[i] = L;
            r->n_stop = i + 1;
        }
    }
    bad = 0;
    goto out;
oom:
    snprintf(err, errn, "out of memory for the request");
out:
    cJSON_Delete(j);
    return bad;
}

/* stream: events for out[sent..n_out) (and the final one) into r->pend; under srv.mu */
static int format_events(req *r) {
    int64_t to = r->n_out;
    int done = r->phase == PH_DONE;
    char *text = malloc((size_t)(to - r->sent) * 3 + 1);
    if (!text) return 0;
    size_t used = utf8_text(r->out + r->sent, (size_t)(to - r->sent), done, text);
    char *ev = NULL;
    if (used > 0 || (done && !r->final_sent)) {
        cJSON *j = completion_head(r), *ch = cJSON_AddArrayToObject(j, "choices");
        const char *fin = NULL;
        if (done) fin = r->finish == GDN2_FINISH_ERROR ? "error" : finish_name(r->finish);
        cJSON_AddItemToArray(ch, choice_json(r, r->sent, r->sent + (int64_t)used, text, fin));
        if (done && r->finish == GDN2_FINISH_ERROR) {
            cJSON *e = cJSON_AddObjectToObject(j, "error");
            cJSON_AddStringToObject(e, "message", r->err);
            cJSON_AddStringToObject(e, "type", "server_error");
        }
        if (done) {
            cJSON *u = cJSON_AddObjectToObject(j, "usage");
            cJSON_AddNumberToObject(u, "prompt_tokens", (double)r->P);
            cJSON_AddNumberToObject(u, "completion_tokens", (double)r->n_gen);
            cJSON_AddNumberToObject(u, "total_tokens", (double)(r->P + r->n_gen));
        }
        ev = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
    }
    free(text);
    size_t need = (ev ? strlen(ev) + 8 : 0) + (done ? 16 : 0);
    if (r->pend_off == r->pend_len) r->pend_off = r->pend_len = 0;
    if (r->pend_len + need + 1 > r->pend_cap) { /* grow, moving the unsent bytes to the front */
        size_t cap = r->pend_len - r->pend_off + need + 256;
        char *nb = malloc(cap);
        if (!nb) {
            free(ev);
            return 0;
        }
        if (r->pend_len > r->pend_off) memcpy(nb, r->pend + r->pend_off, r->pend_len - r->pend_off);
        free(r->pend);
        r->pend = nb, r->pend_len -= r->pend_off, r->pend_off = 0, r->pend_cap = cap;
    }
    if (ev) r->pend_len += (size_t)sprintf(r->pend + r->pend_len, "data: %s\n\n", ev);
    free(ev);
    r->sent += (int64_t)used;
    if (done && !r->final_sent) {
        r->pend_len += (size_t)sprintf(r->pend + r->pend_len, "data: [DONE]\n\n");
        r->final_sent = 1;
    }
    return 1;
}

static void wait_progress(void) { /* under srv.mu: up to 50 ms */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&srv.progress, &srv.mu, &ts);
}

static void cancel_req(req *r) { /* under srv.mu: the HTTP side lets go */
    if (r->phase != PH_DONE) {
        r->cancelled = 1;
        pthread_cond_signal(&srv.work);
    }
    req_unref(r);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    req *r = cls;
    pthread_mutex_lock(&srv.mu);
    for (;;) {
        if (r->pend_off < r->pend_len) {
            size_t n = r->pend_len - r->pend_off < max ? r->pend_len - r->pend_off : max;
            memcpy(buf, r->pend + r->pend_off, n);
            r->pend_off += n;
            pthread_mutex_unlock(&srv.mu);
            return (ssize_t)n;
        }
        if (r->final_sent) {
            pthread_mutex_unlock(&srv.mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (r->n_out > r->sent || r->phase == PH_DONE) {
            if (!format_events(r)) break;
            if (r->pend_off < r->pend_len || r->final_sent) continue;
        }
        if (srv.abort_all || client_gone(r->conn)) break;
        wait_progress();
    }
    pthread_mutex_unlock(&srv.mu);
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls) {
    pthread_mutex_lock(&srv.mu);
    cancel_req(cls);
    pthread_mutex_unlock(&srv.mu);
}

typedef struct {
    char *body;
    size_t len, cap;
    int too_big;
} conn_ctx;

static enum MHD_Result completions(struct MHD_Connection *c, conn_ctx *cx) {
    if (cx->too_big)
        return send_error(c, 413, "invalid_request_error", "the request body exceeds %d bytes",
                          MAX_BODY);
    req *r = calloc(1, sizeof *r);
    if (!r) return send_error(c, 500, "server_error", "out of memory");
    char err[512];
    if (parse_request(cx->body ? cx->body : "", cx->len, r, err, sizeof err)) {
        r->refs = 1;
        pthread_mutex_lock(&srv.mu);
        req_unref(r);
        pthread_mutex_unlock(&srv.mu);
        return send_error(c, 400, "invalid_request_error", "%s", err);
    }
    r->out = malloc((size_t)r->max_tokens * sizeof(int32_t));
    r->conn = c;
    r->refs = 2; /* HTTP side + engine side */
    r->created = (long long)time(NULL);
    pthread_mutex_lock(&srv.mu);
    const int busy = srv.n_queued + srv.n_running >= srv.n_slots + srv.queue_cap;
    if (!r->out || busy || srv.stopping) {
        r->refs = 1;
        req_unref(r);
        pthread_mutex_unlock(&srv.mu);
        if (srv.stopping) return send_error(c, 503, "server_shutting_down", "the server is shutting down");
        if (busy)
            return send_error(c, 503, "server_busy",
                              "the server is full: %lld slots busy and %lld requests queued (--slots, --queue); "
                              "retry later",
                              (long long)srv.n_slots, (long long)srv.queue_cap);
        return send_error(c, 500, "server_error", "out of memory");
    }
    snprintf(r->id, sizeof r->id, "cmpl-%llu", ++srv.n_ids);
    if (srv.qtail) srv.qtail->next = r;
    else srv.qhead = r;
    srv.qtail = r;
    srv.n_queued++;
    pthread_cond_signal(&srv.work);
    if (r->stream) {
        pthread_mutex_unlock(&srv.mu);
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, r, stream_free);
        if (!resp) {
            stream_free(r);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    /* not streamed: wait for the whole completion (the client may leave meanwhile) */
    while (r->phase != PH_DONE && !srv.abort_all) {
        if (client_gone(c)) {
            cancel_req(r);
            pthread_mutex_unlock(&srv.mu);
            return MHD_NO;
        }
        wait_progress();
    }
    if (r->phase != PH_DONE || r->finish == GDN2_FINISH_ERROR) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s", r->phase != PH_DONE ? "the server is shutting down" : r->err);
        int shut = r->phase != PH_DONE || !strcmp(r->err, "the server is shutting down");
        cancel_req(r);
        pthread_mutex_unlock(&srv.mu);
        return shut ? send_error(c, 503, "server_shutting_down", "%s", msg) : send_error(c, 500, "server_error", "%s", msg);
    }
    char *text = malloc((size_t)r->n_out * 3 + 1);
    cJSON *j = NULL;
    if (text) {
        utf8_text(r->out, (size_t)r->n_out, 1, text);
        j = completion_head(r);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(j, "choices"), choice_json(r, 0, r->n_out, text, finish_name(r->finish)));
        cJSON *u = cJSON_AddObjectToObject(j, "usage");
        cJSON_AddNumberToObject(u, "prompt_tokens", (double)r->P);
        cJSON_AddNumberToObject(u, "completion_tokens", (double)r->n_gen);
        cJSON_AddNumberToObject(u, "total_tokens", (double)(r->P + r->n_gen));
    }
    free(text);
    cancel_req(r);
    pthread_mutex_unlock(&srv.mu);
    return j ? send_json(c, MHD_HTTP_OK, j) : send_error(c, 500, "server_error", "out of memory");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)cls, (void)version;
    conn_ctx *cx = *con_cls;
    if (!cx) { /* first call: headers only */
        cx = calloc(1, sizeof *cx);
        if (!cx) return MHD_NO;
        *con_cls = cx;
        pthread_mutex_lock(&srv.mu);
        srv.live++;
        pthread_mutex_unlock(&srv.mu);
        return MHD_YES;
    }
    if (*upload_size) { /* body bytes */
        if (cx->len + *upload_size > MAX_BODY) cx->too_big = 1;
        if (!cx->too_big) {
            if (cx->len + *upload_size + 1 > cx->cap) {
                size_t cap = (cx->len + *upload_size + 1) * 2;
                char *nb = realloc(cx->body, cap);
                if (!nb) return MHD_NO;
                cx->body = nb, cx->cap = cap;
            }
            memcpy(cx->body + cx->len, upload, *upload_size);
            cx->len += *upload_size;
            cx->body[cx->len] = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (!strcmp(url, "/health")) {
        if (strcmp(method, "GET")) return send_error(c, 405, "invalid_request_error", "/health takes GET");
        cJSON *j = cJSON_CreateObject();
        pthread_mutex_lock(&srv.mu);
        cJSON_AddStringToObject(j, "status", srv.stopping ? "stopping" : "ok");
        cJSON_AddStringToObject(j, "model", srv.model_name);
        cJSON_AddNumberToObject(j, "slots", (double)srv.n_slots);
        cJSON_AddNumberToObject(j, "running", (double)srv.n_running);
        cJSON_AddNumberToObject(j, "queued", (double)srv.n_queued);
        cJSON_AddNumberToObject(j, "queue", (double)srv.queue_cap);
        pthread_mutex_unlock(&srv.mu);
        return send_json(c, srv.stopping ? 503 : MHD_HTTP_OK, j);
    }
    if (!strcmp(url, "/v1/completions")) {
        if (strcmp(method, "POST")) return send_error(c, 405, "invalid_request_error", "/v1/completions takes POST");
        return completions(c, cx);
    }
    return send_error(c, 404, "invalid_request_error", "no such endpoint: %s %s (POST /v1/completions, GET /health)",
                      method, url);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    conn_ctx *cx = *con_cls;
    if (!cx) return;
    free(cx->body);
    free(cx);
    *con_cls = NULL;
    pthread_mutex_lock(&srv.mu);
    srv.live--;
    pthread_cond_signal(&srv.work);
    pthread_mutex_unlock(&srv.mu);
}

static void serve_usage(FILE *f) {
    fprintf(f,
            "usage: gdn2 serve CKPT.safetensors --port P [--host ADDR] [--slots N] [--queue N] [--max-tokens N]\n"
            "                  [--max-prompt N] [--threads N] [--device cpu|cuda] [--drain-s S]\n"
            "                  [--cuda-graph on|off]\n"
            "\n"
            "OpenAI-style completions over HTTP (byte tokenizer), continuous batching on the CPU or the GPU:\n"
            "  POST /v1/completions {prompt, max_tokens, temperature, top_p, top_k, seed, stop, stream}\n"
            "  GET  /health\n"
            "  --port P          TCP port (0: any free one; the port is printed)\n"
            "  --host ADDR       IPv4 address to listen on (127.0.0.1)\n"
            "  --slots N         sequences decoded at once (4)\n"
            "  --queue N         requests waiting for a slot before 503 (16)\n"
            "  --max-tokens N    largest max_tokens a request may ask for (256; default of a request: 16)\n"
            "  --max-prompt N    longest prompt in tokens (4096)\n"
            "  --threads N       CPU threads (0 = OpenMP default)\n"
            "  --device D        cpu (default) or cuda: the model, the slots' states and the steps on the GPU\n"
            "                    (bf16-mixed, docs/BACKEND.md; a step is one batch there: docs/SERVING.md)\n"
            "  --cuda-graph on|off with --device cuda: each decode step replayed from a CUDA graph, one per\n"
            "                    batch size (on, default), or its kernels launched one by one (off)\n"
            "  --drain-s S       on SIGTERM/SIGINT, seconds to let running requests finish (30)\n"
            "SIGTERM / SIGINT: stop accepting, finish running requests (queued ones get 503), exit 0.\n"
            "Exit status: 0 ok, 2 bad usage or input, 1 runtime failure.\n");
}

int cmd_serve(int argc, char **argv) {
    const char *ckpt = NULL, *host = "127.0.0.1";
    int port = -1, threads = 0, npos = 0, device = 0, graph_off = 0;
    int64_t slots = 4, queue = 16, max_tokens = 256, max_prompt = 4096;
    double drain_s = 30;
    const cli_opt opts[] = {
        CLI_OPT_INT("--port", &port, 0, 65535),
        CLI_OPT_STR("--host", NULL, &host),
        CLI_OPT_I64("--slots", &slots, 1, 4096),
        CLI_OPT_I64("--queue", &queue, 0, 1000000),
        CLI_OPT_I64("--max-tokens", &max_tokens, 1, 1 << 24),
        CLI_OPT_I64("--max-prompt", &max_prompt, 1, 1 << 24),
        CLI_OPT_INT("--threads", &threads, 0, cli_max_threads()),
        CLI_OPT_F64("--drain-s", &drain_s, 0, 86400, 0),
        CLI_OPT_CHOICE("--device", &device, "cpu|cuda"),
        CLI_OPT_CHOICE("--cuda-graph", &graph_off, "on|off"),
    };
    int rc = cli_parse("serve", argc, argv, 1, opts, (int)(sizeof opts / sizeof opts[0]), &ckpt, 1, &npos, serve_usage);
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt || port < 0) {
        fprintf(stderr, "gdn2 serve: %s\n", !ckpt ? "missing the checkpoint CKPT.safetensors" : "missing --port P");
        serve_usage(stderr);
        return 2;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "gdn2 serve: --host: expected an IPv4 address such as 127.0.0.1, got \"%s\"\n", host);
        return 2;
    }
    if ((rc = cli_check_in("serve", "checkpoint", ckpt))) return rc;
    int st = gdn2_model_load(ckpt, &srv.m);
    if (st) {
        fprintf(stderr, "gdn2 serve: %s\n", gdn2_last_error());
        return cli_exit_code(st);
    }
    if (srv.m->cfg.vocab_size < GDN2_BYTE_VOCAB) {
        fprintf(stderr, "gdn2 serve: %s: vocab_size %lld < 256, not a byte-level model\n", ckpt,
                (long long)srv.m->cfg.vocab_size);
        gdn2_model_free(srv.m);
        return 2;
    }
    srv.m->n_threads = threads;
    const int64_t ctx = max_prompt + max_tokens;
    char what[96];
    snprintf(what, sizeof what, "--slots %lld", (long long)slots);
    /* on the GPU the states and the prefill's forward live in device memory (which refuses what
     * does not fit, naming the sizes): the host holds the slots' logits */
    const double host_need = device ? 8.0 * (double)slots * (double)srv.m->cfg.padded_vocab
                                    : (double)slots * cli_state_bytes(&srv.m->cfg, (double)ctx) +
                                          cli_forward_bytes(&srv.m->cfg, cli_prefill_tokens(srv.m, (double)max_prompt), 0);
    if ((rc = cli_check_mem("serve", what, host_need)) || (rc = cli_model_device("serve", srv.m, device, !graph_off))) {
        gdn2_model_free(srv.m);
        return rc;
    }
    if ((st = gdn2_engine_create(srv.m, slots, ctx, &srv.e))) {
        fprintf(stderr, "gdn2 serve: %s\n", gdn2_last_error());
        gdn2_model_free(srv.m);
        return cli_exit_code(st);
    }
    pthread_mutex_init(&srv.mu, NULL);
    pthread_cond_init(&srv.work, NULL);
    pthread_cond_init(&srv.progress, NULL);
    srv.n_slots = slots, srv.queue_cap = queue, srv.max_tokens = max_tokens, srv.max_prompt = max_prompt;
    srv.model_name = srv.m->cfg.name;
    /* signals: SIGTERM / SIGINT are taken by sigwait below (blocked in every thread), SIGPIPE ignored */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_t eng;
    if (pthread_create(&eng, NULL, engine_main, NULL)) {
        fprintf(stderr, "gdn2 serve: cannot start the engine thread\n");
        return 1;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, completed,
        NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned)(slots + queue + 32), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)60, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "gdn2 serve: cannot listen on %s:%d (%s)\n", host, port, errno ? strerror(errno) : "?");
        pthread_mutex_lock(&srv.mu);
        srv.stopping = 1;
        pthread_cond_signal(&srv.work);
        pthread_mutex_unlock(&srv.mu);
        pthread_join(eng, NULL);
        gdn2_engine_free(srv.e);
        gdn2_model_free(srv.m);
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr,
            "gdn2 serve: %s (%s) on http://%s:%u with %lld slots, queue %lld, max_tokens %lld, max_prompt %lld, "
            "device %s\n",
            ckpt, srv.model_name, host, di ? di->port : (unsigned)port, (long long)slots, (long long)queue,
            (long long)max_tokens, (long long)max_prompt, gdn2_model_device(srv.m));
    fflush(stderr);
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    fprintf(stderr, "gdn2 serve: %s: no new requests; finishing the running ones\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* stop accepting (the listening socket closes), let the running requests finish */
    MHD_socket ls = MHD_quiesce_daemon(d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    pthread_mutex_lock(&srv.mu);
    srv.stopping = 1;
    pthread_cond_signal(&srv.work);
    double t0 = gdn2_now();
    while (srv.live > 0 || srv.n_running > 0 || srv.qhead) {
        if (gdn2_now() - t0 > drain_s && !srv.abort_all) {
            fprintf(stderr, "gdn2 serve: %lld requests still open after %.0f s: ending them\n", (long long)srv.live, drain_s);
            srv.abort_all = 1;
            pthread_cond_broadcast(&srv.progress);
            pthread_cond_signal(&srv.work);
        }
        if (srv.abort_all && gdn2_now() - t0 > drain_s + 5) break;
        wait_progress();
    }
    pthread_mutex_unlock(&srv.mu);
    MHD_stop_daemon(d);
    pthread_mutex_lock(&srv.mu);
    srv.live = 0;
    srv.abort_all = 1;
    pthread_cond_signal(&srv.work);
    pthread_mutex_unlock(&srv.mu);
    pthread_join(eng, NULL);
    gdn2_engine_free(srv.e);
    gdn2_model_free(srv.m);
    fprintf(stderr, "gdn2 serve: stopped\n");
    return 0;
}
#endif
