/* http_resp.c: the HTTP response parser on llhttp (contract in http_resp.h). */
#include "http_resp.h"

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

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
    if (n == 0)
        return 0;
    if (mw_buf_reserve(&h->hdrs, n) != 0)
        return -1;
    char *out = h->hdrs.p + h->hdrs.len;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)at[i];
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch); /* ASCII, as tolower in "C" */
    }
    h->hdrs.len += n;
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
    h->parser_ready = 0; /* (llhttp_init, ~130 instructions, waits for llhttp's first byte) */
    h->is_head = is_head;
    h->head_bytes = h->nheaders = 0;
    h->head_done = h->close_delimited = h->status = h->complete = h->err = 0;
    h->fast = h->fast_keep_alive = 0;
    h->hdrs.len = h->body.len = 0;
}

/* ---- the fast path --------------------------------------------------------------- */

/* A header name's byte (RFC 9110 tchar) lower-cased, 0 for any other byte. */
static unsigned char name_byte(unsigned char c)
{
    static const unsigned char t[256] = {
        ['!'] = '!', ['#'] = '#', ['$'] = '$', ['%'] = '%', ['&'] = '&', ['\''] = '\'', ['*'] = '*',
        ['+'] = '+', ['-'] = '-', ['.'] = '.', ['^'] = '^', ['_'] = '_', ['`'] = '`', ['|'] = '|',
        ['~'] = '~',
        ['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4', ['5'] = '5', ['6'] = '6',
        ['7'] = '7', ['8'] = '8', ['9'] = '9',
        ['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd', ['e'] = 'e', ['f'] = 'f', ['g'] = 'g',
        ['h'] = 'h', ['i'] = 'i', ['j'] = 'j', ['k'] = 'k', ['l'] = 'l', ['m'] = 'm', ['n'] = 'n',
        ['o'] = 'o', ['p'] = 'p', ['q'] = 'q', ['r'] = 'r', ['s'] = 's', ['t'] = 't', ['u'] = 'u',
        ['v'] = 'v', ['w'] = 'w', ['x'] = 'x', ['y'] = 'y', ['z'] = 'z',
        ['A'] = 'a', ['B'] = 'b', ['C'] = 'c', ['D'] = 'd', ['E'] = 'e', ['F'] = 'f', ['G'] = 'g',
        ['H'] = 'h', ['I'] = 'i', ['J'] = 'j', ['K'] = 'k', ['L'] = 'l', ['M'] = 'm', ['N'] = 'n',
        ['O'] = 'o', ['P'] = 'p', ['Q'] = 'q', ['R'] = 'r', ['S'] = 's', ['T'] = 't', ['U'] = 'u',
        ['V'] = 'v', ['W'] = 'w', ['X'] = 'x', ['Y'] = 'y', ['Z'] = 'z',
    };
    return t[c];
}

/* s (n bytes) is lit (lower case) in any case. */
static int ci_is(const char *s, size_t n, const char *lit, size_t ln)
{
    if (n != ln)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c) != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}
#define CI_IS(s, n, lit) ci_is((s), (n), (lit), sizeof(lit) - 1)

/* The first byte of [p, end) that is not visible ASCII or a space (end if
 * none): 8 bytes at a time, where a byte below 0x20 or above 0x7e sets the
 * high bit of its lane. Borrows and carries can only set lanes above the
 * lowest such byte, so the lowest lane set is exact. One pass finds a
 * line's end ('\r') and checks the bytes before it (memchr and a separate
 * check were ~40% more). */
static const char *first_unprintable(const char *p, const char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    for (; end - p >= 8; p += 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t bad = (((x - ones * 0x20) & ~x) | ((x + ones * (127 - 0x7e)) | x)) & highs;
        if (bad)
            return p + (__builtin_ctzll(bad) >> 3);
    }
#endif
    for (; p < end; p++)
        if ((unsigned char)((unsigned char)*p - 0x20) >= 0x5f)
            return p;
    return end;
}

/* The common response, whole in d: "HTTP/1.1 SSS reason", plain header
 * lines, a Content-Length body, within the caps. Parsed here without
 * llhttp (whose callbacks cost ~3,700 instructions for a 200-byte answer);
 * 1 if done (h complete, *used set), 0 for anything else -- another
 * version, 1xx/204/304, chunked, no length, an odd byte or space, a cap
 * passed, or not all of it here yet -- which llhttp then parses from the
 * start, so its rules and errors stay the only ones. What is kept is what
 * llhttp's callbacks keep (spec/fuzz/fuzz_http.c compares the two: one
 * piece vs one byte at a time). */
static int fast_response(http_resp *h, const char *d, size_t n, size_t *used)
{
    const char *p = d, *end = d + n;
    if (h->is_head || n < 17 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        return 0;
    p += 9;
    if (p[0] < '1' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' || p[3] != ' ')
        return 0;
    int status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (status < 200 || status == 204 || status == 304)
        return 0;
    p += 4;
    /* the reason: visible bytes and spaces up to CRLF */
    const char *eol = first_unprintable(p, end);
    if (end - eol < 2 || eol[0] != '\r' || eol[1] != '\n')
        return 0;
    p = eol + 2;
    size_t nheaders = 0;
    long long length = -1;
    int keep_alive = 1;
    /* The kept block is smaller than the head (':' and CRLF become two
     * NULs), which must fit max_header_bytes: past lim, llhttp refuses it. */
    size_t room = n < h->max_header_bytes ? n : h->max_header_bytes;
    if (mw_buf_reserve(&h->hdrs, room) != 0)
        return 0;
    char *out = h->hdrs.p, *lim = h->hdrs.p + room;
    for (;;) {
        if (end - p < 2)
            goto no;
        if (p[0] == '\r' && p[1] == '\n') {
            p += 2;
            break;
        }
        const char *name = p;
        char *lname = out;
        /* one bound for both the input and the kept block */
        size_t max = (size_t)(end - p) < (size_t)(lim - out) ? (size_t)(end - p) : (size_t)(lim - out);
        size_t nl = 0;
        unsigned char c;
        while (nl < max && (c = name_byte((unsigned char)name[nl])) != 0)
            lname[nl++] = (char)c;
        p += nl;
        out += nl;
        if (nl == 0 || p >= end || *p != ':' || out >= lim)
            goto no;
        *out++ = '\0';
        p++;
        if (p < end && *p == ' ')
            p++;
        const char *val = p;
        eol = first_unprintable(p, end); /* the value: visible bytes and spaces up to CRLF */
        if (end - eol < 2 || eol[0] != '\r' || eol[1] != '\n')
            goto no;
        size_t vl = (size_t)(eol - val);
        if (vl == 0 || val[0] == ' ' || val[vl - 1] == ' ' || (size_t)(lim - out) < vl + 1)
            goto no;
        p = eol + 2;
        if (++nheaders > h->max_headers)
            goto no;
        /* the headers llhttp acts on: a length is used, a close noted,
         * anything else left to llhttp */
        switch (nl) {
        case 14:
            if (memcmp(lname, "content-length", 14) == 0) {
                if (length >= 0 || vl > 18)
                    goto no;
                length = 0;
                for (size_t i = 0; i < vl; i++) {
                    if (val[i] < '0' || val[i] > '9')
                        goto no;
                    length = length * 10 + (val[i] - '0');
                }
            }
            break;
        case 10:
            if (memcmp(lname, "connection", 10) == 0) {
                if (CI_IS(val, vl, "close"))
                    keep_alive = 0;
                else if (!CI_IS(val, vl, "keep-alive"))
                    goto no;
            }
            break;
        case 17:
            if (memcmp(lname, "transfer-encoding", 17) == 0)
                goto no;
            break;
        case 16:
            if (memcmp(lname, "proxy-connection", 16) == 0)
                goto no;
            break;
        case 7:
            if (memcmp(lname, "upgrade", 7) == 0)
                goto no;
            break;
        }
        memcpy(out, val, vl);
        out += vl;
        *out++ = '\0';
    }
    h->hdrs.len = (size_t)(out - h->hdrs.p);
    size_t head = (size_t)(p - d);
    if (length < 0 || head > h->max_header_bytes || (size_t)length > h->max_body ||
        (size_t)length > (size_t)(end - p))
        goto no;
    if (mw_buf_add(&h->body, p, (size_t)length) != 0)
        goto no;
    h->status = status;
    h->nheaders = nheaders;
    h->head_bytes = head;
    h->head_done = h->complete = 1;
    h->fast_keep_alive = keep_alive;
    h->fast = 1;
    *used = head + (size_t)length;
    return 1;
no:
    h->hdrs.len = 0;
    return 0;
}

int http_resp_feed(http_resp *h, const char *d, size_t n, size_t *used)
{
    llhttp_errno_t e;
    if (h->head_bytes == 0 && fast_response(h, d, n, used))
        return HTTP_RESP_OK;
    if (!h->parser_ready) {
        pthread_once(&settings_once, settings_init);
        llhttp_init(&h->parser, HTTP_RESPONSE, &settings);
        h->parser.data = h;
        h->parser_ready = 1;
    }
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
    if (h->parser_ready && h->head_done && h->close_delimited && !h->complete) {
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
    if (!h->parser_ready)
        return "no response parsed";
    return llhttp_get_error_reason(&h->parser);
}

int http_resp_keep_alive(const http_resp *h)
{
    if (h->fast)
        return h->fast_keep_alive;
    if (!h->parser_ready)
        return 0;
    return llhttp_should_keep_alive(&h->parser);
}
