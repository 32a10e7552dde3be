/*
 * ampcore._ampcore: the box reader, incremental box assembly over the
 * pure-C scanner.
 *
 * Feed it chunks split anywhere; it hands each complete box (an AmpBox) to
 * a sink.  What it holds between feeds is the box being assembled (its
 * keys and values, as objects) and the bytes after its last complete key
 * or value: a string is copied out of the stream once, and its raw bytes
 * are then dropped, so a box costs what it costs stock.  (A reader made
 * with keep_box_bytes also keeps the raw bytes from the box's start, for
 * BoxParser.unprocessed.)  Whole boxes inside one chunk are never copied.
 *
 * A box may not grow past max_box bytes, counted before its strings are
 * allocated (see box_cost()): the reader then stops for good, as after an
 * over-long key.
 *
 * Python code runs inside a scan: the sink, and also finalizers (of a
 * dropped box's values, of garbage the cyclic GC collects when a box is
 * allocated).  Any of it may feed this reader again.  While a scan runs
 * the reader is `busy`: its buffer must not move, so such bytes are queued
 * (reader_queue) and parsed after everything the outer call had, in order.
 */
#ifndef AMPCORE_READER_H
#define AMPCORE_READER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "codec.h"
#include "state.h"

#define KEY_CACHE_SIZE 16   /* power of two */

/* What a box's key or value costs, beyond its bytes: its length prefix and
   about what a bytes object and its dict slot take.  maxBoxSize counts in
   these units, so that it bounds memory, not only bytes on the wire. */
#define BOX_STRING_COST 64

/* No cap on a box's size. */
#define BOX_SIZE_UNLIMITED ((size_t)-1)

typedef struct {
    amp_scanner scanner;
    /* Raw bytes not yet turned into objects: those after the last complete
       key or value (or, with keep_box_bytes, from the box's start). */
    amp_buf pending;
    size_t resume;               /* scan offset inside `pending` */
    int keep_box_bytes;
    size_t max_box;              /* the cap, or BOX_SIZE_UNLIMITED */
    size_t box_size;             /* what the box being assembled costs */
    size_t too_big;              /* 0, or the size that broke the cap */
    amp_buf queued;              /* bytes given while a sink ran */
    PyObject *box;               /* box being assembled, or NULL */
    PyObject *key;               /* key waiting for its value, or NULL */
    Py_ssize_t bad_key_length;   /* -1, or the over-long key prefix seen */
    /* While a sink runs: the bytes after the delivered box are
       cur_buf[cur_off:cur_len] (what stock's `recvd` shows a callback). */
    const unsigned char *cur_buf;
    size_t cur_len, cur_off;
    int delivering;              /* a sink runs */
    int busy;                    /* a scan runs: the buffer must not move */
    int stop_requested;          /* end the scan after the current string */
    /* Keys repeat from box to box (_ask, _command, argument names): reuse
       the bytes objects, which also keeps their hashes cached. */
    PyObject *keys[KEY_CACHE_SIZE];
} box_reader;

/* How a feed ended. */
typedef enum {
    READER_ERROR = -1,       /* an exception is set */
    READER_NEED_MORE = 0,    /* the bytes ran out */
    READER_STOPPED,          /* the sink, or reader_request_stop(), asked to stop */
    READER_KEY_TOO_LONG,     /* a key length prefix above 255 arrived */
    READER_BOX_TOO_BIG       /* a box grew past max_box */
} reader_status;

/* What a sink tells the reader after taking a box. */
typedef enum {
    SINK_ERROR = -1,         /* an exception is set */
    SINK_CONTINUE = 0,
    SINK_STOP                /* deliver nothing more in this feed */
} sink_action;

/* Called with each complete box, a reference the sink owns: it drops the
   box before it decides (finalizers of the box's values run before the
   checks that follow a box, as they do in stock, which drops a box before
   it checks for a pause or a switch). */
typedef sink_action (*box_sink)(void *ctx, PyObject *box);

static void
reader_init(box_reader *r)
{
    amp_scanner_init(&r->scanner);
    amp_buf_init(&r->pending);
    amp_buf_init(&r->queued);
    r->resume = 0;
    r->keep_box_bytes = 0;
    r->max_box = BOX_SIZE_UNLIMITED;
    r->box_size = 0;
    r->too_big = 0;
    r->box = NULL;
    r->key = NULL;
    r->bad_key_length = -1;
    r->cur_buf = NULL;
    r->cur_len = r->cur_off = 0;
    r->delivering = 0;
    r->busy = 0;
    r->stop_requested = 0;
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

/* The key object for bytes p[:n] (n >= 1): the one this reader made last
   for those bytes, else the module's known key for them (state.h), else a
   new one.  A new reference, or NULL with an exception set. */
static PyObject *
reader_key(box_reader *r, module_state *st, const unsigned char *p, size_t n)
{
    size_t slot = key_slot_hash(p, n) & (KEY_CACHE_SIZE - 1);
    PyObject *key = r->keys[slot];
    if (key != NULL && (size_t)PyBytes_GET_SIZE(key) == n
        && memcmp(PyBytes_AS_STRING(key), p, n) == 0) {
        Py_INCREF(key);
        return key;
    }
    key = state_known_key(st, p, n);
    if (key != NULL) {
        Py_INCREF(key);
    }
    else if ((key = PyBytes_FromStringAndSize((const char *)p,
                                              (Py_ssize_t)n)) == NULL) {
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

/* Whether a string of n bytes would take the box being assembled past the
   cap; if so, remember the size it would have reached. */
static int
box_would_exceed(box_reader *r, size_t n)
{
    size_t cost = n + BOX_STRING_COST;
    if (r->max_box == BOX_SIZE_UNLIMITED
        || (r->box_size <= r->max_box && cost <= r->max_box - r->box_size)) {
        return 0;
    }
    r->too_big = r->box_size + cost;
    return 1;
}

/* Forget the box being assembled and the raw bytes buffered. */
static void
reader_drop_box(box_reader *r)
{
    Py_CLEAR(r->box);
    Py_CLEAR(r->key);
    amp_scanner_init(&r->scanner);
    amp_buf_consume(&r->pending, r->pending.len);
    r->resume = 0;
    r->box_size = 0;
}

/*
 * Scan buf[*off:len] and deliver boxes.  *box_start tracks where the box
 * being assembled began.  On READER_KEY_TOO_LONG, r->bad_key_length is set;
 * on READER_BOX_TOO_BIG, r->too_big.
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
        if (r->stop_requested) {
            /* Code run from inside the scan (a finalizer) handed the
               stream over (assigned recvd): stop after the last string. */
            r->stop_requested = 0;
            return READER_STOPPED;
        }
        before = *off;
        switch (ev = amp_scan(&r->scanner, buf, len, off, &s)) {
        case AMP_NEED_MORE:
            /* A string whose length prefix has come is counted now, before
               its bytes are buffered. */
            if (len - *off >= 2 && r->max_box != BOX_SIZE_UNLIMITED
                && box_would_exceed(r, ((size_t)buf[*off] << 8)
                                       | buf[*off + 1])) {
                return READER_BOX_TOO_BIG;
            }
            return READER_NEED_MORE;
        case AMP_KEY_TOO_LONG:
            r->bad_key_length = (Py_ssize_t)s.len;
            return READER_KEY_TOO_LONG;
        case AMP_KEY:
            if (box_would_exceed(r, s.len)) {
                goto too_big;
            }
            if (r->box == NULL && (r->box = new_box(st)) == NULL) {
                goto unscan;
            }
            r->key = reader_key(r, st, s.data, s.len);
            if (r->key == NULL) {
                goto unscan;
            }
            r->box_size += s.len + BOX_STRING_COST;
            break;
        case AMP_VALUE:
            if (box_would_exceed(r, s.len)) {
                goto too_big;
            }
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
            r->box_size += s.len + BOX_STRING_COST;
            break;
        case AMP_BOX_END:
            /* An empty box is still a box: stock's proto_key hands it to
               ampBoxReceived, whose NoEmptyBoxes is the dispatcher's call. */
            if (r->box == NULL && (r->box = new_box(st)) == NULL) {
                goto unscan;
            }
            *box_start = *off;
            r->box_size = 0;
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
too_big:
    *off = before;
    amp_scanner_unscan(&r->scanner, ev);
    return READER_BOX_TOO_BIG;
}

/*
 * Feed a chunk.  Whatever happens, the bytes not yet turned into objects
 * stay buffered (after a stop, everything after the last delivered box),
 * except after a box grew too big: the reader then holds nothing more.
 */
static reader_status
reader_feed(box_reader *r, module_state *st, const unsigned char *data,
            size_t len, box_sink sink, void *ctx)
{
    size_t off, box_start = 0, keep;
    reader_status rc;

    if (r->bad_key_length >= 0) {
        /* Nothing after a bad prefix is ever read again: drop it, so a peer
           cannot grow our memory while the connection closes. */
        return READER_KEY_TOO_LONG;
    }
    if (r->too_big) {
        return READER_BOX_TOO_BIG;
    }
    if (r->busy) {
        /* Only reader_queue() may take bytes while a scan runs. */
        PyErr_SetString(PyExc_RuntimeError, "ampcore: box reader re-entered");
        return READER_ERROR;
    }
    if (r->pending.len == 0) {
        /* Common case: scan the caller's bytes in place. */
        off = 0;
        r->busy = 1;
        rc = reader_scan(r, st, data, len, &off, &box_start, sink, ctx);
        r->busy = r->stop_requested = 0;
        if (rc == READER_BOX_TOO_BIG) {
            reader_drop_box(r);
            return rc;
        }
        keep = r->keep_box_bytes ? box_start : off;
        if (amp_buf_append(&r->pending, data + keep, len - keep) < 0) {
            if (rc != READER_ERROR) {
                PyErr_NoMemory();
            }
            return READER_ERROR;
        }
        r->resume = off - keep;
        return rc;
    }
    if (amp_buf_append(&r->pending, data, len) < 0) {
        PyErr_NoMemory();
        return READER_ERROR;
    }
    off = r->resume;
    r->busy = 1;
    rc = reader_scan(r, st, r->pending.data, r->pending.len, &off, &box_start,
                     sink, ctx);
    r->busy = r->stop_requested = 0;
    if (rc == READER_BOX_TOO_BIG) {
        reader_drop_box(r);
        return rc;
    }
    keep = r->keep_box_bytes ? box_start : off;
    r->resume = off - keep;
    amp_buf_consume(&r->pending, keep);
    return rc;
}

/* maxBoxSize's value as a cap: None for none, else an int >= 0 (one
   beyond what memory can hold is as good as none).  0, or -1 with an
   exception set. */
static int
reader_cap_from_object(PyObject *value, size_t *cap)
{
    long long n;
    int overflow;
    if (value == Py_None) {
        *cap = BOX_SIZE_UNLIMITED;
        return 0;
    }
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError,
                     "maxBoxSize must be an int or None, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && n < 0)) {
        PyErr_SetString(PyExc_ValueError, "maxBoxSize must not be negative");
        return -1;
    }
    if (overflow > 0 || (unsigned long long)n >= (unsigned long long)BOX_SIZE_UNLIMITED) {
        *cap = BOX_SIZE_UNLIMITED - 1;
    }
    else {
        *cap = (size_t)n;
    }
    return 0;
}

/* Set the cap for the next feeds. */
static inline void
reader_set_cap(box_reader *r, size_t cap)
{
    r->max_box = cap;
}

/* Whether a scan runs (bytes must then be queued, not fed). */
static inline int
reader_is_busy(const box_reader *r)
{
    return r->busy;
}

/* Ask a running scan to stop before its next string (READER_STOPPED). */
static inline void
reader_request_stop(box_reader *r)
{
    r->stop_requested = 1;
}

/* The size that took a box past the cap, or 0. */
static inline size_t
reader_too_big(const box_reader *r)
{
    return r->too_big;
}

/* A cap as Python shows it (maxBoxSize): an int, or None for no cap. */
static PyObject *
reader_cap_to_object(size_t cap)
{
    if (cap == BOX_SIZE_UNLIMITED) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSize_t(cap);
}

/* A new BoxTooLong(maxBoxSize, size) for a reader that stopped on a box
   too big (READER_BOX_TOO_BIG), called as box_too_long (the class); NULL
   with an exception set. */
static PyObject *
reader_box_too_long(const box_reader *r, PyObject *box_too_long)
{
    PyObject *cap = reader_cap_to_object(r->max_box), *size = NULL, *exc = NULL;
    if (cap != NULL && (size = PyLong_FromSize_t(reader_too_big(r))) != NULL) {
        exc = PyObject_CallFunctionObjArgs(box_too_long, cap, size, NULL);
    }
    Py_XDECREF(cap);
    Py_XDECREF(size);
    return exc;
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
    reader_drop_box(r);
    reader_drop_queued(r);
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
