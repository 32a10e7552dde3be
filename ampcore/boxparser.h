/*
 * ampcore._ampcore: the BoxParser type and parse(), the box reader for
 * callers that are not a protocol: boxes are collected into a list.
 */
#ifndef AMPCORE_BOXPARSER_H
#define AMPCORE_BOXPARSER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "calls.h"
#include "reader.h"
#include "state.h"

/* Where the sink collects boxes: a list, and a slot for the box the list
   had no memory for (or NULL, to drop it). */
typedef struct {
    PyObject *list;
    PyObject **stash;
} collector;

/* The sink that collects boxes into a list. */
static sink_action
sink_append(void *arg, PyObject *box)
{
    collector *c = (collector *)arg;
    if (PyList_Append(c->list, box) < 0) {
        if (c->stash != NULL && *c->stash == NULL) {
            *c->stash = box;   /* not lost: the next feed hands it out */
        }
        else {
            Py_DECREF(box);
        }
        return SINK_ERROR;
    }
    Py_DECREF(box);
    return SINK_CONTINUE;
}

/* The default maxBoxSize: ampcore._errors.DEFAULT_MAX_BOX_SIZE. */
#define DEFAULT_MAX_BOX_SIZE ((size_t)64 * 1024 * 1024)

/* Raise the BoxTooLong for a reader that stopped on a box too big. */
static void
raise_box_too_big(module_state *st, const box_reader *r)
{
    PyObject *exc = reader_box_too_long(r, st->BoxTooLong);
    if (exc != NULL) {
        PyErr_SetObject(st->BoxTooLong, exc);
        Py_DECREF(exc);
    }
}

PyDoc_STRVAR(parse_doc,
"parse($module, data, maxBoxSize=67108864)\n--\n\n"
"Decode every complete box in a bytes-like object, as\n"
"twisted.protocols.amp.parseString does: a truncated last box is dropped,\n"
"an empty box is returned as AmpBox().  A key length prefix above 255\n"
"raises ampcore.KeyTooLongError (an AttributeError, like stock's).  A box\n"
"that would cost more than maxBoxSize (None: no cap) raises\n"
"ampcore.BoxTooLong.");

static const char *const parse_params[] = {"data", "maxBoxSize"};
static const arg_spec parse_spec = {"parse", parse_params, 2, 1, 0};

static PyObject *
module_parse(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    module_state *st = get_state(module);
    box_reader reader;
    Py_buffer view;
    PyObject *boxes, *exc, *argv[2] = {NULL, NULL}, *data;
    size_t off = 0, box_start = 0, cap = DEFAULT_MAX_BOX_SIZE;
    collector c;
    reader_status rc;

    if (bind_args(&parse_spec, args, nargs, kwnames, argv, NULL, NULL) < 0) {
        return NULL;
    }
    data = argv[0];
    if (argv[1] != NULL && reader_cap_from_object(argv[1], &cap) < 0) {
        return NULL;
    }
    if (data == Py_None) {
        /* parseString(None) is BytesIO(None): no bytes, no boxes. */
        return PyList_New(0);
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    boxes = PyList_New(0);
    if (boxes == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* One buffer, scanned in place: nothing is kept after it. */
    c.list = boxes;
    c.stash = NULL;
    reader_init(&reader);
    reader_set_cap(&reader, cap);
    rc = reader_scan(&reader, st, (const unsigned char *)view.buf,
                     (size_t)view.len, &off, &box_start, sink_append, &c);
    if (rc == READER_KEY_TOO_LONG) {
        exc = PyObject_CallFunction(st->KeyTooLongError, "nn",
                                    reader_bad_key_length(&reader),
                                    (Py_ssize_t)off);
        if (exc != NULL) {
            PyErr_SetObject(st->KeyTooLongError, exc);
            Py_DECREF(exc);
        }
    }
    else if (rc == READER_BOX_TOO_BIG) {
        raise_box_too_big(st, &reader);
    }
    reader_clear(&reader);
    PyBuffer_Release(&view);
    if (rc == READER_ERROR || rc == READER_KEY_TOO_LONG
        || rc == READER_BOX_TOO_BIG) {
        Py_DECREF(boxes);
        return NULL;
    }
    return boxes;
}

typedef struct {
    PyObject_HEAD
    box_reader reader;
    int feeding;     /* set while feed() runs: a re-entrant feed is refused */
    PyObject *kept;  /* boxes a failed feed() completed, for the next one */
    PyObject *stashed;  /* a box that feed() had no memory to list */
    int too_big_raised;
} BoxParserObject;

PyDoc_STRVAR(BoxParser_doc,
"BoxParser(maxBoxSize=67108864)\n--\n\n"
"An incremental AMP box parser.  feed() it bytes split anywhere; it\n"
"returns the boxes completed so far.  Time is linear in the bytes fed\n"
"whatever the chunking, and memory is bounded by the box being assembled.\n\n"
"A key length prefix above 255 is reported as BinaryBoxProtocol reports\n"
"it: the boxes before it are returned, keyLengthLimitExceeded becomes\n"
"true and self.lengthLimitExceeded(length) is called, again on every\n"
"later feed, whose bytes are discarded.\n\n"
"A box that would cost more than maxBoxSize (None: no cap) makes feed()\n"
"raise ampcore.BoxTooLong; later feeds discard their bytes.");

static PyObject *
BoxParser_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
              PyObject *Py_UNUSED(kwds))
{
    BoxParserObject *self;
    if (state_from_type(type) == NULL) {
        return NULL;
    }
    self = (BoxParserObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    reader_init(&self->reader);
    /* unprocessed shows the raw bytes of the box in progress. */
    self->reader.keep_box_bytes = 1;
    reader_set_cap(&self->reader, DEFAULT_MAX_BOX_SIZE);
    self->feeding = 0;
    self->kept = NULL;
    self->stashed = NULL;
    self->too_big_raised = 0;
    return (PyObject *)self;
}

static const char *const BoxParser_init_params[] = {"maxBoxSize"};
static const arg_spec BoxParser_init_spec = {
    "BoxParser.__init__", BoxParser_init_params, 1, 0, 1};

/* BoxParser(maxBoxSize=67108864) */
static int
BoxParser_init(BoxParserObject *self, PyObject *args, PyObject *kwds)
{
    PyObject *kwnames = NULL, **vector, *out[1] = {NULL}, *key, *value;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args), nkw = 0, i, pos = 0;
    size_t cap = DEFAULT_MAX_BOX_SIZE;
    int rc = -1;

    if (kwds != NULL) {
        nkw = PyDict_GET_SIZE(kwds);
    }
    /* Lay the call out as a vectorcall, for the one binder. */
    if ((vector = PyMem_New(PyObject *, nargs + nkw + 1)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < nargs; i++) {
        vector[i] = PyTuple_GET_ITEM(args, i);
    }
    if (nkw && (kwnames = PyTuple_New(nkw)) == NULL) {
        goto done;
    }
    for (i = 0; nkw && PyDict_Next(kwds, &pos, &key, &value); i++) {
        PyTuple_SET_ITEM(kwnames, i, Py_NewRef(key));
        vector[nargs + i] = value;
    }
    if (bind_args(&BoxParser_init_spec, vector, nargs, kwnames, out, NULL,
                  NULL) < 0
        || (out[0] != NULL && reader_cap_from_object(out[0], &cap) < 0)) {
        goto done;
    }
    reader_set_cap(&self->reader, cap);
    rc = 0;
done:
    Py_XDECREF(kwnames);
    PyMem_Free(vector);
    return rc;
}

static int
BoxParser_traverse(BoxParserObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->kept);
    Py_VISIT(self->stashed);
    return reader_traverse(&self->reader, visit, arg);
}

static int
BoxParser_clear(BoxParserObject *self)
{
    reader_clear_refs(&self->reader);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->stashed);
    return 0;
}

static void
BoxParser_dealloc(BoxParserObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    reader_clear(&self->reader);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->stashed);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(BoxParser_feed_doc,
"feed($self, data)\n--\n\n"
"Parse a chunk of a byte stream; return the boxes it completed, in order.\n"
"When feed() raises (MemoryError, BoxTooLong, an error from\n"
"lengthLimitExceeded), the boxes it had completed are not lost: the next\n"
"feed() returns them first.");

static const char *const BoxParser_feed_params[] = {"data"};
static const arg_spec BoxParser_feed_spec = {
    "BoxParser.feed", BoxParser_feed_params, 1, 1, 1};

static PyObject *
BoxParser_feed(BoxParserObject *self, PyTypeObject *defining_class,
               PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(defining_class);
    PyObject *data, *boxes;
    Py_buffer view;
    reader_status rc;
    collector c;

    if (bind_args(&BoxParser_feed_spec, args, nargs, kwnames, &data, NULL,
                  NULL) < 0) {
        return NULL;
    }
    if (self->feeding) {
        PyErr_SetString(PyExc_RuntimeError, "BoxParser.feed() re-entered");
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    /* The boxes a failed feed completed come first. */
    boxes = self->kept != NULL ? self->kept : PyList_New(0);
    self->kept = NULL;
    if (boxes == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (self->stashed != NULL) {
        if (PyList_Append(boxes, self->stashed) < 0) {
            self->kept = boxes;
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_CLEAR(self->stashed);
    }
    c.list = boxes;
    c.stash = &self->stashed;
    /* Held through the lengthLimitExceeded call too: a callback that fed
       us again would only be told again, without end. */
    self->feeding = 1;
    rc = reader_feed(&self->reader, st, (const unsigned char *)view.buf,
                     (size_t)view.len, sink_append, &c);
    PyBuffer_Release(&view);
    if (rc == READER_KEY_TOO_LONG
        && reader_report_length_limit(&self->reader, st, (PyObject *)self) < 0) {
        rc = READER_ERROR;
    }
    if (rc == READER_BOX_TOO_BIG) {
        if (self->too_big_raised
            && (PyList_GET_SIZE(boxes) != 0 || self->stashed != NULL)) {
            /* Raised already: hand out what that call kept. */
            rc = READER_NEED_MORE;
        }
        else {
            self->too_big_raised = 1;
            raise_box_too_big(st, &self->reader);
            rc = READER_ERROR;
        }
    }
    self->feeding = 0;
    if (rc == READER_ERROR) {
        if (PyList_GET_SIZE(boxes) != 0 || self->stashed != NULL) {
            self->kept = boxes;
        }
        else {
            Py_DECREF(boxes);
        }
        return NULL;
    }
    return boxes;
}

PyDoc_STRVAR(BoxParser_lengthLimitExceeded_doc,
"lengthLimitExceeded($self, length, /)\n--\n\n"
"Called when a key length prefix above 255 arrives.  Does nothing;\n"
"override it to act (BinaryBoxProtocol drops the connection).");

static PyObject *
BoxParser_lengthLimitExceeded(PyObject *Py_UNUSED(self),
                              PyObject *Py_UNUSED(length))
{
    Py_RETURN_NONE;
}

static PyObject *
BoxParser_get_unprocessed(BoxParserObject *self, void *Py_UNUSED(closure))
{
    return reader_box_in_progress(&self->reader);
}

static PyObject *
BoxParser_get_keyLengthLimitExceeded(BoxParserObject *self,
                                     void *Py_UNUSED(closure))
{
    return PyBool_FromLong(reader_bad_key_length(&self->reader) >= 0);
}

static PyMethodDef BoxParser_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))BoxParser_feed,
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS, BoxParser_feed_doc},
    {"lengthLimitExceeded", BoxParser_lengthLimitExceeded, METH_O,
     BoxParser_lengthLimitExceeded_doc},
    {NULL, NULL, 0, NULL}
};

static PyObject *
BoxParser_get_maxBoxSize(BoxParserObject *self, void *Py_UNUSED(closure))
{
    return reader_cap_to_object(self->reader.max_box);
}

static int
BoxParser_set_maxBoxSize(BoxParserObject *self, PyObject *value,
                         void *Py_UNUSED(closure))
{
    size_t cap;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "maxBoxSize cannot be deleted");
        return -1;
    }
    if (reader_cap_from_object(value, &cap) < 0) {
        return -1;
    }
    reader_set_cap(&self->reader, cap);
    return 0;
}

static PyGetSetDef BoxParser_getset[] = {
    {"maxBoxSize", (getter)BoxParser_get_maxBoxSize,
     (setter)BoxParser_set_maxBoxSize,
     "The most one box may cost (its keys and values, each counted as its "
     "length plus ampcore.BOX_STRING_COST), or None for no cap.  A box "
     "that would cost more makes feed() raise ampcore.BoxTooLong.", NULL},
    {"unprocessed", (getter)BoxParser_get_unprocessed, NULL,
     "The bytes received after the last complete box (a box in progress).",
     NULL},
    {"keyLengthLimitExceeded", (getter)BoxParser_get_keyLengthLimitExceeded,
     NULL, "True once a key length prefix above 255 has arrived.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot BoxParser_slots[] = {
    {Py_tp_doc, (void *)BoxParser_doc},
    {Py_tp_new, BoxParser_new},
    {Py_tp_init, BoxParser_init},
    {Py_tp_dealloc, BoxParser_dealloc},
    {Py_tp_traverse, BoxParser_traverse},
    {Py_tp_clear, BoxParser_clear},
    {Py_tp_methods, BoxParser_methods},
    {Py_tp_getset, BoxParser_getset},
    {0, NULL}
};

static PyType_Spec BoxParser_spec = {
    .name = "ampcore._ampcore.BoxParser",
    .basicsize = sizeof(BoxParserObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = BoxParser_slots,
};

#endif /* AMPCORE_BOXPARSER_H */
