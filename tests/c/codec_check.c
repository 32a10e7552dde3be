/*
 * Randomised self-check of the pure-C codec (ampcore/codec.c), built without
 * Python and run under AddressSanitizer/UBSan by .ci/run:
 *
 *   cc -fsanitize=address,undefined -Iampcore tests/c/codec_check.c ampcore/codec.c
 *
 * 1. Scanning any byte string in one piece and in random chunks (kept the
 *    way the binding keeps them: the unfinished box's bytes in an amp_buf)
 *    gives the same events.
 * 2. Serialized random boxes scan back to the same pairs, in sorted order.
 *
 * With -DAMPCORE_LIBFUZZER the same chunked-vs-whole check is a libFuzzer
 * target instead of a main().
 */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 100000

typedef struct {
    amp_event kind;
    size_t len;
    unsigned long hash;
} event;

static unsigned long
fnv(const unsigned char *p, size_t n)
{
    unsigned long h = 1469598103934665603UL;
    size_t i;
    for (i = 0; i < n; i++) {
        h = (h ^ p[i]) * 1099511628211UL;
    }
    return h;
}

static size_t
scan_whole(const unsigned char *data, size_t len, event *out)
{
    amp_scanner s;
    amp_string str;
    size_t off = 0, n = 0;
    amp_event ev;
    amp_scanner_init(&s);
    while ((ev = amp_scan(&s, data, len, &off, &str)) != AMP_NEED_MORE) {
        out[n].kind = ev;
        out[n].len = str.len;
        out[n].hash = str.data ? fnv(str.data, str.len) : 0;
        n++;
        if (ev == AMP_KEY_TOO_LONG || n == MAX_EVENTS) {
            break;
        }
    }
    return n;
}

static unsigned long long rng_state = 88172645463325252ULL;

static unsigned long long
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Scan in chunks, keeping the unfinished box in an amp_buf as the binding
   does; returns the number of events or (size_t)-1 on allocation failure. */
static size_t
scan_chunked(const unsigned char *data, size_t len, size_t max_chunk,
             event *out)
{
    amp_scanner s;
    amp_buf pending;
    amp_string str;
    size_t n = 0, pos = 0, resume = 0;
    int stop = 0;
    amp_scanner_init(&s);
    amp_buf_init(&pending);
    while (pos < len && !stop) {
        size_t chunk = 1 + (size_t)(rng() % max_chunk), off, box_start = 0;
        amp_event ev;
        if (chunk > len - pos) {
            chunk = len - pos;
        }
        if (amp_buf_append(&pending, data + pos, chunk) < 0) {
            amp_buf_free(&pending);
            return (size_t)-1;
        }
        pos += chunk;
        off = resume;
        while ((ev = amp_scan(&s, pending.data, pending.len, &off, &str))
               != AMP_NEED_MORE) {
            out[n].kind = ev;
            out[n].len = str.len;
            out[n].hash = str.data ? fnv(str.data, str.len) : 0;
            n++;
            if (ev == AMP_BOX_END) {
                box_start = off;
            }
            if (ev == AMP_KEY_TOO_LONG || n == MAX_EVENTS) {
                stop = 1;
                break;
            }
        }
        resume = off - box_start;
        amp_buf_consume(&pending, box_start);
    }
    amp_buf_free(&pending);
    return n;
}

static event whole_events[MAX_EVENTS], chunk_events[MAX_EVENTS];

static int
check_chunking(const unsigned char *data, size_t len, size_t max_chunk)
{
    size_t a = scan_whole(data, len, whole_events);
    size_t b = scan_chunked(data, len, max_chunk, chunk_events);
    if (a != b || memcmp(whole_events, chunk_events, a * sizeof(event)) != 0) {
        fprintf(stderr, "chunked scan differs: %zu vs %zu events (len %zu)\n",
                a, b, len);
        return 1;
    }
    return 0;
}

#ifdef AMPCORE_LIBFUZZER
int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
    /* The chunk sizes come from the input too, so a crash reproduces. */
    rng_state = fnv(data, len) | 1;
    if (check_chunking(data, len, 1 + (len ? data[0] % 16 : 0))) {
        abort();
    }
    return 0;
}
#else

static size_t
random_box(unsigned char *store, amp_pair *pairs, size_t max_pairs)
{
    size_t n = (size_t)(rng() % (max_pairs + 1)), i, used = 0;
    for (i = 0; i < n; i++) {
        size_t klen = 1 + (size_t)(rng() % (rng() % 4 ? 8 : 255));
        size_t vlen = (size_t)(rng() % (rng() % 8 ? 40 : 65536));
        size_t j;
        pairs[i].key = store + used;
        pairs[i].key_len = klen;
        /* Unique keys: the index goes in front. */
        store[used] = (unsigned char)i;
        for (j = 1; j < klen; j++) {
            store[used + j] = (unsigned char)rng();
        }
        used += klen;
        pairs[i].value = store + used;
        pairs[i].value_len = vlen;
        for (j = 0; j < vlen; j++) {
            store[used + j] = (unsigned char)rng();
        }
        used += vlen;
        pairs[i].index = i;
    }
    return n;
}

int
main(void)
{
    static unsigned char store[40 * (255 + 65536)];
    static unsigned char garbage[4096];
    amp_pair pairs[40];
    int failures = 0, round;

    for (round = 0; round < 100; round++) {
        size_t n = random_box(store, pairs, 12), size, i, bad, off = 0;
        unsigned char *wire;
        amp_scanner s;
        amp_string str;
        amp_sort_pairs(pairs, n);
        for (i = 1; i < n; i++) {
            size_t m = pairs[i - 1].key_len < pairs[i].key_len
                           ? pairs[i - 1].key_len : pairs[i].key_len;
            int c = memcmp(pairs[i - 1].key, pairs[i].key, m);
            if (c > 0 || (c == 0 && pairs[i - 1].key_len > pairs[i].key_len)) {
                fprintf(stderr, "pairs not sorted\n");
                failures++;
            }
        }
        if (amp_check_pairs(pairs, n, &bad) != AMP_PAIRS_OK) {
            fprintf(stderr, "valid pairs refused\n");
            failures++;
            continue;
        }
        size = amp_box_size(pairs, n);
        wire = malloc(size);
        if (wire == NULL || amp_write_box(wire, pairs, n) != size) {
            fprintf(stderr, "write failed\n");
            free(wire);
            return 1;
        }
        amp_scanner_init(&s);
        for (i = 0; i < n; i++) {
            if (amp_scan(&s, wire, size, &off, &str) != AMP_KEY
                || str.len != pairs[i].key_len
                || memcmp(str.data, pairs[i].key, str.len) != 0
                || amp_scan(&s, wire, size, &off, &str) != AMP_VALUE
                || str.len != pairs[i].value_len
                || (str.len && memcmp(str.data, pairs[i].value, str.len) != 0)) {
                fprintf(stderr, "round trip differs at pair %zu\n", i);
                failures++;
                break;
            }
        }
        if (amp_scan(&s, wire, size, &off, &str) != AMP_BOX_END || off != size) {
            fprintf(stderr, "box end missing\n");
            failures++;
        }
        failures += check_chunking(wire, size, 1);
        failures += check_chunking(wire, size, 7);
        failures += check_chunking(wire, size, 5000);
        free(wire);
    }
    /* Over-long key limits. */
    {
        amp_pair p = {(const unsigned char *)store, 256, store, 0, 0};
        size_t bad;
        if (amp_check_pairs(&p, 1, &bad) != AMP_PAIR_KEY_TOO_LONG) {
            failures++;
        }
        p.key_len = 255;
        p.value_len = 65536;
        if (amp_check_pairs(&p, 1, &bad) != AMP_PAIR_VALUE_TOO_LONG) {
            failures++;
        }
    }
    /* Garbage, mostly small prefixes so boxes complete often. */
    for (round = 0; round < 3000; round++) {
        size_t len = (size_t)(rng() % sizeof(garbage)), i;
        for (i = 0; i < len; i++) {
            garbage[i] = (unsigned char)(i % 2 == 0 && rng() % 4 ? 0 : rng());
        }
        failures += check_chunking(garbage, len, 1 + (size_t)(rng() % 9));
    }
    if (failures) {
        fprintf(stderr, "codec_check: %d failures\n", failures);
        return 1;
    }
    printf("codec_check: ok\n");
    return 0;
}
#endif
