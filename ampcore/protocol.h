/*
 * ampcore._ampcore: ProtocolCore, BinaryBoxProtocol's byte-stream side in
 * C: dataReceived parses boxes with the box reader and hands each to
 * self.boxReceiver; sendBox serializes and writes once.  Protocol
 * switching, TLS and pausing keep stock's rules (BinaryBoxProtocol and the
 * Int16StringReceiver framing it inherits), checked on each call.
 */
#ifndef AMPCORE_PROTOCOL_H
#define AMPCORE_PROTOCOL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "calls.h"
#include "compat.h"
#include "core.h"
#include "reader.h"
#include "serialize.h"
#include "state.h"

static const char *const data_params[] = {"data"};
static const char *const sendBox_params[] = {"box"};
static const arg_spec dataReceived_spec = {
    "BinaryBoxProtocol.dataReceived", data_params, 1, 1, 1};
static const arg_spec sendBox_spec = {
    "BinaryBoxProtocol.sendBox", sendBox_params, 1, 1, 1};

/* ==== receiving ========================================================= */

typedef struct {
    module_state *st;
    PyObject *self;
} protocol_ctx;

/* Deliver one box to self.boxReceiver and drop it, then stop if a
   callback or a finalizer switched protocols (assigned self.recvd) or
   paused us: stock's Int16StringReceiver.dataReceived checks self.paused
   after each string. */
static sink_action
protocol_sink(void *arg, PyObject *box)
{
    protocol_ctx *ctx = (protocol_ctx *)arg;
    module_state *st = ctx->st;
    PyObject *receiver = PyObject_GetAttr(ctx->self, st->str_boxReceiver);
    int rc;
    if (receiver == NULL) {
        Py_DECREF(box);
        return SINK_ERROR;
    }
    rc = call1_void(receiver, st->str_ampBoxReceived, box);
    Py_DECREF(receiver);
    Py_DECREF(box);
    if (rc < 0) {
        return SINK_ERROR;
    }
    if (((CoreObject *)ctx->self)->recvd_set != NULL) {
        return SINK_STOP;
    }
    switch (attr_true(ctx->self, st->str_paused)) {
    case 0:
        return SINK_CONTINUE;
    case 1:
        return SINK_STOP;
    default:
        return SINK_ERROR;
    }
}

/* The status of feeding a Python object's bytes. */
static reader_status
feed_object(CoreObject *self, protocol_ctx *ctx, PyObject *data)
{
    Py_buffer view;
    reader_status rc;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return READER_ERROR;
    }
    rc = reader_feed(&self->reader, ctx->st, view.buf, (size_t)view.len,
                     protocol_sink, ctx);
    PyBuffer_Release(&view);
    return rc;
}

/*
 * After a callback switched protocols by assigning self.recvd: what it
 * assigned replaces the rest of the buffer, as in stock's
 * BinaryBoxProtocol._switchTo.  Feeds that (when it is bytes and the last
 * feed did not fail) and returns how that feed ended.
 */
static reader_status
take_recvd_handover(CoreObject *self, protocol_ctx *ctx, reader_status rc)
{
    PyObject *data = self->recvd_set;
    self->recvd_set = NULL;
    reader_reset(&self->reader);
    if (rc != READER_ERROR && PyObject_CheckBuffer(data)) {
        rc = feed_object(self, ctx, data);
    }
    else if (rc != READER_ERROR) {
        rc = READER_NEED_MORE;
    }
    Py_DECREF(data);
    return rc;
}

/*
 * Go on after the first feed of a dataReceived until nothing is left to
 * do: take a recvd hand-over, then parse the bytes callbacks fed us
 * re-entrantly, which come after everything the outer call had (or keep
 * them, in order, behind the buffered rest when parsing stopped).
 */
static reader_status
finish_feed(CoreObject *self, protocol_ctx *ctx, reader_status rc)
{
    box_reader *r = &self->reader;
    for (;;) {
        if (self->recvd_set != NULL) {
            rc = take_recvd_handover(self, ctx, rc);
            continue;
        }
        if (!reader_has_queued(r)) {
            return rc;
        }
        switch (rc) {
        case READER_NEED_MORE:
            rc = reader_feed_queued(r, ctx->st, protocol_sink, ctx);
            break;
        case READER_STOPPED:
            /* Paused: keep the bytes for resumeProducing's dataReceived. */
            if (reader_hold_queued(r) < 0) {
                PyErr_NoMemory();
                return READER_ERROR;
            }
            return rc;
        case READER_ERROR:
            /* Kept for the next call, after the failing box (the error
               being raised is what the caller sees either way). */
            (void)reader_hold_queued(r);
            return rc;
        case READER_KEY_TOO_LONG:
        case READER_BOX_TOO_BIG:
            /* Nothing more is read after an over-long key or box. */
            reader_drop_queued(r);
            return rc;
        }
    }
}

/* stock's Int16StringReceiver framing, for a subclass that handles strings
   itself (overrides stringReceived). */
static PyObject *
stock_framing(module_state *st, PyObject *self, PyObject *data)
{
    PyObject *callargs[2] = {self, data};
    return PyObject_Vectorcall(st->stock_int16_dataReceived, callargs, 2, NULL);
}

/* Relay to the protocol this one switched to, if any: 1 if relayed, 0 if
   not switched, -1 on error. */
static int
relay_to_inner(module_state *st, PyObject *self, PyObject *data)
{
    PyObject *inner = PyObject_GetAttr(self, st->str_innerProtocol);
    int rc;
    if (inner == NULL) {
        return -1;
    }
    if (inner == Py_None) {
        Py_DECREF(inner);
        return 0;
    }
    rc = call1_void(inner, st->str_dataReceived, data);
    Py_DECREF(inner);
    return rc < 0 ? -1 : 1;
}

/*
 * Whether self's class keeps the stock values of what dataReceived reads
 * on every call: _justStartedTLS False, innerProtocol None, paused False,
 * stringReceived stock's, all plain class attributes read by the generic
 * getattr.  Checked once per class version (the tag changes whenever the
 * class or a base is modified).
 */
static int
class_is_plain(module_state *st, CoreObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    unsigned int tag = compat_type_version(tp, st->str_paused);
    PyObject *cap;
    if (tag != 0 && tag == self->plain_class) {
        return 1;
    }
    if (tp->tp_getattro != PyObject_GenericGetAttr
        || !compat_has_instance_dict(tp)
        || compat_type_lookup(tp, st->str__justStartedTLS) != Py_False
        || compat_type_lookup(tp, st->str_innerProtocol) != Py_None
        || compat_type_lookup(tp, st->str_paused) != Py_False
        || compat_type_lookup(tp, st->str_stringReceived)
           != st->stock_stringReceived) {
        return 0;
    }
    /* maxBoxSize is read on every call too: a plain one (an int or None,
       not a descriptor) is kept with the tag; anything else is read, and
       its error raised, by the steps for a protocol that is not plain. */
    cap = compat_type_lookup(tp, st->str_maxBoxSize);
    if (cap == NULL || (cap != Py_None && !PyLong_Check(cap))
        || reader_cap_from_object(cap, &self->plain_max_box) < 0) {
        PyErr_Clear();
        return 0;
    }
    /* The lookups above gave the class a tag if it had none. */
    self->plain_class = compat_type_version(tp, st->str_paused);
    return 1;
}

/* With a plain class: whether the instance's own attributes leave those
   values as they are (a switch, a TLS start or a pause set them there, and
   a protocol may be given its own maxBoxSize).
   1 if so, 0 if not, -1 on error. */
static int
instance_is_plain(module_state *st, CoreObject *self)
{
    PyObject *dict = PyObject_GenericGetDict((PyObject *)self, NULL), *v;
    uint64_t version;
    int plain = 0;
    if (dict == NULL) {
        return -1;
    }
    version = compat_dict_version(dict);
    if (version != 0 && dict == self->plain_dict
        && version == self->plain_dict_version) {
        Py_DECREF(dict);
        return 1;
    }
    if (((v = PyDict_GetItemWithError(dict, st->str__justStartedTLS)) == NULL
         || v == Py_False) && !PyErr_Occurred()
        && ((v = PyDict_GetItemWithError(dict, st->str_innerProtocol)) == NULL
            || v == Py_None) && !PyErr_Occurred()
        && ((v = PyDict_GetItemWithError(dict, st->str_paused)) == NULL
            || v == Py_False) && !PyErr_Occurred()
        && PyDict_GetItemWithError(dict, st->str_stringReceived) == NULL
        && !PyErr_Occurred()
        && PyDict_GetItemWithError(dict, st->str_maxBoxSize) == NULL
        && !PyErr_Occurred()) {
        plain = 1;
        self->plain_dict = dict;
        self->plain_dict_version = version;
    }
    Py_DECREF(dict);
    return PyErr_Occurred() ? -1 : plain;
}

/* The steps stock's dataReceived takes before framing, in its order, for
   a protocol that is not plain: returns NULL to go on and frame here, or
   the call's result (a new reference), or NULL with an exception set. */
static PyObject *
before_framing(module_state *st, CoreObject *self, PyObject *data)
{
    PyObject *me = (PyObject *)self;
    int t;
    /* BinaryBoxProtocol.dataReceived: the first bytes after startTLS end
       the TLS hand-shake window. */
    if ((t = attr_true(me, st->str__justStartedTLS)) < 0
        || (t && PyObject_SetAttr(me, st->str__justStartedTLS, Py_False) < 0)) {
        return NULL;
    }
    if ((t = relay_to_inner(st, me, data)) != 0) {
        return t < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (!resolves_to(me, st->str_stringReceived, st->stock_stringReceived)) {
        return stock_framing(st, me, data);
    }
    return NULL;
}

/* Keep bytes that cannot be parsed now: 1 if kept (given while a scan
   runs, or while paused), 0 if they are to be parsed now, -1 on
   error.  `check_paused` is 0 when self is known not to be paused. */
static int
keep_for_later(module_state *st, CoreObject *self, const unsigned char *buf,
               size_t len, int check_paused)
{
    int paused;
    if (reader_is_busy(&self->reader)) {
        /* Re-entered from code run inside a scan (a box callback, a
           finalizer, the GC): queue behind what is being parsed. */
        return reader_queue(&self->reader, buf, len) < 0 ? -1 : 1;
    }
    if (!check_paused) {
        return 0;
    }
    /* Stock frames nothing while paused, not even the first string. */
    if ((paused = attr_true((PyObject *)self, st->str_paused)) <= 0) {
        return paused;
    }
    return reader_hold(&self->reader, buf, len) < 0 ? -1 : 1;
}

/* The cap for this call's feeds: the plain class's, or self.maxBoxSize
   read as stock reads any attribute.  0, or -1 with an exception set. */
static int
set_box_cap(module_state *st, CoreObject *self, int plain)
{
    PyObject *value;
    size_t cap;
    int rc;
    if (plain) {
        reader_set_cap(&self->reader, self->plain_max_box);
        return 0;
    }
    if ((value = PyObject_GetAttr((PyObject *)self, st->str_maxBoxSize)) == NULL) {
        return -1;
    }
    rc = reader_cap_from_object(value, &cap);
    Py_DECREF(value);
    if (rc == 0) {
        reader_set_cap(&self->reader, cap);
    }
    return rc;
}

/* A box grew past maxBoxSize: drop the connection, as lengthLimitExceeded
   does for an over-long key, keeping the BoxTooLong for connectionLost's
   reason (ampcore/_protocol.py).  Once: later bytes are dropped silently.
   0, or -1 with an exception set. */
static int
report_box_too_big(module_state *st, CoreObject *self)
{
    PyObject *transport, *r;
    if (self->box_too_long != NULL) {
        return 0;
    }
    self->box_too_long = reader_box_too_long(&self->reader, st->BoxTooLong);
    if (self->box_too_long == NULL) {
        return -1;
    }
    if ((transport = PyObject_GetAttr((PyObject *)self, st->str_transport)) == NULL) {
        return -1;
    }
    r = call0(transport, st->str_loseConnection);
    Py_DECREF(transport);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* BinaryBoxProtocol.dataReceived(data) */
static PyObject *
Protocol_dataReceived(CoreObject *self, PyTypeObject *cls,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *data, *me = (PyObject *)self, *r;
    protocol_ctx ctx = {st, me};
    Py_buffer view;
    reader_status rc;
    int plain, kept;

    if (bind_args(&dataReceived_spec, args, nargs, kwnames, &data, NULL,
                  NULL) < 0) {
        return NULL;
    }
    /* One cheap check for the common case (a trickling peer pays it per
       chunk); otherwise stock's steps, one by one. */
    plain = class_is_plain(st, self);
    if (plain && (plain = instance_is_plain(st, self)) < 0) {
        return NULL;
    }
    if (!plain) {
        if ((r = before_framing(st, self, data)) != NULL) {
            return r;
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if ((kept = keep_for_later(st, self, view.buf, (size_t)view.len,
                               !plain)) != 0) {
        PyBuffer_Release(&view);
        return kept < 0 ? NULL : Py_NewRef(Py_None);
    }
    if (set_box_cap(st, self, plain) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    rc = reader_feed(&self->reader, st, view.buf, (size_t)view.len,
                     protocol_sink, &ctx);
    PyBuffer_Release(&view);
    rc = finish_feed(self, &ctx, rc);
    if (rc == READER_ERROR) {
        return NULL;
    }
    /* Stock's framing reports an over-long key on every later chunk too. */
    if (rc == READER_KEY_TOO_LONG
        && reader_report_length_limit(&self->reader, st, me) < 0) {
        return NULL;
    }
    if (rc == READER_BOX_TOO_BIG && report_box_too_big(st, self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ==== sending =========================================================== */

/* BinaryBoxProtocol.sendBox(box) */
static PyObject *
Protocol_sendBox(CoreObject *self, PyTypeObject *cls, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *box, *me = (PyObject *)self, *transport, *buffer, *data, *r;
    int locked;

    if (bind_args(&sendBox_spec, args, nargs, kwnames, &box, NULL, NULL) < 0) {
        return NULL;
    }
    if ((locked = attr_true(me, st->str__locked)) < 0) {
        return NULL;
    }
    if (locked) {
        PyErr_SetString(st->ProtocolSwitched,
                        "This connection has switched: no AMP traffic allowed.");
        return NULL;
    }
    if ((transport = PyObject_GetAttr(me, st->str_transport)) == NULL) {
        return NULL;
    }
    if (transport == Py_None) {
        Py_DECREF(transport);
        PyErr_SetNone(st->ConnectionLost);
        return NULL;
    }
    if ((buffer = PyObject_GetAttr(me, st->str__startingTLSBuffer)) == NULL) {
        Py_DECREF(transport);
        return NULL;
    }
    if (buffer != Py_None) {
        /* TLS is starting: keep the box object itself, as stock does. */
        r = call1(buffer, st->str_append, box);
        Py_DECREF(buffer);
        Py_DECREF(transport);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    Py_DECREF(buffer);
    if (resolves_to(box, st->str_serialize, st->stock_serialize)) {
        data = serialize_box(st, box);
    }
    else {
        data = call0(box, st->str_serialize);
    }
    if (data == NULL) {
        Py_DECREF(transport);
        return NULL;
    }
    /* Exactly one write per box. */
    r = call1(transport, st->str_write, data);
    Py_DECREF(data);
    Py_DECREF(transport);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* ==== recvd ============================================================= */

static PyObject *
Protocol_get_recvd(CoreObject *self, void *Py_UNUSED(closure))
{
    return reader_recvd(&self->reader);
}

/* self.recvd = x inside a callback (or other code run while a chunk is
   parsed) hands the rest of the buffer over (and replaces it with x);
   outside one it replaces what is buffered. */
static int
Protocol_set_recvd(CoreObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    Py_buffer view;
    int rc = 0;
    if (reader_is_busy(&self->reader)) {
        Py_XINCREF(value);
        Py_XSETREF(self->recvd_set, value);
        if (!reader_is_delivering(&self->reader)) {
            /* Not from the box callback, which the sink checks after:
               stop the scan before its next string, as stock checks
               recvd after each string. */
            reader_request_stop(&self->reader);
        }
        return 0;
    }
    reader_reset(&self->reader);
    if (value != NULL && PyObject_CheckBuffer(value)) {
        if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        rc = reader_hold(&self->reader, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    return rc;
}

static PyMethodDef Protocol_methods[] = {
    CORE_METHOD("dataReceived", Protocol_dataReceived,
                "dataReceived($self, data)\n--\n\n"
                "Parse boxes in C and hand each to "
                "self.boxReceiver.ampBoxReceived, or relay to the inner "
                "protocol."),
    CORE_METHOD("sendBox", Protocol_sendBox,
                "sendBox($self, box)\n--\n\n"
                "Serialize box in C and write it once to the transport."),
    {NULL, NULL, 0, NULL}
};

static PyObject *
Protocol_get_boxTooLong(CoreObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->box_too_long != NULL ? self->box_too_long : Py_None);
}

static PyGetSetDef Protocol_getset[] = {
    {"_boxTooLong", (getter)Protocol_get_boxTooLong, NULL,
     "The ampcore.BoxTooLong that made this protocol drop its connection "
     "(a box grew past maxBoxSize), or None.", NULL},
    {"recvd", (getter)Protocol_get_recvd, (setter)Protocol_set_recvd,
     "Bytes received and not yet parsed, as stock's: inside a box "
     "callback, the bytes after that box; between calls, the bytes after "
     "the last complete key or value.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot Protocol_slots[] = {
    {Py_tp_doc, (void *)"C core of ampcore.BinaryBoxProtocol."},
    {Py_tp_methods, Protocol_methods},
    {Py_tp_getset, Protocol_getset},
    {Py_tp_traverse, Core_traverse},
    {Py_tp_clear, Core_clear},
    {0, NULL}
};

static PyType_Spec Protocol_spec = {
    .name = "ampcore._ampcore.ProtocolCore",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Protocol_slots,
};

#endif /* AMPCORE_PROTOCOL_H */
