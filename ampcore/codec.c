/* ampcore wire codec: the pure-C layer (see codec.h).  No Python.h. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

/* ==== scanning ========================================================== */

void
amp_scanner_init(amp_scanner *s)
{
    s->want_value = 0;
}

/* ==== buffer ============================================================ */

void
amp_buf_init(amp_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void
amp_buf_free(amp_buf *b)
{
    free(b->data);
    amp_buf_init(b);
}

int
amp_buf_append(amp_buf *b, const unsigned char *data, size_t len)
{
    if (len > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        unsigned char *p;
        while (cap - b->len < len) {
            if (cap > ((size_t)-1) / 2) {
                return -1;
            }
            cap *= 2;
        }
        p = realloc(b->data, cap);
        if (p == NULL) {
            return -1;
        }
        b->data = p;
        b->cap = cap;
    }
    if (len) {
        memcpy(b->data + b->len, data, len);
    }
    b->len += len;
    return 0;
}

void
amp_buf_consume(amp_buf *b, size_t n)
{
    if (n == 0) {
        return;   /* a trickling peer: nothing to move, byte after byte */
    }
    if (n >= b->len) {
        b->len = 0;
        /* Give back a large buffer once a big box is done: memory stays
           bounded by the box being assembled, not by the largest ever. */
        if (b->cap > 65536) {
            amp_buf_free(b);
        }
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* ==== serializing ======================================================= */

static int
key_cmp(const amp_pair *a, const amp_pair *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c) {
        return c;
    }
    return (a->key_len > b->key_len) - (a->key_len < b->key_len);
}

static int
key_cmp_void(const void *a, const void *b)
{
    return key_cmp((const amp_pair *)a, (const amp_pair *)b);
}

void
amp_sort_pairs(amp_pair *pairs, size_t n)
{
    size_t i, j;
    if (n > 16) {
        qsort(pairs, n, sizeof(*pairs), key_cmp_void);
        return;
    }
    /* Boxes are small: insertion sort beats qsort's call overhead. */
    for (i = 1; i < n; i++) {
        amp_pair p = pairs[i];
        for (j = i; j > 0 && key_cmp(&pairs[j - 1], &p) > 0; j--) {
            pairs[j] = pairs[j - 1];
        }
        pairs[j] = p;
    }
}

amp_pair_check
amp_check_pairs(const amp_pair *pairs, size_t n, size_t *bad)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (pairs[i].key_len > AMP_MAX_KEY_LENGTH) {
            *bad = i;
            return AMP_PAIR_KEY_TOO_LONG;
        }
        if (pairs[i].value_len > AMP_MAX_VALUE_LENGTH) {
            *bad = i;
            return AMP_PAIR_VALUE_TOO_LONG;
        }
    }
    return AMP_PAIRS_OK;
}

size_t
amp_box_size(const amp_pair *pairs, size_t n)
{
    size_t i, size = 2;
    for (i = 0; i < n; i++) {
        size += 4 + pairs[i].key_len + pairs[i].value_len;
    }
    return size;
}

static unsigned char *
put_string(unsigned char *out, const unsigned char *data, size_t len)
{
    out[0] = (unsigned char)(len >> 8);
    out[1] = (unsigned char)(len & 0xFF);
    if (len) {
        memcpy(out + 2, data, len);
    }
    return out + 2 + len;
}

size_t
amp_write_box(unsigned char *out, const amp_pair *pairs, size_t n)
{
    unsigned char *p = out;
    size_t i;
    for (i = 0; i < n; i++) {
        p = put_string(p, pairs[i].key, pairs[i].key_len);
        p = put_string(p, pairs[i].value, pairs[i].value_len);
    }
    p[0] = 0;
    p[1] = 0;
    return (size_t)(p - out) + 2;
}
