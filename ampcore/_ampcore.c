/*
 * ampcore._ampcore: the CPython binding over the pure-C wire codec.
 *
 * Multi-phase init (PEP 489), heap types, per-module state; no global
 * mutable state.  Behaviour follows stock Twisted as described in
 * ../shared/amp-spec.md; section references below point there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "codec.h"
#include "state.h"
#include "reader.h"

#define UNUSED(x) (void)(x)

/* ==== serialize ========================================================= */

static int
raise_too_long(module_state *st, int is_key, PyObject *value, PyObject *key)
{
    /* TooLong(isKey, isLocal, value, keyName): the same objects stock
       passes, so `exc.value is` the caller's object (amp-spec §1.2 B4). */
    PyObject *exc = PyObject_CallFunctionObjArgs(
        st->TooLong, is_key ? Py_True : Py_False, Py_True, value,
        key ? key : Py_None, NULL);
    if (exc != NULL) {
        PyErr_SetObject(st->TooLong, exc);
        Py_DECREF(exc);
    }
    return -1;
}

static PyObject *
pack_length(Py_ssize_t n)
{
    char prefix[2] = {(char)((n >> 8) & 0xFF), (char)(n & 0xFF)};
    return PyBytes_FromStringAndSize(prefix, 2);
}

/*
 * The general path, for boxes whose keys or values are not all exact bytes
 * or whose items() may be overridden.  It takes stock's steps in stock's
 * order (amp-spec §1.2 B3): sorted(box.items()), then per pair the str
 * checks, the length checks, and finally b"".join, so every exception
 * (mixed key types failing in the sort, len() of an int, a value join
 * refuses) is the one stock raises.
 */
static PyObject *
serialize_general(module_state *st, PyObject *box)
{
    PyObject *items = NULL, *parts = NULL, *result = NULL, *pair, *k, *v, *t;
    Py_ssize_t i, n, klen, vlen;

    t = PyObject_CallMethodNoArgs(box, st->str_items);
    if (t == NULL) {
        return NULL;
    }
    items = PySequence_List(t);
    Py_DECREF(t);
    if (items == NULL || PyList_Sort(items) < 0) {
        goto done;
    }
    n = PyList_GET_SIZE(items);
    parts = PyList_New(0);
    if (parts == NULL) {
        goto done;
    }
    for (i = 0; i < n; i++) {
        pair = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            /* Anything but a pair: unpack it as stock's `for k, v in`
               does, errors included, with the interpreter's own code. */
            t = PyObject_CallOneArg(st->unpack_pair, pair);
            if (t == NULL) {
                goto done;
            }
            PyList_SET_ITEM(items, i, t);
            Py_DECREF(pair);
            pair = t;
        }
        k = PyTuple_GET_ITEM(pair, 0);
        v = PyTuple_GET_ITEM(pair, 1);
        if (Py_IS_TYPE(k, &PyUnicode_Type)) {
            PyErr_Format(PyExc_TypeError, "Unicode key not allowed: %R", k);
            goto done;
        }
        if (Py_IS_TYPE(v, &PyUnicode_Type)) {
            PyErr_Format(PyExc_TypeError,
                         "Unicode value for key %R not allowed: %R", k, v);
            goto done;
        }
        if ((klen = PyObject_Size(k)) < 0) {
            goto done;
        }
        if (klen > AMP_MAX_KEY_LENGTH) {
            raise_too_long(st, 1, k, NULL);
            goto done;
        }
        if ((vlen = PyObject_Size(v)) < 0) {
            goto done;
        }
        if (vlen > AMP_MAX_VALUE_LENGTH) {
            raise_too_long(st, 0, v, k);
            goto done;
        }
        if ((t = pack_length(klen)) == NULL) {
            goto done;
        }
        if (PyList_Append(parts, t) < 0 || PyList_Append(parts, k) < 0) {
            Py_DECREF(t);
            goto done;
        }
        Py_DECREF(t);
        if ((t = pack_length(vlen)) == NULL) {
            goto done;
        }
        if (PyList_Append(parts, t) < 0 || PyList_Append(parts, v) < 0) {
            Py_DECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    if ((t = pack_length(0)) == NULL) {
        goto done;
    }
    if (PyList_Append(parts, t) < 0) {
        Py_DECREF(t);
        goto done;
    }
    Py_DECREF(t);
    result = PyObject_CallMethodOneArg(st->empty_bytes, st->str_join, parts);
done:
    Py_XDECREF(items);
    Py_XDECREF(parts);
    return result;
}

#define STACK_PAIRS 16

/* AmpBox.serialize for a box object; the fast path covers plain dicts and
   AmpBoxes whose keys and values are all exact bytes. */
static PyObject *
serialize_box(module_state *st, PyObject *box)
{
    amp_pair stack_pairs[STACK_PAIRS], *pairs = stack_pairs;
    PyObject *key, *value, *result = NULL;
    Py_ssize_t pos = 0, n, i = 0;
    size_t bad;

    if (!PyDict_CheckExact(box) && !Py_IS_TYPE(box, st->AmpBox)) {
        return serialize_general(st, box);
    }
    n = PyDict_GET_SIZE(box);
    if (n > STACK_PAIRS) {
        pairs = PyMem_New(amp_pair, (size_t)n);
        if (pairs == NULL) {
            return PyErr_NoMemory();
        }
    }
    /* No user code runs from here to the end: the dict cannot change under
       the borrowed pointers. */
    while (PyDict_Next(box, &pos, &key, &value)) {
        if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(value)) {
            if (pairs != stack_pairs) {
                PyMem_Free(pairs);
            }
            return serialize_general(st, box);
        }
        pairs[i].key = (const unsigned char *)PyBytes_AS_STRING(key);
        pairs[i].key_len = (size_t)PyBytes_GET_SIZE(key);
        pairs[i].value = (const unsigned char *)PyBytes_AS_STRING(value);
        pairs[i].value_len = (size_t)PyBytes_GET_SIZE(value);
        pairs[i].index = (size_t)(pos - 1);
        i++;
    }
    amp_sort_pairs(pairs, (size_t)n);
    switch (amp_check_pairs(pairs, (size_t)n, &bad)) {
    case AMP_PAIRS_OK:
        result = PyBytes_FromStringAndSize(NULL,
                                           (Py_ssize_t)amp_box_size(pairs, (size_t)n));
        if (result != NULL) {
            amp_write_box((unsigned char *)PyBytes_AS_STRING(result), pairs,
                          (size_t)n);
        }
        break;
    case AMP_PAIR_KEY_TOO_LONG:
    case AMP_PAIR_VALUE_TOO_LONG:
        /* Recover the objects: the dict position recorded for this pair. */
        pos = (Py_ssize_t)pairs[bad].index;
        if (PyDict_Next(box, &pos, &key, &value)) {
            if (pairs[bad].key_len > AMP_MAX_KEY_LENGTH) {
                raise_too_long(st, 1, key, NULL);
            }
            else {
                raise_too_long(st, 0, value, key);
            }
        }
        else {
            PyErr_SetString(PyExc_SystemError, "ampcore: box changed size");
        }
        break;
    }
    if (pairs != stack_pairs) {
        PyMem_Free(pairs);
    }
    return result;
}

PyDoc_STRVAR(serialize_doc,
"serialize(box) -> bytes\n\n"
"Encode a box as AmpBox.serialize does: the same bytes (pairs sorted\n"
"bytewise by key) and, for what stock refuses, the same exceptions.");

static PyObject *
ampcore_serialize(PyObject *module, PyObject *box)
{
    return serialize_box(get_state(module), box);
}

/* ==== parse ============================================================= */

PyDoc_STRVAR(parse_doc,
"parse(data) -> list\n\n"
"Decode every complete box in a bytes-like object, as\n"
"twisted.protocols.amp.parseString does: a truncated last box is dropped,\n"
"an empty box is returned as AmpBox().  A key length prefix above 255\n"
"raises ampcore.KeyTooLongError (an AttributeError, like stock's).");

static PyObject *
ampcore_parse(PyObject *module, PyObject *data)
{
    module_state *st = get_state(module);
    box_reader reader;
    Py_buffer view;
    PyObject *boxes;
    size_t off = 0, box_start = 0;
    int rc;

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
    reader_init(&reader);
    rc = reader_scan(&reader, st, (const unsigned char *)view.buf,
                     (size_t)view.len, &off, &box_start, sink_append, boxes);
    if (rc == 2) {
        PyObject *exc = PyObject_CallFunction(st->KeyTooLongError, "nn",
                                              reader.bad_key_length,
                                              (Py_ssize_t)off);
        if (exc != NULL) {
            PyErr_SetObject(st->KeyTooLongError, exc);
            Py_DECREF(exc);
        }
    }
    reader_clear(&reader);
    PyBuffer_Release(&view);
    if (rc == -1 || rc == 2) {
        Py_DECREF(boxes);
        return NULL;
    }
    return boxes;
}

/* ==== BoxParser ========================================================= */

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
BoxParser_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    BoxParserObject *self;
    UNUSED(args);
    UNUSED(kwds);
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

static int
BoxParser_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    UNUSED(self);
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0)
        || PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "BoxParser() takes no arguments");
        return -1;
    }
    return 0;
}

static int
BoxParser_traverse(BoxParserObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->reader.box);
    return 0;
}

static int
BoxParser_clear(BoxParserObject *self)
{
    Py_CLEAR(self->reader.box);
    Py_CLEAR(self->reader.key);
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

static PyObject *
BoxParser_feed(BoxParserObject *self, PyTypeObject *defining_class,
               PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = (module_state *)PyType_GetModuleState(defining_class);
    Py_buffer view;
    PyObject *boxes;
    int rc;

    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "feed() takes exactly one positional argument");
        return NULL;
    }
    if (self->feeding) {
        PyErr_SetString(PyExc_RuntimeError, "BoxParser.feed() re-entered");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
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
    if (rc == -1) {
        self->feeding = 0;
        Py_DECREF(boxes);
        return NULL;
    }
    if (rc == 2 && reader_report_length_limit(&self->reader, st,
                                              (PyObject *)self) < 0) {
        self->feeding = 0;
        Py_DECREF(boxes);
        return NULL;
    }
    self->feeding = 0;
    return boxes;
}

PyDoc_STRVAR(BoxParser_lengthLimitExceeded_doc,
"lengthLimitExceeded(length)\n\n"
"Called when a key length prefix above 255 arrives.  Does nothing;\n"
"override it to act (BinaryBoxProtocol drops the connection).");

static PyObject *
BoxParser_lengthLimitExceeded(PyObject *self, PyObject *length)
{
    UNUSED(self);
    UNUSED(length);
    Py_RETURN_NONE;
}

static PyObject *
BoxParser_get_unprocessed(BoxParserObject *self, void *closure)
{
    UNUSED(closure);
    return reader_unprocessed(&self->reader);
}

static PyObject *
BoxParser_get_keyLengthLimitExceeded(BoxParserObject *self, void *closure)
{
    UNUSED(closure);
    return PyBool_FromLong(self->reader.bad_key_length >= 0);
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

#include "protocol.h"

/* ==== module ============================================================ */

static PyMethodDef ampcore_methods[] = {
    {"serialize", ampcore_serialize, METH_O, serialize_doc},
    {"parse", ampcore_parse, METH_O, parse_doc},
    {NULL, NULL, 0, NULL}
};

/* `def unpack(item): k, v = item; return k, v`, compiled once: the odd
   items() of a box subclass then fail exactly as under stock. */
static int
unpack_pair_init(module_state *st)
{
    PyObject *globals = PyDict_New(), *r;
    if (globals == NULL) {
        return -1;
    }
    if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
        Py_DECREF(globals);
        return -1;
    }
    r = PyRun_String("def unpack(item):\n    k, v = item\n    return k, v\n",
                     Py_file_input, globals, globals);
    if (r == NULL) {
        Py_DECREF(globals);
        return -1;
    }
    Py_DECREF(r);
    st->unpack_pair = PyDict_GetItemString(globals, "unpack");
    Py_XINCREF(st->unpack_pair);
    Py_DECREF(globals);
    return st->unpack_pair == NULL ? -1 : 0;
}

static int
ampcore_exec(PyObject *module)
{
    module_state *st = get_state(module);
    if (state_init(st) < 0 || unpack_pair_init(st) < 0) {
        return -1;
    }
    st->BoxParserType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &BoxParser_spec, NULL);
    if (st->BoxParserType == NULL
        || PyModule_AddType(module, st->BoxParserType) < 0) {
        return -1;
    }
    return protocol_types_init(module, st);
}

static int
ampcore_traverse(PyObject *module, visitproc visit, void *arg)
{
    return state_traverse(get_state(module), visit, arg);
}

static int
ampcore_clear(PyObject *module)
{
    state_clear(get_state(module));
    return 0;
}

static void
ampcore_free(void *module)
{
    ampcore_clear((PyObject *)module);
}

static PyModuleDef_Slot ampcore_slots[] = {
    {Py_mod_exec, ampcore_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL}
};

static struct PyModuleDef ampcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ampcore._ampcore",
    .m_doc = "C core of ampcore: AMP box parsing and serialization.",
    .m_size = sizeof(module_state),
    .m_methods = ampcore_methods,
    .m_slots = ampcore_slots,
    .m_traverse = ampcore_traverse,
    .m_clear = ampcore_clear,
    .m_free = ampcore_free,
};

PyMODINIT_FUNC
PyInit__ampcore(void)
{
    return PyModuleDef_Init(&ampcore_module);
}
