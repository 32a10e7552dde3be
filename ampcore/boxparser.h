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

/* The sink that collects boxes into a list. */
static sink_action
sink_append(void *list, PyObject *box)
{
    return PyList_Append((PyObject *)list, box) < 0 ? SINK_ERROR : SINK_CONTINUE;
}

PyDoc_STRVAR(parse_doc,
"parse(data) -> list\n\n"
"Decode every complete box in a bytes-like object, as\n"
"twisted.protocols.amp.parseString does: a truncated last box is dropped,\n"
"an empty box is returned as AmpBox().  A key length prefix above 255\n"
"raises ampcore.KeyTooLongError (an AttributeError, like stock's).");

static PyObject *
module_parse(PyObject *module, PyObject *data)
{
    module_state *st = get_state(module);
    box_reader reader;
    Py_buffer view;
    PyObject *boxes, *exc;
    size_t off = 0, box_start = 0;
    reader_status rc;

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
    reader_init(&reader);
    rc = reader_scan(&reader, st, (const unsigned char *)view.buf,
                     (size_t)view.len, &off, &box_start, sink_append, boxes);
    if (rc == READER_KEY_TOO_LONG) {
        exc = PyObject_CallFunction(st->KeyTooLongError, "nn",
                                    reader_bad_key_length(&reader),
                                    (Py_ssize_t)off);
        if (exc != NULL) {
            PyErr_SetObject(st->KeyTooLongError, exc);
            Py_DECREF(exc);
        }
    }
    reader_clear(&reader);
    PyBuffer_Release(&view);
    if (rc == READER_ERROR || rc == READER_KEY_TOO_LONG) {
        Py_DECREF(boxes);
        return NULL;
    }
    return boxes;
}

typedef struct {
    PyObject_HEAD
    box_reader reader;
    int feeding;     /* set while feed() runs: a re-entrant feed is refused */
} BoxParserObject;

PyDoc_STRVAR(BoxParser_doc,
"BoxParser()\n\n"
"An incremental AMP box parser.  feed() it bytes split anywhere; it\n"
"returns the boxes completed so far.  Time is linear in the bytes fed\n"
"whatever the chunking, and memory is bounded by the box being assembled.\n\n"
"A key length prefix above 255 is reported as BinaryBoxProtocol reports\n"
"it: the boxes before it are returned, keyLengthLimitExceeded becomes\n"
"true and self.lengthLimitExceeded(length) is called, again on every\n"
"later feed, whose bytes are discarded.");

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
    self->feeding = 0;
    return (PyObject *)self;
}

/* BoxParser() takes no arguments, as the fallback's __init__(self). */
static const arg_spec BoxParser_init_spec = {"BoxParser.__init__", NULL, 0, 0, 1};

static int
BoxParser_init(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwds)
{
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0)
        || PyTuple_GET_SIZE(args) != 0) {
        PyObject *kwnames = NULL, *const *argv;
        PyObject *vector[1] = {NULL};
        Py_ssize_t nargs = PyTuple_GET_SIZE(args);
        int rc;
        /* Only the error message is wanted: bind what was given. */
        if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
            kwnames = PyDict_Keys(kwds);
            if (kwnames == NULL) {
                return -1;
            }
            Py_SETREF(kwnames, PySequence_Tuple(kwnames));
            if (kwnames == NULL) {
                return -1;
            }
        }
        argv = nargs ? &PyTuple_GET_ITEM(args, 0) : vector;
        rc = bind_args(&BoxParser_init_spec, argv, nargs, kwnames, NULL,
                       NULL, NULL);
        Py_XDECREF(kwnames);
        return rc;
    }
    return 0;
}

static int
BoxParser_traverse(BoxParserObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return reader_traverse(&self->reader, visit, arg);
}

static int
BoxParser_clear(BoxParserObject *self)
{
    reader_clear_refs(&self->reader);
    return 0;
}

static void
BoxParser_dealloc(BoxParserObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    reader_clear(&self->reader);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(BoxParser_feed_doc,
"feed(data) -> list\n\n"
"Parse a chunk of a byte stream; return the boxes it completed, in order.");

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
    boxes = PyList_New(0);
    if (boxes == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* Held through the lengthLimitExceeded call too: a callback that fed
       us again would only be told again, without end. */
    self->feeding = 1;
    rc = reader_feed(&self->reader, st, (const unsigned char *)view.buf,
                     (size_t)view.len, sink_append, boxes);
    PyBuffer_Release(&view);
    if (rc == READER_KEY_TOO_LONG
        && reader_report_length_limit(&self->reader, st, (PyObject *)self) < 0) {
        rc = READER_ERROR;
    }
    self->feeding = 0;
    if (rc == READER_ERROR) {
        Py_DECREF(boxes);
        return NULL;
    }
    return boxes;
}

PyDoc_STRVAR(BoxParser_lengthLimitExceeded_doc,
"lengthLimitExceeded(length)\n\n"
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

static PyGetSetDef BoxParser_getset[] = {
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
