/*
 * ampcore wire codec: the pure-C layer.
 *
 * No Python.h here on purpose: this layer can be compiled alone, unit-tested
 * and fuzzed.  It knows AMP's framing (as twisted.protocols.amp's
 * AmpBox.serialize writes it and BinaryBoxProtocol reads it) and nothing of
 * Python objects.
 *
 *  - amp_scan(): a resumable scanner over one contiguous byte range.  It never
 *    consumes a partial unit (a 2-byte length prefix or a string body), so the
 *    caller resumes by keeping the unconsumed tail and appending new bytes to
 *    it; a box may be split at any byte, prefixes included.
 *  - amp_buf: the growable byte buffer a caller keeps that tail in.
 *  - amp_sort_pairs() / amp_check_pairs() / amp_box_size() / amp_write_box():
 *    the serializer, in the order AmpBox.serialize works (sorted bytewise,
 *    key limit checked before value limit within a pair).
 */
#ifndef AMPCORE_CODEC_H
#define AMPCORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define AMP_MAX_KEY_LENGTH 0xFF
#define AMP_MAX_VALUE_LENGTH 0xFFFF

/* ---- scanning --------------------------------------------------------- */

typedef enum {
    AMP_NEED_MORE = 0,       /* the range ends inside a prefix or a body */
    AMP_KEY,                 /* a non-empty key: string.data/len */
    AMP_VALUE,               /* the value for the last key */
    AMP_BOX_END,             /* the empty key that terminates a box */
    AMP_KEY_TOO_LONG         /* a key prefix > 255; string.len holds it */
} amp_event;

typedef struct {
    /* 1 while the next string is a value, 0 while it is a key (or the
       terminator).  Nothing else survives between calls. */
    int want_value;
} amp_scanner;

typedef struct {
    const unsigned char *data;  /* points into the caller's range */
    size_t len;
} amp_string;

void amp_scanner_init(amp_scanner *s);

/* Give back the string amp_scan() just returned as event `ev` (whose *off
   the caller restores): the next scan reads it again as the same kind. */
static inline void
amp_scanner_unscan(amp_scanner *s, amp_event ev)
{
    s->want_value = (ev == AMP_VALUE);
}

/*
 * Scan one string of buf[*off:len].  On AMP_KEY, AMP_VALUE and AMP_BOX_END,
 * *off is advanced past the string.  On AMP_NEED_MORE and AMP_KEY_TOO_LONG
 * *off is left where it was, at the start of the incomplete or bad unit.
 * Inline: it runs once per key and value.
 */
static inline amp_event
amp_scan(amp_scanner *s, const unsigned char *buf, size_t len, size_t *off,
         amp_string *out)
{
    size_t pos = *off;
    size_t n;

    if (len - pos < 2) {
        return AMP_NEED_MORE;
    }
    n = ((size_t)buf[pos] << 8) | buf[pos + 1];
    /* The key limit is enforced on the prefix alone, before the body has
       arrived, as BinaryBoxProtocol does: its MAX_LENGTH is 255 while a key
       is due, and Int16StringReceiver checks a prefix against it. */
    if (!s->want_value && n > AMP_MAX_KEY_LENGTH) {
        out->data = NULL;
        out->len = n;
        return AMP_KEY_TOO_LONG;
    }
    if (len - pos - 2 < n) {
        return AMP_NEED_MORE;
    }
    out->data = buf + pos + 2;
    out->len = n;
    *off = pos + 2 + n;
    if (s->want_value) {
        s->want_value = 0;
        return AMP_VALUE;
    }
    if (n == 0) {
        return AMP_BOX_END;
    }
    s->want_value = 1;
    return AMP_KEY;
}

/* ---- a growable byte buffer ------------------------------------------- */

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} amp_buf;

void amp_buf_init(amp_buf *b);
void amp_buf_free(amp_buf *b);
/* Returns 0, or -1 when memory runs out (the buffer is left unchanged). */
int amp_buf_append(amp_buf *b, const unsigned char *data, size_t len);
/* Drop the first n bytes. */
void amp_buf_consume(amp_buf *b, size_t n);

/* ---- numbers as text -------------------------------------------------- */

/* Write v in lowercase hex (a tag, as b"%x" writes it) or in decimal, with
   a leading '-' for the negative (an Integer value, as b"%d" writes it),
   to out, which holds at least 21 bytes.  Returns the bytes written. */
static inline size_t
amp_format_hex(char *out, unsigned long long v)
{
    char tmp[16];
    size_t n = 0, i;
    do {
        tmp[n++] = "0123456789abcdef"[v & 0xF];
        v >>= 4;
    } while (v != 0);
    for (i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

static inline size_t
amp_format_decimal(char *out, long long value)
{
    char tmp[20];
    unsigned long long v = value < 0 ? 0ULL - (unsigned long long)value
                                     : (unsigned long long)value;
    size_t n = 0, i, sign = value < 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (sign) {
        out[0] = '-';
    }
    for (i = 0; i < n; i++) {
        out[sign + i] = tmp[n - 1 - i];
    }
    return sign + n;
}

/* ---- serializing ------------------------------------------------------ */

typedef struct {
    const unsigned char *key;
    size_t key_len;
    const unsigned char *value;
    size_t value_len;
    size_t index;               /* caller's own bookkeeping; never read */
} amp_pair;

/* Sort pairs by key, bytewise (bytes' own ordering); keys must be unique. */
void amp_sort_pairs(amp_pair *pairs, size_t n);

typedef enum { AMP_PAIRS_OK = 0, AMP_PAIR_KEY_TOO_LONG, AMP_PAIR_VALUE_TOO_LONG } amp_pair_check;

/* Check sorted pairs against the limits in serialize order; on failure
   *bad is the offending pair's position. */
amp_pair_check amp_check_pairs(const amp_pair *pairs, size_t n, size_t *bad);

/* Bytes amp_write_box() writes for these (checked) pairs. */
size_t amp_box_size(const amp_pair *pairs, size_t n);

/* Write the box; out must hold amp_box_size() bytes.  Returns bytes written. */
size_t amp_write_box(unsigned char *out, const amp_pair *pairs, size_t n);

#endif /* AMPCORE_CODEC_H */
