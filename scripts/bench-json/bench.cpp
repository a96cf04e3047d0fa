// bench-json: parse cost per record of moonwait's JSON parser (src/json)
// against simdjson (On Demand and DOM) and lua-cjson, on the same in-memory
// array of lines. See README.md beside this file.
//
//   bench-json [--small N] [--large N] [--escaped N] [--reps R]
//              [--inputs small,large,escaped] [--only ours,od,od_unesc,dom,cjson,codec]
//              [--callgrind] [--strict] [--dump small|large|escaped]
//
// Variants (each loops over every line; parsers are reused across lines):
//   ours      json_parse(tape, line, len, JSON_TOP_OBJECT): the whole tape
//   od        simdjson On Demand: iterate every field and value; a span for
//             every scalar (raw_json_token), the key's raw position, numbers
//             through get_number (int64 / uint64 / double); nothing may
//             follow the object
//   od_unesc  the same, also unescaping every key and string value
//             (unescaped_key, get_string): the only way On Demand checks
//             escapes such as \uD800
//   dom       simdjson dom::parser::parse(line, len, false) (padding given)
//   cjson     lua-cjson: cjson.decode(lines[i]) from a LuaJIT loop
//   codec     moonwait's codec: codec_parse + codec_build (Lua tables) +
//             lua_pop + codec_doc_free, in the same LuaJIT state
#include <simdjson.h>

#include <algorithm>
#include <cstdarg>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <valgrind/callgrind.h>

#include "ours.h"

#define STR_(x) #x
#define STR(x) STR_(x)

namespace od = simdjson::ondemand;
using simdjson::error_code;

// ---- inputs -------------------------------------------------------------------

struct input {
    std::string name;
    std::string arena;        // the lines, each ending in '\n', then padding
    std::vector<bline> lines;
    const char *base() const { return arena.data(); }
    size_t capacity_after(size_t off) const { return arena.size() - off; }
};

static void appendf(std::string &s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(std::string &s, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s.append(buf, (size_t)n);
}

// (1) scripts/bench's passthrough records, byte for byte (same format string
// and arguments as its string.format; %.3f and %d are C's in both).
static void gen_small(std::string &s, size_t i)
{
    appendf(s,
            "{\"id\":%zu,\"user\":\"user-%06zu\",\"event\":\"click\",\"ts\":%" PRIu64 ",\"page\":\"/products/item-%05zu\","
            "\"score\":%.3f,\"tags\":[\"a\",\"b\"],\"country\":\"NZ\",\"ok\":true}",
            i, i % 100000, (uint64_t)1700000000000ULL + i, i % 50000, (double)(i % 1000) / 7);
}

// A small deterministic generator (xorshift64*), so every run has the same inputs.
struct rng {
    uint64_t x;
    uint64_t next()
    {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        return x * 0x2545F4914F6CDD1DULL;
    }
    uint64_t below(uint64_t n) { return next() % n; }
    double unit() { return (double)(next() >> 11) / 9007199254740992.0; }
};

static const char *const words[] = { "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
                                     "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa" };
static const char *word(rng &r) { return words[r.below(16)]; }

// (2) larger records: about 2 KB, 23-30 top-level fields, nested objects,
// arrays of scalars and of objects, a 64-bit id above INT64_MAX now and then.
static void gen_large(std::string &s, size_t i, rng &r)
{
    appendf(s, "{\"id\":%zu,\"trace_id\":%" PRIu64 ",\"ts\":%" PRIu64 ",\"event\":\"%s.%s\"", i,
            r.next() >> (r.below(2) ? 0 : 11), (uint64_t)1700000000000ULL + i * 37, word(r), word(r));
    appendf(s,
            ",\"user\":{\"id\":%" PRIu64 ",\"name\":\"%s %s\",\"email\":\"%s.%s@example.com\",\"roles\":[\"%s\",\"%s\"],"
            "\"created\":\"2023-%02d-%02dT%02d:%02d:%02dZ\",\"prefs\":{\"lang\":\"en-NZ\",\"tz\":\"Pacific/Auckland\","
            "\"notifications\":%s,\"theme\":\"%s\"}}",
            r.below(10000000), word(r), word(r), word(r), word(r), word(r), word(r), (int)r.below(12) + 1,
            (int)r.below(28) + 1, (int)r.below(24), (int)r.below(60), (int)r.below(60), r.below(2) ? "true" : "false",
            word(r));
    appendf(s, ",\"session\":\"%016" PRIx64 "%016" PRIx64 "\",\"ip\":\"10.%d.%d.%d\"", r.next(), r.next(),
            (int)r.below(256), (int)r.below(256), (int)r.below(256));
    appendf(s,
            ",\"ua\":\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.0.%d.%d "
            "Safari/537.36\"",
            (int)r.below(40) + 90, (int)r.below(9000), (int)r.below(200));
    appendf(s,
            ",\"geo\":{\"country\":\"NZ\",\"region\":\"%s\",\"city\":\"%s\",\"lat\":%.4f,\"lon\":%.4f,\"accuracy_m\":%d}",
            word(r), word(r), -34 - r.unit() * 12, 166 + r.unit() * 12, (int)r.below(5000));
    s += ",\"items\":[";
    int items = 4 + (int)r.below(5);
    for (int k = 0; k < items; k++)
        appendf(s, "%s{\"sku\":\"SKU-%06d\",\"name\":\"%s %s\",\"qty\":%d,\"price\":%.2f,\"tags\":[\"%s\",\"%s\"]}",
                k ? "," : "", (int)r.below(1000000), word(r), word(r), (int)r.below(9) + 1, r.unit() * 200,
                word(r), word(r));
    s += "]";
    appendf(s, ",\"amount\":%.2f,\"currency\":\"NZD\",\"status\":%d,\"method\":\"%s\",\"path\":\"/api/v2/%s/%s/%d\"",
            r.unit() * 1000, r.below(10) ? 200 : 503, r.below(3) ? "GET" : "POST", word(r), word(r),
            (int)r.below(100000));
    appendf(s,
            ",\"metrics\":{\"latency_ms\":%.3f,\"bytes_in\":%d,\"bytes_out\":%d,\"retries\":%d,\"cache\":{\"hit\":%s,"
            "\"age_s\":%d}}",
            r.unit() * 250, (int)r.below(100000), (int)r.below(1000000), (int)r.below(3),
            r.below(2) ? "true" : "false", (int)r.below(3600));
    s += ",\"labels\":{";
    int labels = 6 + (int)r.below(7);
    for (int k = 0; k < labels; k++)
        appendf(s, "%s\"%s_%d\":\"%s-%s\"", k ? "," : "", word(r), k, word(r), word(r));
    s += "},\"history\":[";
    int hist = 15 + (int)r.below(16);
    for (int k = 0; k < hist; k++)
        appendf(s, "%s%d", k ? "," : "", (int)r.below(100000) - 50000);
    s += "]";
    appendf(s, ",\"ok\":%s,\"parent\":null,\"score\":%.6e,\"sampled\":%s,\"version\":\"%d.%d.%d\"",
            r.below(10) ? "true" : "false", r.unit() * 1e-3, r.below(2) ? "true" : "false", (int)r.below(5),
            (int)r.below(20), (int)r.below(100));
    // 23 fields so far; 0-7 optional ones: 23-30 top-level fields in all.
    int extra = (int)r.below(8);
    for (int k = 0; k < extra; k++) {
        switch (k) {
        case 0: appendf(s, ",\"referrer\":\"https://www.example.org/%s/%s?q=%s\"", word(r), word(r), word(r)); break;
        case 1: appendf(s, ",\"campaign\":\"%s-%s-%d\"", word(r), word(r), (int)r.below(100)); break;
        case 2: appendf(s, ",\"ab_bucket\":%d", (int)r.below(16)); break;
        case 3: appendf(s, ",\"region\":\"ap-southeast-%d\"", (int)r.below(4) + 1); break;
        case 4: appendf(s, ",\"retry_after\":null"); break;
        case 5: appendf(s, ",\"weights\":[%.3f,%.3f,%.3f,%.3f]", r.unit(), r.unit(), r.unit(), r.unit()); break;
        case 6: appendf(s, ",\"experiment\":{\"name\":\"%s\",\"arm\":%d,\"enrolled\":true}", word(r), (int)r.below(3)); break;
        default: appendf(s, ",\"notes\":\"%s %s %s %s %s %s\"", word(r), word(r), word(r), word(r), word(r), word(r)); break;
        }
    }
    s += "}";
}

// (3) escaped strings and non-ASCII text: every string value has backslash
// escapes (\" \\ \/ \n \t \uXXXX, surrogate pairs) or raw UTF-8 (2-, 3- and
// 4-byte sequences), some keys too.
static const char *const esc_pieces[] = {
    "He said \\\"hello\\\"", "line one\\nline two", "tab\\tseparated\\tvalues", "C:\\\\Users\\\\kim",
    "caf\\u00e9 cr\\u00e8me br\\u00fbl\\u00e9e", "\\u4e2d\\u6587\\u6587\\u672c", "smile \\ud83d\\ude00 ok",
    "a\\/b\\/c", "bell\\u0007 and nul\\u0000 escaped", "na\xc3\xafve caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88",
    "\xce\xa9\xce\xbc\xce\xad\xce\xb3\xce\xb1 \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", "emoji \xf0\x9f\x98\x80\xf0\x9f\x8e\x89 party",
    "plain ascii words here", "mixed \\\"q\\\" and \xc3\xbc\xc3\xb6\xc3\xa4 \\u00df",
};
static void esc_string(std::string &s, rng &r, int pieces)
{
    s += '"';
    for (int k = 0; k < pieces; k++) {
        if (k)
            s += ' ';
        s += esc_pieces[r.below(sizeof esc_pieces / sizeof *esc_pieces)];
    }
    s += '"';
}
static void gen_escaped(std::string &s, size_t i, rng &r)
{
    appendf(s, "{\"id\":%zu,\"msg\":", i);
    esc_string(s, r, 3 + (int)r.below(4));
    s += ",\"title\":";
    esc_string(s, r, 2);
    s += ",\"k\\u00e9y\":";
    esc_string(s, r, 1);
    s += ",\"\xe6\x97\xa5\xe6\x9c\xac\":";
    esc_string(s, r, 2);
    s += ",\"tags\":[";
    for (int k = 0; k < 3; k++) {
        if (k)
            s += ',';
        esc_string(s, r, 1);
    }
    s += "],\"author\":{\"name\":";
    esc_string(s, r, 1);
    appendf(s, ",\"karma\":%d},\"path\":\"\\/home\\/%s\\/docs\",\"ok\":true}", (int)r.below(10000), word(r));
}

static input make_input(const std::string &name, size_t n)
{
    input in;
    in.name = name;
    in.lines.reserve(n);
    rng r{ 0x9E3779B97F4A7C15ULL ^ (name == "large" ? 1 : 2) };
    std::string line;
    for (size_t i = 1; i <= n; i++) {
        line.clear();
        if (name == "small")
            gen_small(line, i);
        else if (name == "large")
            gen_large(line, i, r);
        else
            gen_escaped(line, i, r);
        in.lines.push_back(bline{ in.arena.size(), (uint32_t)line.size() });
        in.arena += line;
        in.arena += '\n';
    }
    // The padding simdjson requires after the last line (its content does not
    // matter; for every other line the lines after it are its padding).
    in.arena.append(simdjson::SIMDJSON_PADDING, ' ');
    return in;
}

// ---- simdjson On Demand walk --------------------------------------------------

// Sinks: what a walk does with each value. `light` is the timed one (a
// running sum, so nothing is optimised away); `fp` the fingerprint.
struct light_sink {
    uint64_t c = 0;
    void key(size_t off) { c += off; }
    void i(uint64_t v) { c += v; }
    void d(double v) { c += (uint64_t)(int64_t)v; }
    void scalar(int t) { c += (unsigned)t; }
    void container(int t) { c += (unsigned)t; }
    void span(size_t off, size_t len) { c += off ^ len; }
    void str(std::string_view v) { c += v.size(); }
};
struct fp_sink {
    fingerprint f{};
    void key(size_t off) { fp_key(&f, off); }
    void i(uint64_t v) { fp_int(&f, v); }
    void d(double v) { fp_dbl(&f, v); }
    void scalar(int t) { fp_scalar(&f, t); }
    void container(int t) { fp_container(&f, t); }
    void span(size_t off, size_t len) { fp_span(&f, off, len); }
    void str(std::string_view) {}
};

static inline size_t trimmed(std::string_view tok)
{
    size_t n = tok.size();
    while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t' || tok[n - 1] == '\n' || tok[n - 1] == '\r'))
        n--;
    return n;
}

template <bool UNESC, class S> static error_code walk_value(od::value &v, S &s, const char *base);

template <bool UNESC, class S> static error_code walk_object(od::object &o, S &s, const char *base)
{
    s.container('o');
    for (auto fr : o) {
        od::field f;
        SIMDJSON_TRY(std::move(fr).get(f));
        // key() is the raw key (a pointer just after its opening quote);
        // unescaped_key() consumes it, so take the position first.
        s.key((size_t)(f.key().raw() - 1 - base));
        if (UNESC) {
            std::string_view k;
            SIMDJSON_TRY(f.unescaped_key().get(k));
            s.str(k);
        }
        SIMDJSON_TRY(walk_value<UNESC>(f.value(), s, base));
    }
    return simdjson::SUCCESS;
}

template <bool UNESC, class S> static error_code walk_value(od::value &v, S &s, const char *base)
{
    od::json_type t;
    SIMDJSON_TRY(v.type().get(t));
    switch (t) {
    case od::json_type::object: {
        od::object o;
        SIMDJSON_TRY(v.get_object().get(o));
        return walk_object<UNESC>(o, s, base);
    }
    case od::json_type::array: {
        od::array a;
        SIMDJSON_TRY(v.get_array().get(a));
        s.container('a');
        for (auto er : a) {
            od::value e;
            SIMDJSON_TRY(std::move(er).get(e));
            SIMDJSON_TRY(walk_value<UNESC>(e, s, base));
        }
        return simdjson::SUCCESS;
    }
    case od::json_type::number: {
        std::string_view tok = v.raw_json_token();
        od::number num;
        SIMDJSON_TRY(v.get_number().get(num));
        switch (num.get_number_type()) {
        case od::number_type::signed_integer: s.i((uint64_t)num.get_int64()); break;
        case od::number_type::unsigned_integer: s.i(num.get_uint64()); break;
        default: s.d(num.get_double()); break;
        }
        s.span((size_t)(tok.data() - base), trimmed(tok));
        return simdjson::SUCCESS;
    }
    case od::json_type::string: {
        std::string_view tok = v.raw_json_token();
        if (UNESC) {
            std::string_view str;
            SIMDJSON_TRY(v.get_string().get(str));
            s.str(str);
        }
        s.scalar('s');
        s.span((size_t)(tok.data() - base), trimmed(tok));
        return simdjson::SUCCESS;
    }
    case od::json_type::boolean: {
        std::string_view tok = v.raw_json_token();
        bool b;
        SIMDJSON_TRY(v.get_bool().get(b));
        s.scalar('b');
        s.span((size_t)(tok.data() - base), trimmed(tok));
        return simdjson::SUCCESS;
    }
    case od::json_type::null: {
        std::string_view tok = v.raw_json_token();
        bool isnull;
        SIMDJSON_TRY(v.is_null().get(isnull));
        if (!isnull)
            return simdjson::N_ATOM_ERROR;
        s.scalar('n');
        s.span((size_t)(tok.data() - base), trimmed(tok));
        return simdjson::SUCCESS;
    }
    }
    return simdjson::TAPE_ERROR;
}

// One record through On Demand: the top value must be an object, every
// field and value is visited, and nothing may follow it.
template <bool UNESC, class S>
static error_code od_record(od::parser &p, const char *text, size_t len, size_t capacity, S &s)
{
    od::document doc;
    SIMDJSON_TRY(p.iterate(simdjson::padded_string_view(text, len, capacity)).get(doc));
    od::object o;
    SIMDJSON_TRY(doc.get_object().get(o));
    SIMDJSON_TRY(walk_object<UNESC>(o, s, text));
    // simdjson 3.0.1's document has no at_end(): past the last token,
    // current_location() says OUT_OF_BOUNDS; anything else is more text.
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS)
        return simdjson::TRAILING_CONTENT;
    return simdjson::SUCCESS;
}

// ---- simdjson DOM -------------------------------------------------------------

static void walk_dom(simdjson::dom::element e, fp_sink &s)
{
    using simdjson::dom::element_type;
    switch (e.type()) {
    case element_type::OBJECT:
        s.container('o');
        for (auto kv : simdjson::dom::object(e)) {
            fp_key(&s.f, 0);
            walk_dom(kv.value, s);
        }
        break;
    case element_type::ARRAY:
        s.container('a');
        for (auto x : simdjson::dom::array(e))
            walk_dom(x, s);
        break;
    case element_type::INT64: s.i((uint64_t)int64_t(e)); break;
    case element_type::UINT64: s.i(uint64_t(e)); break;
    case element_type::DOUBLE: s.d(double(e)); break;
    case element_type::STRING: s.scalar('s'); break;
    case element_type::BOOL: s.scalar('b'); break;
    case element_type::NULL_VALUE: s.scalar('n'); break;
    }
}

static error_code dom_record(simdjson::dom::parser &p, const char *text, size_t len, simdjson::dom::element &e)
{
    SIMDJSON_TRY(p.parse(text, len, false).get(e));
    if (e.type() != simdjson::dom::element_type::OBJECT)
        return simdjson::INCORRECT_TYPE;
    return simdjson::SUCCESS;
}

// ---- timing -------------------------------------------------------------------

static double now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct ctx {
    const input *in;
    od::parser odp;
    simdjson::dom::parser domp;
    lua_bench *lb = nullptr;
    uint64_t sink = 0;
};

static int run_variant(ctx &c, const std::string &v)
{
    const input &in = *c.in;
    const char *base = in.base();
    size_t n = in.lines.size();
    if (v == "ours")
        return ours_pass(base, in.lines.data(), n, &c.sink);
    if (v == "od" || v == "od_unesc") {
        light_sink s;
        for (size_t i = 0; i < n; i++) {
            const bline &l = in.lines[i];
            error_code e = v == "od" ? od_record<false>(c.odp, base + l.off, l.len, in.capacity_after(l.off), s)
                                     : od_record<true>(c.odp, base + l.off, l.len, in.capacity_after(l.off), s);
            if (e) {
                fprintf(stderr, "%s: line %zu: %s\n", v.c_str(), i + 1, simdjson::error_message(e));
                return -1;
            }
        }
        c.sink += s.c;
        return 0;
    }
    if (v == "dom") {
        simdjson::dom::element e;
        uint64_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const bline &l = in.lines[i];
            error_code err = dom_record(c.domp, base + l.off, l.len, e);
            if (err) {
                fprintf(stderr, "dom: line %zu: %s\n", i + 1, simdjson::error_message(err));
                return -1;
            }
            k += (uint64_t)e.type();
        }
        c.sink += k;
        return 0;
    }
    if (v == "cjson")
        return lua_bench_cjson(c.lb);
    if (v == "codec")
        return lua_bench_codec(c.lb, base, in.lines.data(), n);
    fprintf(stderr, "unknown variant %s\n", v.c_str());
    return -1;
}

// Every record through ours, od, od_unesc and dom: same values, same key
// order, same spans (where the parser exposes them).
static bool verify(ctx &c)
{
    const input &in = *c.in;
    const char *base = in.base();
    size_t bad = 0;
    for (size_t i = 0; i < in.lines.size() && bad < 5; i++) {
        const bline &l = in.lines[i];
        const char *t = base + l.off;
        fingerprint a;
        fp_sink b, u, d;
        simdjson::dom::element e;
        if (ours_fingerprint(t, l.len, &a) || od_record<false>(c.odp, t, l.len, in.capacity_after(l.off), b) ||
            od_record<true>(c.odp, t, l.len, in.capacity_after(l.off), u) || dom_record(c.domp, t, l.len, e)) {
            fprintf(stderr, "verify %s: line %zu: a parser failed\n", in.name.c_str(), i + 1);
            bad++;
            continue;
        }
        walk_dom(e, d);
        bool ok = a.seq == b.f.seq && a.spans == b.f.spans && a.values == b.f.values && a.keys == b.f.keys &&
                  a.seq == u.f.seq && a.spans == u.f.spans && a.seq == d.f.seq && a.values == d.f.values &&
                  a.keys == d.f.keys && a.ints == d.f.ints && a.doubles == d.f.doubles;
        if (!ok) {
            fprintf(stderr, "verify %s: line %zu differs: ours v=%" PRIu64 " k=%" PRIu64 " od v=%" PRIu64 " k=%" PRIu64
                    " dom v=%" PRIu64 " k=%" PRIu64 " seq %s/%s/%s spans %s/%s\n",
                    in.name.c_str(), i + 1, a.values, a.keys, b.f.values, b.f.keys, d.f.values, d.f.keys,
                    "ours", a.seq == b.f.seq ? "od=" : "od!", a.seq == d.f.seq ? "dom=" : "dom!",
                    a.spans == b.f.spans ? "od=" : "od!", a.spans == u.f.spans ? "od_unesc=" : "od_unesc!");
            bad++;
        }
    }
    return bad == 0;
}

static std::vector<std::string> split(const std::string &s)
{
    std::vector<std::string> out;
    size_t i = 0;
    while (i <= s.size()) {
        size_t j = s.find(',', i);
        if (j == std::string::npos)
            j = s.size();
        if (j > i)
            out.push_back(s.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

static double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int strict_main();

int main(int argc, char **argv)
{
    size_t n_small = 1000000, n_large = 100000, n_esc = 500000;
    int reps = 5;
    bool cg = false;
    std::string inputs = "small,large,escaped", only = "ours,od,od_unesc,dom,cjson,codec", dump;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto arg = [&]() -> std::string {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s needs a value\n", a.c_str());
                exit(2);
            }
            return argv[++i];
        };
        if (a == "--small") n_small = strtoull(arg().c_str(), nullptr, 10);
        else if (a == "--large") n_large = strtoull(arg().c_str(), nullptr, 10);
        else if (a == "--escaped") n_esc = strtoull(arg().c_str(), nullptr, 10);
        else if (a == "--reps") reps = atoi(arg().c_str());
        else if (a == "--inputs") inputs = arg();
        else if (a == "--only") only = arg();
        else if (a == "--callgrind") cg = true;
        else if (a == "--dump") dump = arg();
        else if (a == "--strict") return strict_main();
        else {
            fprintf(stderr, "usage: %s [--small N] [--large N] [--escaped N] [--reps R] [--inputs LIST] [--only LIST] "
                    "[--callgrind] [--strict] [--dump NAME]\n", argv[0]);
            return 2;
        }
    }
    if (!dump.empty()) {
        input in = make_input(dump, dump == "small" ? n_small : dump == "large" ? n_large : n_esc);
        fwrite(in.arena.data(), 1, in.arena.size() - simdjson::SIMDJSON_PADDING, stdout);
        return 0;
    }
    if (cg)
        reps = 1;
    std::vector<std::string> variants = split(only);
    bool want_lua = std::find(variants.begin(), variants.end(), "cjson") != variants.end() ||
                    std::find(variants.begin(), variants.end(), "codec") != variants.end();

    printf("# bench-json: simdjson %s (stage 1 / DOM kernel: %s; On Demand compiled for: %s), reps=%d%s\n",
           STR(SIMDJSON_VERSION), simdjson::get_active_implementation()->name().c_str(),
           STR(SIMDJSON_BUILTIN_IMPLEMENTATION), reps, cg ? " (callgrind)" : "");
    printf("%-8s %-9s %10s %12s %12s %12s %8s %10s\n", "input", "variant", "records", "median_ns", "min_ns", "cpu_ns",
           "ratio", "cpu_ratio");
    fflush(stdout);

    for (const std::string &name : split(inputs)) {
        size_t n = name == "small" ? n_small : name == "large" ? n_large : n_esc;
        input in = make_input(name, n);
        ctx c;
        c.in = &in;
        size_t bytes = in.arena.size() - simdjson::SIMDJSON_PADDING - n;
        printf("# %s: %zu records, %.0f bytes/record on average\n", name.c_str(), n, (double)bytes / n);
        if (!cg && !verify(c)) {
            fprintf(stderr, "%s: the parsers disagree; stopping\n", name.c_str());
            return 1;
        }
        if (want_lua && !(c.lb = lua_bench_new(in.base(), in.lines.data(), n)))
            return 1;
        // Warm-up: one untimed pass of each (allocates tapes and parser
        // buffers, faults in the arena, lets LuaJIT compile its loop).
        for (auto &v : variants) {
            if (c.lb)
                lua_bench_gc(c.lb);
            if (run_variant(c, v))
                return 1;
        }
        std::vector<std::vector<double>> wall(variants.size()), cpu(variants.size());
        for (int r = 0; r < reps; r++) {
            // Rotate the order each repetition, so drift on this noisy
            // machine does not always land on the same variant.
            for (size_t k = 0; k < variants.size(); k++) {
                size_t vi = (k + (size_t)r) % variants.size();
                if (c.lb)
                    lua_bench_gc(c.lb);
                double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
                if (cg) {
                    CALLGRIND_ZERO_STATS;
                    CALLGRIND_START_INSTRUMENTATION;
                }
                int rc = run_variant(c, variants[vi]);
                if (cg) {
                    CALLGRIND_STOP_INSTRUMENTATION;
                    std::string tag = name + "/" + variants[vi];
                    CALLGRIND_DUMP_STATS_AT(tag.c_str());
                }
                double t1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
                if (rc)
                    return 1;
                wall[vi].push_back((t1 - t0) * 1e9 / n);
                cpu[vi].push_back((c1 - c0) * 1e9 / n);
            }
        }
        // ratio: median wall time over ours'; cpu_ratio: the same with the
        // median CPU time (less moved by other processes taking the core).
        double ours_med = 0, ours_cpu = 0;
        for (size_t k = 0; k < variants.size(); k++)
            if (variants[k] == "ours") {
                ours_med = median(wall[k]);
                ours_cpu = median(cpu[k]);
            }
        for (size_t k = 0; k < variants.size(); k++) {
            double med = median(wall[k]), cmed = median(cpu[k]);
            char ratio[32] = "-", cratio[32] = "-";
            if (ours_med > 0) {
                snprintf(ratio, sizeof ratio, "%.2f", med / ours_med);
                snprintf(cratio, sizeof cratio, "%.2f", cmed / ours_cpu);
            }
            printf("%-8s %-9s %10zu %12.1f %12.1f %12.1f %8s %10s\n", name.c_str(), variants[k].c_str(), n, med,
                   *std::min_element(wall[k].begin(), wall[k].end()), cmed, ratio, cratio);
        }
        fflush(stdout);
        lua_bench_free(c.lb);
        c.lb = nullptr;
        printf("# %s: checksum %" PRIu64 "\n", name.c_str(), c.sink);
    }
    return 0;
}

// ---- strictness ---------------------------------------------------------------

static const char *error_code_name(error_code e)
{
    switch (e) {
    case simdjson::SUCCESS: return "SUCCESS";
    case simdjson::CAPACITY: return "CAPACITY";
    case simdjson::MEMALLOC: return "MEMALLOC";
    case simdjson::TAPE_ERROR: return "TAPE_ERROR";
    case simdjson::DEPTH_ERROR: return "DEPTH_ERROR";
    case simdjson::STRING_ERROR: return "STRING_ERROR";
    case simdjson::T_ATOM_ERROR: return "T_ATOM_ERROR";
    case simdjson::F_ATOM_ERROR: return "F_ATOM_ERROR";
    case simdjson::N_ATOM_ERROR: return "N_ATOM_ERROR";
    case simdjson::NUMBER_ERROR: return "NUMBER_ERROR";
    case simdjson::UTF8_ERROR: return "UTF8_ERROR";
    case simdjson::UNINITIALIZED: return "UNINITIALIZED";
    case simdjson::EMPTY: return "EMPTY";
    case simdjson::UNESCAPED_CHARS: return "UNESCAPED_CHARS";
    case simdjson::UNCLOSED_STRING: return "UNCLOSED_STRING";
    case simdjson::UNSUPPORTED_ARCHITECTURE: return "UNSUPPORTED_ARCHITECTURE";
    case simdjson::INCORRECT_TYPE: return "INCORRECT_TYPE";
    case simdjson::NUMBER_OUT_OF_RANGE: return "NUMBER_OUT_OF_RANGE";
    case simdjson::INDEX_OUT_OF_BOUNDS: return "INDEX_OUT_OF_BOUNDS";
    case simdjson::NO_SUCH_FIELD: return "NO_SUCH_FIELD";
    case simdjson::IO_ERROR: return "IO_ERROR";
    case simdjson::INVALID_JSON_POINTER: return "INVALID_JSON_POINTER";
    case simdjson::INVALID_URI_FRAGMENT: return "INVALID_URI_FRAGMENT";
    case simdjson::UNEXPECTED_ERROR: return "UNEXPECTED_ERROR";
    case simdjson::PARSER_IN_USE: return "PARSER_IN_USE";
    case simdjson::OUT_OF_ORDER_ITERATION: return "OUT_OF_ORDER_ITERATION";
    case simdjson::INSUFFICIENT_PADDING: return "INSUFFICIENT_PADDING";
    case simdjson::INCOMPLETE_ARRAY_OR_OBJECT: return "INCOMPLETE_ARRAY_OR_OBJECT";
    case simdjson::SCALAR_DOCUMENT_AS_VALUE: return "SCALAR_DOCUMENT_AS_VALUE";
    case simdjson::OUT_OF_BOUNDS: return "OUT_OF_BOUNDS";
    case simdjson::TRAILING_CONTENT: return "TRAILING_CONTENT";
    default: return simdjson::error_message(e);
    }
}

struct strict_case {
    const char *what;
    std::string text;
};

static std::string od_describe(od::parser &p, const std::string &buf, size_t len)
{
    od::document doc;
    auto e = p.iterate(simdjson::padded_string_view(buf.data(), len, buf.size())).get(doc);
    if (e)
        return simdjson::error_message(e);
    od::value v;
    if ((e = doc["a"].get(v)))
        return simdjson::error_message(e);
    od::json_type t;
    if ((e = v.type().get(t)))
        return simdjson::error_message(e);
    char out[160];
    if (t == od::json_type::number) {
        od::number num;
        if ((e = v.get_number().get(num)))
            return simdjson::error_message(e);
        switch (num.get_number_type()) {
        case od::number_type::signed_integer: snprintf(out, sizeof out, "int64 %" PRId64, num.get_int64()); break;
        case od::number_type::unsigned_integer: snprintf(out, sizeof out, "uint64 %" PRIu64, num.get_uint64()); break;
        default: snprintf(out, sizeof out, "double %.17g", num.get_double()); break;
        }
        return out;
    }
    if (t == od::json_type::string) {
        std::string_view raw = v.raw_json_token();
        std::string_view str;
        if ((e = v.get_string().get(str))) {
            snprintf(out, sizeof out, "raw %zu bytes; get_string: %s", trimmed(raw), simdjson::error_message(e));
            return out;
        }
        snprintf(out, sizeof out, "string of %zu bytes", str.size());
        return out;
    }
    return "other";
}

static std::string dom_describe(simdjson::dom::element root)
{
    simdjson::dom::element v;
    if (root["a"].get(v))
        return "no a";
    char out[160];
    switch (v.type()) {
    case simdjson::dom::element_type::INT64: snprintf(out, sizeof out, "int64 %" PRId64, int64_t(v)); break;
    case simdjson::dom::element_type::UINT64: snprintf(out, sizeof out, "uint64 %" PRIu64, uint64_t(v)); break;
    case simdjson::dom::element_type::DOUBLE: snprintf(out, sizeof out, "double %.17g", double(v)); break;
    case simdjson::dom::element_type::STRING: snprintf(out, sizeof out, "string of %zu bytes", v.get_string_length().value_unsafe()); break;
    default: snprintf(out, sizeof out, "other"); break;
    }
    return out;
}

int strict_main()
{
    using namespace std::string_literals;
    const strict_case cases[] = {
        { "leading zero", "{\"a\":01}" },
        { "leading zero, negative", "{\"a\":-01}" },
        { "NUL byte inside a string", "{\"a\":\"x\0y\"}"s },
        { "NUL byte after the value", "{\"a\":1}\0"s },
        { "lone high surrogate \\uD800", "{\"a\":\"\\uD800\"}" },
        { "lone low surrogate \\uDC00", "{\"a\":\"\\uDC00\"}" },
        { "high surrogate + \\u0041", "{\"a\":\"\\uD800\\u0041\"}" },
        { "surrogate pair \\uDBFF\\uDFFF (valid)", "{\"a\":\"\\uDBFF\\uDFFF\"}" },
        { "invalid UTF-8 byte 0xFF", "{\"a\":\"\xff\"}" },
        { "overlong UTF-8 C0 AF", "{\"a\":\"\xc0\xaf\"}" },
        { "UTF-8-encoded surrogate ED A0 80", "{\"a\":\"\xed\xa0\x80\"}" },
        { "UTF-8 above U+10FFFF F4 90 80 80", "{\"a\":\"\xf4\x90\x80\x80\"}" },
        { "truncated UTF-8 E2 82", "{\"a\":\"\xe2\x82\"}" },
        { "invalid UTF-8 in a key", "{\"\xff\":1}" },
        { "1e400 (beyond a double)", "{\"a\":1e400}" },
        { "-1e400", "{\"a\":-1e400}" },
        { "1e-400 (underflows to 0)", "{\"a\":1e-400}" },
        { "2^64 = 18446744073709551616", "{\"a\":18446744073709551616}" },
        { "-2^63-1 = -9223372036854775809", "{\"a\":-9223372036854775809}" },
        { "30-digit integer", "{\"a\":123456789012345678901234567890}" },
        { "2^53+1 = 9007199254740993", "{\"a\":9007199254740993}" },
        { "INT64_MIN", "{\"a\":-9223372036854775808}" },
        { "UINT64_MAX", "{\"a\":18446744073709551615}" },
        { "invalid escape \\q", "{\"a\":\"\\q\"}" },
        { "control character 0x01 in a string", "{\"a\":\"\x01\"}" },
        { "trailing comma", "{\"a\":1,}" },
        { "text after the object", "{\"a\":1} x" },
        { "two objects on one line", "{\"a\":1} {\"b\":2}" },
        { "byte-order mark", "\xef\xbb\xbf{\"a\":1}" },
        { "NaN", "{\"a\":NaN}" },
        { "hex number", "{\"a\":0x10}" },
        { "leading +", "{\"a\":+1}" },
        { "duplicate key", "{\"a\":1,\"a\":2}" },
        { "top level not an object", "[1]" },
    };
    od::parser odp;
    simdjson::dom::parser domp;
    bline none{ 0, 0 };
    lua_bench *lb = lua_bench_new("", &none, 0);
    printf("| input | ours (json_parse) | simdjson On Demand, spans | On Demand + unescape | simdjson DOM | lua-cjson |\n");
    printf("|---|---|---|---|---|---|\n");
    for (const strict_case &sc : cases) {
        std::string buf = sc.text;
        size_t len = buf.size();
        buf.append(simdjson::SIMDJSON_PADDING, ' ');
        char err[256], msg[256];
        std::string c1, c2, c3, c4, c5;
        if (ours_check(buf.data(), len, err, sizeof err) == 0) {
            ours_describe_a(buf.data(), len, msg, sizeof msg);
            c1 = "accepts ("s + msg + ")";
        } else {
            const char *m = strstr(err, ": ");
            c1 = "**rejects** ("s + (m ? m + 2 : err) + ")";
        }
        light_sink s;
        error_code e = od_record<false>(odp, buf.data(), len, buf.size(), s);
        c2 = e ? "**rejects** ("s + error_code_name(e) + ")" : "accepts (" + od_describe(odp, buf, len) + ")";
        e = od_record<true>(odp, buf.data(), len, buf.size(), s);
        c3 = e ? "**rejects** ("s + error_code_name(e) + ")" : "accepts";
        simdjson::dom::element root;
        e = dom_record(domp, buf.data(), len, root);
        c4 = e ? "**rejects** ("s + error_code_name(e) + ")" : "accepts (" + dom_describe(root) + ")";
        if (lua_bench_cjson_accepts(lb, buf.data(), len, msg, sizeof msg))
            c5 = "accepts ("s + msg + ")";
        else
            c5 = "**rejects**";
        printf("| %s | %s | %s | %s | %s | %s |\n", sc.what, c1.c_str(), c2.c_str(), c3.c_str(), c4.c_str(), c5.c_str());
    }
    lua_bench_free(lb);
    return 0;
}
