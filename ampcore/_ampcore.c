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

#define UNUSED(x) (void)(x)

/* ==== module state ====================================================== */

typedef struct {
    PyTypeObject *AmpBox;          /* twisted.protocols.amp.AmpBox */
    PyObject *TooLong;             /* twisted.protocols.amp.TooLong */
    PyObject *KeyTooLongError;     /* ampcore._errors.KeyTooLongError */
    PyTypeObject *BoxParserType;
    PyObject *empty_tuple;
    PyObject *empty_bytes;
    PyObject *str_items;
    PyObject *str_join;
    PyObject *str_lengthLimitExceeded;
} module_state;

static struct PyModuleDef ampcore_module;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

static inline module_state *
state_from_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &ampcore_module);
    return module ? get_state(module) : NULL;
}

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
            rc = sink(ctx, box);
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

static PyObject *
reader_unprocessed(box_reader *r)
{
    return PyBytes_FromStringAndSize((const char *)r->pending.data,
                                     (Py_ssize_t)r->pending.len);
}

static int
sink_append(void *list, PyObject *box)
{
    return PyList_Append((PyObject *)list, box);
}

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
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_ValueError,
                            "box items must be (key, value) pairs");
            goto done;
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
    PyObject *boxes, *r;
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
    self->feeding = 1;
    rc = reader_feed(&self->reader, st, (const unsigned char *)view.buf,
                     (size_t)view.len, sink_append, boxes);
    self->feeding = 0;
    PyBuffer_Release(&view);
    if (rc == -1) {
        Py_DECREF(boxes);
        return NULL;
    }
    if (rc == 2) {
        PyObject *length = PyLong_FromSsize_t(self->reader.bad_key_length);
        if (length == NULL) {
            Py_DECREF(boxes);
            return NULL;
        }
        r = PyObject_CallMethodOneArg((PyObject *)self,
                                      st->str_lengthLimitExceeded, length);
        Py_DECREF(length);
        if (r == NULL) {
            Py_DECREF(boxes);
            return NULL;
        }
        Py_DECREF(r);
    }
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

/* ==== module ============================================================ */

static PyMethodDef ampcore_methods[] = {
    {"serialize", ampcore_serialize, METH_O, serialize_doc},
    {"parse", ampcore_parse, METH_O, parse_doc},
    {NULL, NULL, 0, NULL}
};

static PyObject *
import_attr(const char *module_name, const char *attr)
{
    PyObject *module = PyImport_ImportModule(module_name);
    PyObject *value;
    if (module == NULL) {
        return NULL;
    }
    value = PyObject_GetAttrString(module, attr);
    Py_DECREF(module);
    return value;
}

static int
ampcore_exec(PyObject *module)
{
    module_state *st = get_state(module);

    st->AmpBox = (PyTypeObject *)import_attr("twisted.protocols.amp", "AmpBox");
    if (st->AmpBox == NULL) {
        return -1;
    }
    if (!PyType_Check(st->AmpBox)
        || !PyType_IsSubtype(st->AmpBox, &PyDict_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "twisted.protocols.amp.AmpBox is not a dict subclass");
        return -1;
    }
    st->TooLong = import_attr("twisted.protocols.amp", "TooLong");
    if (st->TooLong == NULL) {
        return -1;
    }
    st->KeyTooLongError = import_attr("ampcore._errors", "KeyTooLongError");
    if (st->KeyTooLongError == NULL) {
        return -1;
    }
    if ((st->empty_tuple = PyTuple_New(0)) == NULL
        || (st->empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL
        || (st->str_items = PyUnicode_InternFromString("items")) == NULL
        || (st->str_join = PyUnicode_InternFromString("join")) == NULL
        || (st->str_lengthLimitExceeded =
                PyUnicode_InternFromString("lengthLimitExceeded")) == NULL) {
        return -1;
    }
    st->BoxParserType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &BoxParser_spec, NULL);
    if (st->BoxParserType == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->BoxParserType) < 0) {
        return -1;
    }
    return 0;
}

static int
ampcore_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_state(module);
    Py_VISIT(st->AmpBox);
    Py_VISIT(st->TooLong);
    Py_VISIT(st->KeyTooLongError);
    Py_VISIT(st->BoxParserType);
    return 0;
}

static int
ampcore_clear(PyObject *module)
{
    module_state *st = get_state(module);
    Py_CLEAR(st->AmpBox);
    Py_CLEAR(st->TooLong);
    Py_CLEAR(st->KeyTooLongError);
    Py_CLEAR(st->BoxParserType);
    Py_CLEAR(st->empty_tuple);
    Py_CLEAR(st->empty_bytes);
    Py_CLEAR(st->str_items);
    Py_CLEAR(st->str_join);
    Py_CLEAR(st->str_lengthLimitExceeded);
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
