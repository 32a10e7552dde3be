/*
 * ampcore._ampcore: Core, the instance layout under ampcore's dispatcher
 * and protocol.
 *
 * ampcore.BoxDispatcher, ampcore.BinaryBoxProtocol and ampcore.AMP put a C
 * type in front of Twisted's class of the same name (ampcore/_protocol.py).
 * AMP inherits from both C types, so both share one layout, this one: the
 * protocol's box reader, the dispatcher's tag counter, and the `recvd`
 * hand-over for protocol switching.
 */
#ifndef AMPCORE_CORE_H
#define AMPCORE_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

#include "reader.h"

typedef struct {
    PyObject_HEAD
    box_reader reader;
    /* _counter, the last tag number handed out: in counter while it is an
       exact int from 0 to INT64_MAX and counter_obj is NULL (the common
       case, counted in C), else the object itself in counter_obj, as
       stock's `self._counter` holds whatever it was given.  counter_own
       says whether the instance has a _counter of its own (stock: in its
       __dict__, shadowing the class's 0), which `del` needs. */
    int64_t counter;
    PyObject *counter_obj;
    int counter_own;
    PyObject *recvd_set;         /* what a callback assigned to self.recvd */
    /* What protocol.h saw frame as stock does, so that a trickling peer
       does not pay for the checks on every chunk: the class's version tag
       (or 0), and the instance dict (compared, never used) with its version
       tag (or 0). */
    unsigned int plain_class;
    PyObject *plain_dict;
    uint64_t plain_dict_version;
    size_t plain_max_box;        /* the plain class's maxBoxSize, as a cap */
    PyObject *box_too_long;      /* the BoxTooLong that dropped us, or NULL */
} CoreObject;

static PyObject *
Core_new(PyTypeObject *type, PyObject *Py_UNUSED(args),
         PyObject *Py_UNUSED(kwds))
{
    CoreObject *self = (CoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    reader_init(&self->reader);
    self->counter = 0;
    self->counter_obj = NULL;
    self->counter_own = 0;
    self->recvd_set = NULL;
    self->plain_class = 0;
    self->plain_dict = NULL;
    self->plain_dict_version = 0;
    self->plain_max_box = BOX_SIZE_UNLIMITED;
    self->box_too_long = NULL;
    return (PyObject *)self;
}

static int
Core_traverse(CoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->recvd_set);
    Py_VISIT(self->box_too_long);
    Py_VISIT(self->counter_obj);
    return reader_traverse(&self->reader, visit, arg);
}

static int
Core_clear(CoreObject *self)
{
    reader_clear_refs(&self->reader);
    Py_CLEAR(self->recvd_set);
    Py_CLEAR(self->box_too_long);
    Py_CLEAR(self->counter_obj);
    return 0;
}

static void
Core_dealloc(CoreObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (tp->tp_weaklistoffset) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    reader_clear(&self->reader);
    Py_CLEAR(self->recvd_set);
    Py_CLEAR(self->box_too_long);
    Py_CLEAR(self->counter_obj);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot Core_slots[] = {
    {Py_tp_doc, (void *)"Instance layout shared by ampcore's dispatcher and protocol."},
    {Py_tp_new, Core_new},
    {Py_tp_dealloc, Core_dealloc},
    {Py_tp_traverse, Core_traverse},
    {Py_tp_clear, Core_clear},
    {0, NULL}
};

static PyType_Spec Core_spec = {
    .name = "ampcore._ampcore.Core",
    .basicsize = sizeof(CoreObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Core_slots,
};

/* The C methods of the dispatcher and the protocol: fast-call methods that
   are told their defining class, whose module state they use. */
#define CORE_METHOD(pyname, cname, doc)                                 \
    {pyname, (PyCFunction)(void (*)(void))cname,                        \
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS, doc}

#endif /* AMPCORE_CORE_H */
