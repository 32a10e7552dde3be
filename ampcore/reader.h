/*
 * ampcore._ampcore: the box reader, incremental box assembly over the
 * pure-C scanner.
 *
 * Feed it chunks split anywhere; it hands each complete box (an AmpBox) to
 * a sink.  The bytes of the box being assembled are kept (so any split
 * point works and a caller can read what is not yet part of a delivered
 * box); nothing else is buffered, so memory is bounded by the box being
 * assembled.  Whole boxes inside one chunk are never copied.
 *
 * The reader also keeps the bytes given to it while a sink runs (a
 * re-entrant dataReceived), so that they are parsed after everything the
 * outer call had, in order.
 */
#ifndef AMPCORE_READER_H
#define AMPCORE_READER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "codec.h"
#include "state.h"

#define KEY_CACHE_SIZE 16   /* power of two */

typedef struct {
    amp_scanner scanner;
    amp_buf pending;             /* raw bytes from the current box's start */
    size_t resume;               /* scan offset inside `pending` */
    amp_buf queued;              /* bytes given while a sink ran */
    PyObject *box;               /* box being assembled, or NULL */
    PyObject *key;               /* key waiting for its value, or NULL */
    Py_ssize_t bad_key_length;   /* -1, or the over-long key prefix seen */
    /* While a sink runs: the bytes after the delivered box are
       cur_buf[cur_off:cur_len] (what stock's `recvd` shows a callback). */
    const unsigned char *cur_buf;
    size_t cur_len, cur_off;
    int delivering;
    /* Keys repeat from box to box (_ask, _command, argument names): reuse
       the bytes objects, which also keeps their hashes cached. */
    PyObject *keys[KEY_CACHE_SIZE];
} box_reader;

/* How a feed ended. */
typedef enum {
    READER_ERROR = -1,       /* an exception is set */
    READER_NEED_MORE = 0,    /* the bytes ran out */
    READER_STOPPED,          /* the sink asked to stop after a box */
    READER_KEY_TOO_LONG      /* a key length prefix above 255 arrived */
} reader_status;

/* What a sink tells the reader after taking a box. */
typedef enum {
    SINK_ERROR = -1,         /* an exception is set */
    SINK_CONTINUE = 0,
    SINK_STOP                /* deliver nothing more in this feed */
} sink_action;

/* Called with each complete box, borrowed: the reader drops its own
   reference after the call. */
typedef sink_action (*box_sink)(void *ctx, PyObject *box);

static void
reader_init(box_reader *r)
{
    amp_scanner_init(&r->scanner);
    amp_buf_init(&r->pending);
    amp_buf_init(&r->queued);
    r->resume = 0;
    r->box = NULL;
    r->key = NULL;
    r->bad_key_length = -1;
    r->cur_buf = NULL;
    r->cur_len = r->cur_off = 0;
    r->delivering = 0;
    memset(r->keys, 0, sizeof(r->keys));
}

/* Release everything the reader holds. */
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
    amp_buf_free(&r->queued);
}

/* The objects the reader holds that user code can reach (the box being
   assembled is a dict its values could refer back from). */
static int
reader_traverse(box_reader *r, visitproc visit, void *arg)
{
    Py_VISIT(r->box);
    return 0;
}

/* tp_clear's part: drop the references that can take part in a cycle. */
static void
reader_clear_refs(box_reader *r)
{
    Py_CLEAR(r->box);
    Py_CLEAR(r->key);
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
 * being assembled began.  On READER_KEY_TOO_LONG, r->bad_key_length is set.
 */
static reader_status
reader_scan(box_reader *r, module_state *st, const unsigned char *buf,
            size_t len, size_t *off, size_t *box_start, box_sink sink,
            void *ctx)
{
    amp_string s;
    amp_event ev;
    PyObject *value, *box;
    size_t before;
    sink_action action;
    int rc;

    for (;;) {
        before = *off;
        switch (ev = amp_scan(&r->scanner, buf, len, off, &s)) {
        case AMP_NEED_MORE:
            return READER_NEED_MORE;
        case AMP_KEY_TOO_LONG:
            r->bad_key_length = (Py_ssize_t)s.len;
            return READER_KEY_TOO_LONG;
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
            /* An empty box is still a box: stock's proto_key hands it to
               ampBoxReceived, whose NoEmptyBoxes is the dispatcher's call. */
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
            r->delivering = 1;
            action = sink(ctx, box);
            r->delivering = 0;
            Py_DECREF(box);
            if (action == SINK_ERROR) {
                return READER_ERROR;
            }
            if (action == SINK_STOP) {
                return READER_STOPPED;
            }
            break;
        }
    }
unscan:
    /* Building the string's object failed (memory): give the string back to
       the stream, so a later feed retries it and the state stays whole. */
    *off = before;
    amp_scanner_unscan(&r->scanner, ev);
    return READER_ERROR;
}

/*
 * Feed a chunk.  Whatever happens, the bytes of the unfinished box (and
 * after a stop, everything after the last delivered box) stay buffered.
 */
static reader_status
reader_feed(box_reader *r, module_state *st, const unsigned char *data,
            size_t len, box_sink sink, void *ctx)
{
    size_t off, box_start = 0;
    reader_status rc;

    if (r->bad_key_length >= 0) {
        /* Nothing after a bad prefix is ever read again: drop it, so a peer
           cannot grow our memory while the connection closes. */
        return READER_KEY_TOO_LONG;
    }
    if (r->pending.len == 0) {
        /* Common case: scan the caller's bytes in place. */
        off = 0;
        rc = reader_scan(r, st, data, len, &off, &box_start, sink, ctx);
        if (amp_buf_append(&r->pending, data + box_start, len - box_start) < 0) {
            if (rc != READER_ERROR) {
                PyErr_NoMemory();
            }
            return READER_ERROR;
        }
        r->resume = off - box_start;
        return rc;
    }
    if (amp_buf_append(&r->pending, data, len) < 0) {
        PyErr_NoMemory();
        return READER_ERROR;
    }
    off = r->resume;
    rc = reader_scan(r, st, r->pending.data, r->pending.len, &off, &box_start,
                     sink, ctx);
    r->resume = off - box_start;
    amp_buf_consume(&r->pending, box_start);
    return rc;
}

/* Whether a sink is running (a box is being delivered). */
static inline int
reader_is_delivering(const box_reader *r)
{
    return r->delivering;
}

/* The over-long key prefix that stopped the reader, or -1. */
static inline Py_ssize_t
reader_bad_key_length(const box_reader *r)
{
    return r->bad_key_length;
}

/* Keep bytes behind what is buffered, to be parsed by the next feed (while
   paused, say): 0, or -1 with MemoryError set. */
static int
reader_hold(box_reader *r, const unsigned char *data, size_t len)
{
    if (amp_buf_append(&r->pending, data, len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Keep bytes given while a sink runs, for reader_feed_queued():
   0, or -1 with MemoryError set. */
static int
reader_queue(box_reader *r, const unsigned char *data, size_t len)
{
    if (amp_buf_append(&r->queued, data, len) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static inline int
reader_has_queued(const box_reader *r)
{
    return r->queued.len != 0;
}

/* Forget the queued bytes. */
static void
reader_drop_queued(box_reader *r)
{
    amp_buf_consume(&r->queued, r->queued.len);
}

/* Feed the queued bytes (taken out of the queue first: the sink may queue
   more behind them). */
static reader_status
reader_feed_queued(box_reader *r, module_state *st, box_sink sink, void *ctx)
{
    amp_buf q = r->queued;
    reader_status rc;
    amp_buf_init(&r->queued);
    rc = reader_feed(r, st, q.data, q.len, sink, ctx);
    amp_buf_free(&q);
    return rc;
}

/* Move the queued bytes behind what is buffered, for a later feed: 0, or
   -1 when memory ran out (the queued bytes are lost; no exception is set,
   so that one already being raised is kept). */
static int
reader_hold_queued(box_reader *r)
{
    amp_buf q = r->queued;
    int rc;
    amp_buf_init(&r->queued);
    rc = amp_buf_append(&r->pending, q.data, q.len);
    amp_buf_free(&q);
    return rc;
}

/* The bytes not yet part of a delivered box; inside a sink, the bytes after
   the box being delivered (BoxParser.unprocessed). */
static PyObject *
reader_box_in_progress(const box_reader *r)
{
    if (r->delivering) {
        return PyBytes_FromStringAndSize((const char *)r->cur_buf + r->cur_off,
                                         (Py_ssize_t)(r->cur_len - r->cur_off));
    }
    return PyBytes_FromStringAndSize((const char *)r->pending.data,
                                     (Py_ssize_t)r->pending.len);
}

/* The bytes after the last complete string (key, value or terminator):
   what stock's `recvd` holds between calls and inside callbacks. */
static PyObject *
reader_recvd(const box_reader *r)
{
    if (r->delivering) {
        return reader_box_in_progress(r);
    }
    if (r->pending.len == r->resume) {
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    return PyBytes_FromStringAndSize((const char *)r->pending.data + r->resume,
                                     (Py_ssize_t)(r->pending.len - r->resume));
}

/* Forget the box being assembled and everything buffered (queued bytes
   included): the next byte starts a box. */
static void
reader_reset(box_reader *r)
{
    Py_CLEAR(r->box);
    Py_CLEAR(r->key);
    amp_scanner_init(&r->scanner);
    amp_buf_consume(&r->pending, r->pending.len);
    reader_drop_queued(r);
    r->resume = 0;
}

/* owner.lengthLimitExceeded(length) for the over-long key prefix seen, as
   Int16StringReceiver.dataReceived calls it: 0, or -1 with an exception. */
static int
reader_report_length_limit(const box_reader *r, module_state *st,
                           PyObject *owner)
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

#endif /* AMPCORE_READER_H */
