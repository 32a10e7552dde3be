/* ampcore._ampcore: incremental box assembly over the pure-C scanner
   (one compilation unit: included by _ampcore.c only). */
#ifndef AMPCORE_READER_H
#define AMPCORE_READER_H

#include "state.h"

/* ==== box reader ========================================================
 *
 * Incremental box assembly over the scanner: feed it chunks, it hands each
 * complete box to a callback.  Bytes of the box being assembled are kept in
 * `pending` (so any split point works and a caller can read what is not yet
 * part of a delivered box); nothing else is buffered, so memory is bounded by
 * the box being assembled.  Whole boxes inside one chunk are never copied.
 */

#define KEY_CACHE_SIZE 16   /* power of two */

typedef struct {
    amp_scanner scanner;
    amp_buf pending;             /* raw bytes from the current box's start */
    size_t resume;               /* scan offset inside `pending` */
    PyObject *box;               /* box being assembled, or NULL */
    PyObject *key;               /* key waiting for its value, or NULL */
    Py_ssize_t bad_key_length;   /* -1, or the over-long key prefix seen */
    /* While a sink runs: the bytes after the delivered box are
       cur_buf[cur_off:cur_len] (what stock's `recvd` shows a callback). */
    const unsigned char *cur_buf;
    size_t cur_len, cur_off;
    int scanning;
    /* Keys repeat from box to box (_ask, _command, argument names): reuse
       the bytes objects, which also keeps their hashes cached. */
    PyObject *keys[KEY_CACHE_SIZE];
} box_reader;

/* Called with each complete box (a new reference it must consume or not:
   the reader drops its own reference after the call).  Returns 0 to go on,
   1 to stop after this box, -1 with an exception set. */
typedef int (*box_sink)(void *ctx, PyObject *box);

static void
reader_init(box_reader *r)
{
    amp_scanner_init(&r->scanner);
    amp_buf_init(&r->pending);
    r->resume = 0;
    r->box = NULL;
    r->key = NULL;
    r->bad_key_length = -1;
    r->cur_buf = NULL;
    r->cur_len = r->cur_off = 0;
    r->scanning = 0;
    memset(r->keys, 0, sizeof(r->keys));
}

static void
reader_clear(box_reader *r)
{
    int i;
    Py_CLEAR(r->box);
    Py_CLEAR(r->key);
    for (i = 0; i < KEY_CACHE_SIZE; i++) {
        Py_CLEAR(r->keys[i]);
    }
    amp_buf_free(&r->pending);
}

static PyObject *
reader_key(box_reader *r, const unsigned char *p, size_t n)
{
    size_t slot = (n * 31u + p[0] * 7u + p[n - 1]) & (KEY_CACHE_SIZE - 1);
    PyObject *key = r->keys[slot];
    if (key != NULL && (size_t)PyBytes_GET_SIZE(key) == n
        && memcmp(PyBytes_AS_STRING(key), p, n) == 0) {
        Py_INCREF(key);
        return key;
    }
    key = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (key == NULL) {
        return NULL;
    }
    Py_INCREF(key);
    Py_XSETREF(r->keys[slot], key);
    return key;
}

static PyObject *
new_box(module_state *st)
{
    /* AmpBox.__init__ only coerces the keys it is given; an empty box needs
       nothing from it, so dict's tp_new alone makes a complete AmpBox. */
    return st->AmpBox->tp_new(st->AmpBox, st->empty_tuple, NULL);
}

/*
 * Scan buf[*off:len] and deliver boxes.  *box_start tracks where the box
 * being assembled began.  Returns 0 when the bytes ran out, 1 when the sink
 * asked to stop, 2 on an over-long key prefix (r->bad_key_length set), -1 on
 * error.
 */
static int
reader_scan(box_reader *r, module_state *st, const unsigned char *buf,
            size_t len, size_t *off, size_t *box_start, box_sink sink,
            void *ctx)
{
    amp_string s;
    amp_event ev;
    PyObject *value, *box;
    size_t before;
    int rc;

    for (;;) {
        before = *off;
        switch (ev = amp_scan(&r->scanner, buf, len, off, &s)) {
        case AMP_NEED_MORE:
            return 0;
        case AMP_KEY_TOO_LONG:
            r->bad_key_length = (Py_ssize_t)s.len;
            return 2;
        case AMP_KEY:
            if (r->box == NULL && (r->box = new_box(st)) == NULL) {
                goto unscan;
            }
            r->key = reader_key(r, s.data, s.len);
            if (r->key == NULL) {
                goto unscan;
            }
            break;
        case AMP_VALUE:
            value = PyBytes_FromStringAndSize((const char *)s.data,
                                              (Py_ssize_t)s.len);
            if (value == NULL) {
                goto unscan;
            }
            /* A repeated key keeps the last value, as stock does. */
            rc = PyDict_SetItem(r->box, r->key, value);
            Py_DECREF(value);
            if (rc < 0) {
                goto unscan;
            }
            Py_CLEAR(r->key);
            break;
        case AMP_BOX_END:
            /* An empty box is still a box (amp-spec §1.3 P5). */
            if (r->box == NULL && (r->box = new_box(st)) == NULL) {
                goto unscan;
            }
            *box_start = *off;
            /* The sink may run user code that feeds this reader again:
               it must find the box slot empty. */
            box = r->box;
            r->box = NULL;
            r->cur_buf = buf;
            r->cur_len = len;
            r->cur_off = *off;
            r->scanning = 1;
            rc = sink(ctx, box);
            r->scanning = 0;
            Py_DECREF(box);
            if (rc != 0) {
                return rc;
            }
            break;
        }
    }
unscan:
    /* Building the string's object failed (memory): give the string back to
       the stream, so a later feed retries it and the state stays whole. */
    *off = before;
    r->scanner.want_value = (ev == AMP_VALUE);
    return -1;
}

/*
 * Feed a chunk.  Returns what reader_scan returned.  Whatever happens, the
 * bytes of the unfinished box (and after a stop, everything after the last
 * delivered box) stay in `pending`.
 */
static int
reader_feed(box_reader *r, module_state *st, const unsigned char *data,
            size_t len, box_sink sink, void *ctx)
{
    size_t off, box_start = 0;
    int rc;

    if (r->bad_key_length >= 0) {
        /* Nothing after a bad prefix is ever read again: drop it, so a peer
           cannot grow our memory while the connection closes. */
        return 2;
    }
    if (r->pending.len == 0) {
        /* Common case: scan the caller's bytes in place. */
        off = 0;
        rc = reader_scan(r, st, data, len, &off, &box_start, sink, ctx);
        if (amp_buf_append(&r->pending, data + box_start, len - box_start) < 0) {
            if (rc >= 0) {
                PyErr_NoMemory();
            }
            return -1;
        }
        r->resume = off - box_start;
        return rc;
    }
    if (amp_buf_append(&r->pending, data, len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    off = r->resume;
    rc = reader_scan(r, st, r->pending.data, r->pending.len, &off, &box_start,
                     sink, ctx);
    r->resume = off - box_start;
    amp_buf_consume(&r->pending, box_start);
    return rc;
}

/* The bytes not yet part of a delivered box; inside a sink, the bytes after
   the box being delivered. */
static PyObject *
reader_unprocessed(box_reader *r)
{
    if (r->scanning) {
        return PyBytes_FromStringAndSize((const char *)r->cur_buf + r->cur_off,
                                         (Py_ssize_t)(r->cur_len - r->cur_off));
    }
    return PyBytes_FromStringAndSize((const char *)r->pending.data,
                                     (Py_ssize_t)r->pending.len);
}

/* The bytes after the last complete string (key, value or terminator):
   what stock's `recvd` holds between calls and inside callbacks. */
static PyObject *
reader_unconsumed(box_reader *r)
{
    if (r->scanning) {
        return reader_unprocessed(r);
    }
    if (r->pending.len == r->resume) {
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    return PyBytes_FromStringAndSize((const char *)r->pending.data + r->resume,
                                     (Py_ssize_t)(r->pending.len - r->resume));
}

/* Forget everything buffered and start at a box boundary. */
static void
reader_reset(box_reader *r)
{
    Py_CLEAR(r->box);
    Py_CLEAR(r->key);
    amp_scanner_init(&r->scanner);
    amp_buf_consume(&r->pending, r->pending.len);
    r->resume = 0;
}

/* owner.lengthLimitExceeded(length) for the over-long key prefix seen, as
   BinaryBoxProtocol's framing calls it: 0, or -1 with an exception set. */
static int
reader_report_length_limit(box_reader *r, module_state *st, PyObject *owner)
{
    PyObject *length = PyLong_FromSsize_t(r->bad_key_length), *result;
    if (length == NULL) {
        return -1;
    }
    result = PyObject_CallMethodOneArg(owner, st->str_lengthLimitExceeded, length);
    Py_DECREF(length);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

static int
sink_append(void *list, PyObject *box)
{
    return PyList_Append((PyObject *)list, box);
}

#endif /* AMPCORE_READER_H */
