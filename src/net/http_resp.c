/* http_resp.c: the HTTP response parser on llhttp (contract in http_resp.h). */
#include "http_resp.h"

#include <ctype.h>
#include <pthread.h>

/* The parser's callbacks: one table for the process, filled once (the
 * first response on any thread) and only read after. */
static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

/* ---- parser callbacks --------------------------------------------------------- */

static int headers_too_large(http_resp *h)
{
    h->err = HTTP_RESP_HEADERS_TOO_LARGE;
    return -1;
}

/* Header and trailer names and values are stored; their total is bounded
 * like the head's bytes (trailers come after the head is complete). */
static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    http_resp *h = p->data;
    if (h->hdrs.len + n > h->max_header_bytes)
        return headers_too_large(h);
    for (size_t i = 0; i < n; i++) {
        char ch = (char)tolower((unsigned char)at[i]);
        if (mw_buf_add(&h->hdrs, &ch, 1) != 0)
            return -1;
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    http_resp *h = p->data;
    if (++h->nheaders > h->max_headers)
        return headers_too_large(h);
    return mw_buf_add(&h->hdrs, "", 1) == 0 ? 0 : -1;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    http_resp *h = p->data;
    if (h->hdrs.len + n > h->max_header_bytes)
        return headers_too_large(h);
    return mw_buf_add(&h->hdrs, at, n) == 0 ? 0 : -1;
}

static int on_header_value_complete(llhttp_t *p)
{
    http_resp *h = p->data;
    return mw_buf_add(&h->hdrs, "", 1) == 0 ? 0 : -1;
}

static int on_headers_complete(llhttp_t *p)
{
    http_resp *h = p->data;
    h->status = llhttp_get_status_code(p);
    /* Only the final response's head ends the head: an interim one's
     * bytes (and any body llhttp reads for it) count against
     * max_header_bytes with the final head's, so the count does not
     * depend on the pieces the bytes arrive in. */
    h->head_done = !(h->status >= 100 && h->status < 200 && h->status != 101);
    /* Decided now, from the head: a trailer line "Transfer-Encoding: x"
     * later clears llhttp's chunked flag, and llhttp_message_needs_eof
     * would then call a chunked body cut in its trailers close-delimited. */
    h->close_delimited = !h->is_head && llhttp_message_needs_eof(p);
    return h->is_head ? 1 : 0; /* a HEAD response has no body */
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    http_resp *h = p->data;
    if (h->body.len + n > h->max_body) {
        h->err = HTTP_RESP_BODY_TOO_LARGE;
        return -1;
    }
    return mw_buf_add(&h->body, at, n) == 0 ? 0 : -1;
}

static int on_message_complete(llhttp_t *p)
{
    http_resp *h = p->data;
    if (h->status >= 100 && h->status < 200 && h->status != 101) {
        /* An interim response (100 Continue, 103 Early Hints): not the
         * answer. Forget it and read on; its head bytes still count
         * against max_header_bytes, so endless 1xx heads are refused. */
        h->status = h->head_done = h->close_delimited = 0;
        h->nheaders = 0;
        h->hdrs.len = h->body.len = 0; /* (llhttp reads a Content-Length body of a 1xx) */
        return 0;
    }
    h->complete = 1;
    return HPE_PAUSED; /* stop: anything after this response is not ours */
}

/* ---- feeding ----------------------------------------------------------------------- */

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

void http_resp_init(http_resp *h, int is_head)
{
    pthread_once(&settings_once, settings_init);
    llhttp_init(&h->parser, HTTP_RESPONSE, &settings);
    h->parser.data = h;
    h->is_head = is_head;
    h->head_bytes = h->nheaders = 0;
    h->head_done = h->close_delimited = h->status = h->complete = h->err = 0;
    h->hdrs.len = h->body.len = 0;
}

int http_resp_feed(http_resp *h, const char *d, size_t n, size_t *used)
{
    llhttp_errno_t e;
    *used = n;
    /* Until the final head ends (head_done), every byte counts against
     * max_header_bytes: a piece that fits is fed whole; one that does not
     * is fed only the allowance first, and refused unless the final head
     * ended within it. So the count does not depend on the pieces. */
    if (h->head_done || n <= h->max_header_bytes - h->head_bytes) {
        if (!h->head_done)
            h->head_bytes += n;
        e = llhttp_execute(&h->parser, d, n);
    } else {
        size_t room = h->max_header_bytes - h->head_bytes;
        h->head_bytes += room;
        e = llhttp_execute(&h->parser, d, room);
        if (e == HPE_OK && !h->head_done)
            return h->err = HTTP_RESP_HEADERS_TOO_LARGE;
        if (e == HPE_OK)
            e = llhttp_execute(&h->parser, d + room, n - room);
    }
    if (e == HPE_PAUSED)
        *used = (size_t)(llhttp_get_error_pos(&h->parser) - d);
    if (e != HPE_OK && e != HPE_PAUSED)
        return h->err ? h->err : HTTP_RESP_BAD;
    return HTTP_RESP_OK;
}

int http_resp_eof(http_resp *h)
{
    if (h->head_done && h->close_delimited && !h->complete) {
        /* llhttp_finish runs on_message_complete, whose HPE_PAUSED it
         * returns: that, not HPE_OK, is the close-delimited body's end. */
        llhttp_errno_t e = llhttp_finish(&h->parser);
        if ((e == HPE_OK || e == HPE_PAUSED) && h->complete)
            return 1;
    }
    return 0;
}

const char *http_resp_reason(const http_resp *h)
{
    return llhttp_get_error_reason(&h->parser);
}

int http_resp_keep_alive(const http_resp *h)
{
    return llhttp_should_keep_alive(&h->parser);
}
