/*
 * ampcore._ampcore: the C cores under ampcore.BoxDispatcher,
 * ampcore.BinaryBoxProtocol and ampcore.AMP (one compilation unit: included
 * by _ampcore.c only).
 *
 * Core             the instance layout: box reader, tag counter, the `recvd`
 *                  hand-over for protocol switching.
 * DispatcherCore   BoxDispatcher's hot methods (amp-spec §2).
 * ProtocolCore     BinaryBoxProtocol's dataReceived and sendBox (§1.3-§1.5).
 *
 * The Python classes in ampcore/_protocol.py put these in front of Twisted's
 * own classes, which supply everything else (TLS, switching, descriptors,
 * locators, logging of connection events).  Every callback into Python is
 * looked up on each use, as stock does, so overrides at class or instance
 * level are honoured; a C shortcut is taken only after checking that the
 * name still resolves to the stock or C implementation.
 */
#ifndef AMPCORE_PROTOCOL_H
#define AMPCORE_PROTOCOL_H

#include "state.h"
#include "reader.h"

typedef struct {
    PyObject_HEAD
    box_reader reader;
    unsigned long long counter;  /* _counter: the last tag handed out */
    PyObject *recvd_set;         /* what a callback assigned to self.recvd */
    amp_buf queued;              /* bytes given to a re-entrant dataReceived */
} CoreObject;

/* ==== helpers =========================================================== */

static inline PyObject *
call0(PyObject *obj, PyObject *name)
{
    return PyObject_CallMethodNoArgs(obj, name);
}

static inline PyObject *
call1(PyObject *obj, PyObject *name, PyObject *arg)
{
    return PyObject_CallMethodOneArg(obj, name, arg);
}

/* Call a method and drop its result: 0, or -1 with an exception set. */
static inline int
call1_void(PyObject *obj, PyObject *name, PyObject *arg)
{
    PyObject *r = call1(obj, name, arg);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* 1 if getattr(obj, name) is truthy, 0 if not, -1 on error. */
static int
attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    int t;
    if (v == NULL) {
        return -1;
    }
    t = (v == Py_False || v == Py_None) ? 0 : (v == Py_True ? 1 : PyObject_IsTrue(v));
    Py_DECREF(v);
    return t;
}

/* Does `name` on `self` still resolve to `expected` (found on the type,
   with no instance attribute shadowing it)?  Used to gate C shortcuts. */
static int
resolves_to(PyObject *self, PyObject *name, PyObject *expected)
{
    PyObject *dict, *found;
    PyTypeObject *tp = Py_TYPE(self);
    if (expected == NULL || _PyType_Lookup(tp, name) != expected) {
        return 0;
    }
    if (tp->tp_dictoffset == 0
#ifdef Py_TPFLAGS_MANAGED_DICT
        && !(tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)
#endif
    ) {
        /* No instance dict (AmpBox has empty __slots__): nothing can
           shadow the type's attribute, and asking for one would raise. */
        return 1;
    }
    dict = PyObject_GenericGetDict(self, NULL);
    if (dict == NULL) {
        PyErr_Clear();
        return 1;
    }
    found = PyDict_GetItemWithError(dict, name);
    Py_DECREF(dict);
    if (found == NULL && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return found == NULL;
}

/* Turn the exception being raised into a twisted Failure (new reference),
   as maybeDeferred's `except: Failure()` would; NULL if that fails. */
static PyObject *
failure_from_error(module_state *st)
{
    PyObject *type, *value, *tb, *failure;
#if PY_VERSION_HEX >= 0x030C0000
    value = PyErr_GetRaisedException();
    type = value ? Py_NewRef((PyObject *)Py_TYPE(value)) : NULL;
    tb = value ? PyException_GetTraceback(value) : NULL;
#else
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
#endif
    failure = PyObject_CallFunctionObjArgs(st->Failure, value ? value : Py_None,
                                           type ? type : Py_None,
                                           tb ? tb : Py_None, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return failure;
}

/* The end of a server-side chain whose Deferred stock would have left
   failed: pass the failure to self.unhandledError; if that raises too,
   leave the new failure in a dropped Deferred, where stock leaves it (it is
   reported when collected). */
static int
hand_to_unhandled(module_state *st, PyObject *self, PyObject *failure)
{
    PyObject *r = call1(self, st->str_unhandledError, failure);
    if (r == NULL) {
        PyObject *again = failure_from_error(st);
        if (again == NULL) {
            return -1;
        }
        r = PyObject_CallOneArg(st->fail, again);
        Py_DECREF(again);
        if (r == NULL) {
            return -1;
        }
    }
    Py_DECREF(r);
    return 0;
}

/* The same, for the exception being raised now. */
static int
error_to_unhandled(module_state *st, PyObject *self)
{
    PyObject *failure = failure_from_error(st);
    int rc;
    if (failure == NULL) {
        return -1;
    }
    rc = hand_to_unhandled(st, self, failure);
    Py_DECREF(failure);
    return rc;
}

/* Python's own "missing ... argument(s): 'a', 'b', and 'c'" message. */
static void
raise_missing(const char *fname, const char *const *names, Py_ssize_t nparams,
              PyObject **out)
{
    const char *missing[8];
    Py_ssize_t i, n = 0;
    char list[256] = "";
    for (i = 0; i < nparams && n < 8; i++) {
        if (out[i] == NULL) {
            missing[n++] = names[i];
        }
    }
    for (i = 0; i < n; i++) {
        size_t used = strlen(list);
        const char *sep = i == 0 ? "" : (n == 2 ? " and " : (i == n - 1 ? ", and " : ", "));
        snprintf(list + used, sizeof(list) - used, "%s'%s'", sep, missing[i]);
    }
    PyErr_Format(PyExc_TypeError,
                 "%s() missing %zd required positional argument%s: %s", fname,
                 n, n == 1 ? "" : "s", list);
}

/*
 * Fast-call argument binding for positional-or-keyword parameters, the
 * first `required` of them required.  fname is the stock method's
 * qualified name: the errors read as Python's do for stock's method (which
 * counts self among the positional arguments).
 */
static int
bind_args(const char *fname, const char *const *names, Py_ssize_t nparams,
          Py_ssize_t required, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, PyObject **out)
{
    Py_ssize_t i, j, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > nparams) {
        if (required == nparams) {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes %zd positional argument%s but %zd were given",
                         fname, nparams + 1, nparams == 0 ? "" : "s", nargs + 1);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes from %zd to %zd positional arguments but "
                         "%zd were given", fname, required + 1, nparams + 1,
                         nargs + 1);
        }
        return -1;
    }
    for (i = 0; i < nparams; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    for (j = 0; j < nkw; j++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, j);
        for (i = 0; i < nparams; i++) {
            if (PyUnicode_CompareWithASCIIString(kw, names[i]) == 0) {
                break;
            }
        }
        if (i == nparams) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%U'", fname, kw);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'", fname,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + j];
    }
    for (i = 0; i < required; i++) {
        if (out[i] == NULL) {
            raise_missing(fname, names, required, out);
            return -1;
        }
    }
    return 0;
}

/* table.pop(tag), with dict's own code for a real dict. */
static PyObject *
pop_request(module_state *st, PyObject *table, PyObject *tag)
{
    PyObject *d;
    if (!PyDict_CheckExact(table)) {
        /* None after failAllOutgoing: AttributeError, as stock. */
        return call1(table, st->str_pop, tag);
    }
    d = PyDict_GetItemWithError(table, tag);
    if (d == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, tag);
        }
        return NULL;
    }
    Py_INCREF(d);
    if (PyDict_DelItem(table, tag) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ==== Core ============================================================== */

static PyObject *
Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    CoreObject *self;
    UNUSED(args);
    UNUSED(kwds);
    self = (CoreObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    reader_init(&self->reader);
    amp_buf_init(&self->queued);
    self->counter = 0;
    self->recvd_set = NULL;
    return (PyObject *)self;
}

static int
Core_traverse(CoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->reader.box);
    Py_VISIT(self->recvd_set);
    return 0;
}

static int
Core_clear(CoreObject *self)
{
    Py_CLEAR(self->reader.box);
    Py_CLEAR(self->reader.key);
    Py_CLEAR(self->recvd_set);
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
    amp_buf_free(&self->queued);
    Py_CLEAR(self->recvd_set);
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

/* ==== DispatcherCore (amp-spec §2) ====================================== */

#define DEFINING_STATE(cls) ((module_state *)PyType_GetModuleState(cls))

static PyObject *
Dispatcher_nextTag(CoreObject *self, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = DEFINING_STATE(cls);
    char tag[2 * sizeof(self->counter) + 1];
    int n;
    if (bind_args("BoxDispatcher._nextTag", NULL, 0, 0, args, nargs, kwnames,
                  NULL) < 0) {
        return NULL;
    }
    if (_PyType_Lookup(Py_TYPE(self), st->str__counter) != st->counter_descr) {
        /* A subclass set _counter as a class attribute: count from it as
           stock's `self._counter += 1` does. */
        PyObject *one = PyLong_FromLong(1), *v, *next;
        if (one == NULL) {
            return NULL;
        }
        v = PyObject_GetAttr((PyObject *)self, st->str__counter);
        next = v ? PyNumber_InPlaceAdd(v, one) : NULL;
        Py_XDECREF(v);
        Py_DECREF(one);
        if (next == NULL
            || PyObject_SetAttr((PyObject *)self, st->str__counter, next) < 0) {
            Py_XDECREF(next);
            return NULL;
        }
        v = PyNumber_Remainder(st->b_HEX_FORMAT, next);
        Py_DECREF(next);
        return v;
    }
    /* Lowercase hex, no prefix, from 1 (amp-spec §2.2 D2). */
    self->counter++;
    n = snprintf(tag, sizeof(tag), "%llx", self->counter);
    return PyBytes_FromStringAndSize(tag, n);
}

/* [D3] _sendBoxCommand(command, box, requiresAnswer=True) */
static PyObject *
Dispatcher_sendBoxCommand(CoreObject *self, PyTypeObject *cls,
                          PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"command", "box", "requiresAnswer"};
    module_state *st = DEFINING_STATE(cls);
    PyObject *a[3], *reason, *tag = NULL, *sender = NULL, *r, *d = NULL;
    PyObject *table, *me = (PyObject *)self;
    int wants;

    if (bind_args("BoxDispatcher._sendBoxCommand", names, 3, 2, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    wants = a[2] == NULL ? 1 : PyObject_IsTrue(a[2]);
    if (wants < 0) {
        return NULL;
    }
    reason = PyObject_GetAttr(me, st->str__failAllReason);
    if (reason == NULL) {
        return NULL;
    }
    if (reason != Py_None) {
        /* Nothing is sent and no tag is used after failAllOutgoing. */
        r = wants ? PyObject_CallOneArg(st->fail, reason) : Py_NewRef(Py_None);
        Py_DECREF(reason);
        return r;
    }
    Py_DECREF(reason);
    if (PyObject_SetItem(a[1], st->b_COMMAND, a[0]) < 0) {
        return NULL;
    }
    if ((tag = call0(me, st->str__nextTag)) == NULL) {
        return NULL;
    }
    if (wants && PyObject_SetItem(a[1], st->b_ASK, tag) < 0) {
        goto error;
    }
    if ((sender = PyObject_GetAttr(me, st->str_boxSender)) == NULL) {
        goto error;
    }
    if (resolves_to(a[1], st->str__sendTo, st->stock_sendTo)) {
        /* AmpBox._sendTo is exactly sender.sendBox(box). */
        r = call1(sender, st->str_sendBox, a[1]);
    }
    else {
        r = call1(a[1], st->str__sendTo, sender);
    }
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    if (!wants) {
        Py_DECREF(tag);
        Py_DECREF(sender);
        Py_RETURN_NONE;
    }
    /* Registered only after a successful send (amp-spec §2.2 D3). */
    if ((d = PyObject_CallNoArgs(st->Deferred)) == NULL) {
        goto error;
    }
    if ((table = PyObject_GetAttr(me, st->str__outstandingRequests)) == NULL) {
        goto error;
    }
    if (PyObject_SetItem(table, tag, d) < 0) {
        Py_DECREF(table);
        goto error;
    }
    Py_DECREF(table);
    Py_DECREF(tag);
    Py_DECREF(sender);
    return d;
error:
    Py_XDECREF(tag);
    Py_XDECREF(sender);
    Py_XDECREF(d);
    return NULL;
}

/* [D4] callRemoteString(command, requiresAnswer=True, **kw) */
static PyObject *
Dispatcher_callRemoteString(CoreObject *self, PyTypeObject *cls,
                            PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    module_state *st = DEFINING_STATE(cls);
    PyObject *command = NULL, *requiresAnswer = Py_True, *box, *key, *r;
    PyObject *callargs[4];
    Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    const char *duplicate;

    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "BoxDispatcher.callRemoteString() takes from 2 to 3 "
                     "positional arguments but %zd were given", nargs + 1);
        return NULL;
    }
    if (nargs >= 1) {
        command = args[0];
    }
    if (nargs == 2) {
        requiresAnswer = args[1];
    }
    /* Box(kw): str keys become ASCII bytes (amp-spec §1.2 B1). */
    box = st->AmpBox->tp_new(st->AmpBox, st->empty_tuple, NULL);
    if (box == NULL) {
        return NULL;
    }
    for (i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(name, "command") == 0) {
            if (command != NULL) {
                duplicate = "command";
                goto duplicate;
            }
            command = args[nargs + i];
            continue;
        }
        if (PyUnicode_CompareWithASCIIString(name, "requiresAnswer") == 0) {
            if (nargs == 2) {
                duplicate = "requiresAnswer";
                goto duplicate;
            }
            requiresAnswer = args[nargs + i];
            continue;
        }
        if ((key = PyUnicode_AsASCIIString(name)) == NULL) {
            Py_DECREF(box);
            return NULL;
        }
        if (PyDict_SetItem(box, key, args[nargs + i]) < 0) {
            Py_DECREF(key);
            Py_DECREF(box);
            return NULL;
        }
        Py_DECREF(key);
    }
    if (command == NULL) {
        Py_DECREF(box);
        PyErr_SetString(PyExc_TypeError,
                        "BoxDispatcher.callRemoteString() missing 1 required "
                        "positional argument: 'command'");
        return NULL;
    }
    callargs[0] = (PyObject *)self;
    callargs[1] = command;
    callargs[2] = box;
    callargs[3] = requiresAnswer;
    r = PyObject_VectorcallMethod(st->str__sendBoxCommand, callargs, 4, NULL);
    Py_DECREF(box);
    return r;
duplicate:
    Py_DECREF(box);
    PyErr_Format(PyExc_TypeError,
                 "BoxDispatcher.callRemoteString() got multiple values for "
                 "argument '%s'", duplicate);
    return NULL;
}

/* [D1] failAllOutgoing(reason) */
static PyObject *
Dispatcher_failAllOutgoing(CoreObject *self, PyTypeObject *cls,
                           PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"reason"};
    module_state *st = DEFINING_STATE(cls);
    PyObject *a[1], *table, *items, *it, *pair, *me = (PyObject *)self;
    int rc = 0;

    if (bind_args("BoxDispatcher.failAllOutgoing", names, 1, 1, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if (PyObject_SetAttr(me, st->str__failAllReason, a[0]) < 0) {
        return NULL;
    }
    if ((table = PyObject_GetAttr(me, st->str__outstandingRequests)) == NULL) {
        return NULL;
    }
    items = call0(table, st->str_items);
    Py_DECREF(table);
    if (items == NULL) {
        return NULL;
    }
    /* The table is gone before any errback runs: no new request can be
       registered from inside one. */
    if (PyObject_SetAttr(me, st->str__outstandingRequests, Py_None) < 0) {
        Py_DECREF(items);
        return NULL;
    }
    it = PyObject_GetIter(items);
    Py_DECREF(items);
    if (it == NULL) {
        return NULL;
    }
    while (rc == 0 && (pair = PyIter_Next(it)) != NULL) {
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "request table items must be pairs");
            rc = -1;
        }
        else {
            rc = call1_void(PyTuple_GET_ITEM(pair, 1), st->str_errback, a[0]);
        }
        Py_DECREF(pair);
    }
    Py_DECREF(it);
    if (rc < 0 || PyErr_Occurred()) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* stopReceivingBoxes(reason): self.failAllOutgoing(reason), looked up on
   use so an override is honoured. */
static PyObject *
Dispatcher_stopReceivingBoxes(CoreObject *self, PyTypeObject *cls,
                              PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"reason"};
    module_state *st = DEFINING_STATE(cls);
    PyObject *a[1];
    if (bind_args("BoxDispatcher.stopReceivingBoxes", names, 1, 1, args, nargs, kwnames, a) < 0
        || call1_void((PyObject *)self, st->str_failAllOutgoing, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Pop the request a reply answers and put unhandledError at the end of its
   chain, in stock's order (amp-spec §2.2 D6, D7). */
static PyObject *
take_request(module_state *st, PyObject *self, PyObject *box, PyObject *key)
{
    PyObject *table, *tag, *question, *eb;
    int rc;
    if ((table = PyObject_GetAttr(self, st->str__outstandingRequests)) == NULL) {
        return NULL;
    }
    if ((tag = PyObject_GetItem(box, key)) == NULL) {
        Py_DECREF(table);
        return NULL;
    }
    question = pop_request(st, table, tag);
    Py_DECREF(table);
    Py_DECREF(tag);
    if (question == NULL) {
        return NULL;
    }
    if ((eb = PyObject_GetAttr(self, st->str_unhandledError)) == NULL) {
        Py_DECREF(question);
        return NULL;
    }
    rc = call1_void(question, st->str_addErrback, eb);
    Py_DECREF(eb);
    if (rc < 0) {
        Py_DECREF(question);
        return NULL;
    }
    return question;
}

static int
answer_received(module_state *st, PyObject *self, PyObject *box)
{
    PyObject *question = take_request(st, self, box, st->b_ANSWER);
    int rc;
    if (question == NULL) {
        return -1;
    }
    rc = call1_void(question, st->str_callback, box);
    Py_DECREF(question);
    return rc;
}

static int
error_received(module_state *st, PyObject *self, PyObject *box)
{
    PyObject *question, *code = NULL, *desc = NULL, *exc_type, *exc = NULL;
    PyObject *failure;
    int rc = -1, known;

    if ((question = take_request(st, self, box, st->b_ERROR)) == NULL) {
        return -1;
    }
    /* A box without code or description leaves this request unanswered
       for ever, as stock does (amp-spec §2.2 D7). */
    if ((code = PyObject_GetItem(box, st->b_ERROR_CODE)) == NULL
        || (desc = PyObject_GetItem(box, st->b_ERROR_DESCRIPTION)) == NULL) {
        goto done;
    }
    if (PyBytes_Check(desc)) {
        Py_SETREF(desc, PyUnicode_DecodeUTF8(PyBytes_AS_STRING(desc),
                                             PyBytes_GET_SIZE(desc), "replace"));
        if (desc == NULL) {
            goto done;
        }
    }
    if ((known = PySequence_Contains(st->PROTOCOL_ERRORS, code)) < 0) {
        goto done;
    }
    if (known) {
        if ((exc_type = PyObject_GetItem(st->PROTOCOL_ERRORS, code)) == NULL) {
            goto done;
        }
        exc = PyObject_CallFunctionObjArgs(exc_type, code, desc, NULL);
        Py_DECREF(exc_type);
    }
    else {
        exc = PyObject_CallFunctionObjArgs(st->RemoteAmpError, code, desc, NULL);
    }
    if (exc == NULL) {
        goto done;
    }
    if ((failure = PyObject_CallOneArg(st->Failure, exc)) == NULL) {
        goto done;
    }
    rc = call1_void(question, st->str_errback, failure);
    Py_DECREF(failure);
done:
    Py_DECREF(question);
    Py_XDECREF(code);
    Py_XDECREF(desc);
    Py_XDECREF(exc);
    return rc;
}

static PyObject *
Dispatcher_answerReceived(CoreObject *self, PyTypeObject *cls,
                          PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"box"};
    PyObject *a[1];
    if (bind_args("BoxDispatcher._answerReceived", names, 1, 1, args, nargs, kwnames, a) < 0
        || answer_received(DEFINING_STATE(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Dispatcher_errorReceived(CoreObject *self, PyTypeObject *cls,
                         PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"box"};
    PyObject *a[1];
    if (bind_args("BoxDispatcher._errorReceived", names, 1, 1, args, nargs, kwnames, a) < 0
        || error_received(DEFINING_STATE(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- the responder side ------------------------------------------------ */

/* formatAnswer, bound to the request box (amp-spec §2.2 D8): tag the
   responder's own box with the request's _ask and pass it on. */
static PyObject *
format_answer(PyObject *request, PyTypeObject *cls, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = DEFINING_STATE(cls);
    PyObject *ask;
    int rc;
    if (nargs != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "formatAnswer takes one argument");
        return NULL;
    }
    if ((ask = PyObject_GetItem(request, st->b_ASK)) == NULL) {
        return NULL;
    }
    rc = PyObject_SetItem(args[0], st->b_ANSWER, ask);
    Py_DECREF(ask);
    return rc < 0 ? NULL : Py_NewRef(args[0]);
}

static int
log_unknown_error(module_state *st, PyObject *failure)
{
    /* Twisted >= 24.7 logs through amp._log; older releases log.err. */
    PyObject *log = PyObject_GetAttr(st->amp_module, st->str__log), *r;
    if (log == NULL) {
        PyErr_Clear();
        return call1_void(st->legacy_log, st->str_err, failure);
    }
    r = PyObject_CallMethodObjArgs(log, st->str_failure, st->msg_unhandled,
                                   failure, NULL);
    Py_DECREF(log);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* formatError, bound to the request box: the error box for a failed
   responder (amp-spec §2.4, the responder-side table). */
static PyObject *
format_error(PyObject *request, PyTypeObject *cls, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = DEFINING_STATE(cls);
    PyObject *error, *value = NULL, *code = NULL, *desc = NULL, *box = NULL;
    PyObject *ask = NULL, *checked;
    int remote, fatal;

    if (nargs != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "formatError takes one argument");
        return NULL;
    }
    error = args[0];
    if ((checked = call1(error, st->str_check, st->RemoteAmpError)) == NULL) {
        return NULL;
    }
    remote = PyObject_IsTrue(checked);
    Py_DECREF(checked);
    if (remote < 0) {
        return NULL;
    }
    if (remote) {
        if ((value = PyObject_GetAttr(error, st->str_value)) == NULL
            || (code = PyObject_GetAttr(value, st->str_errorCode)) == NULL
            || (desc = PyObject_GetAttr(value, st->str_description)) == NULL) {
            goto error;
        }
        if (PyUnicode_Check(desc)) {
            Py_SETREF(desc, PyUnicode_AsEncodedString(desc, "utf-8", "replace"));
            if (desc == NULL) {
                goto error;
            }
        }
        if ((fatal = attr_true(value, st->str_fatal)) < 0) {
            goto error;
        }
        box = PyObject_CallNoArgs(fatal ? st->QuitBox : st->AmpBoxObj);
    }
    else {
        if ((box = PyObject_CallNoArgs(st->QuitBox)) == NULL
            || log_unknown_error(st, error) < 0) {
            goto error;
        }
        code = Py_NewRef(st->b_UNKNOWN_ERROR_CODE);
        desc = Py_NewRef(st->b_UNKNOWN_DESCRIPTION);
    }
    if (box == NULL
        || (ask = PyObject_GetItem(request, st->b_ASK)) == NULL
        || PyObject_SetItem(box, st->b_ERROR, ask) < 0
        || PyObject_SetItem(box, st->b_ERROR_DESCRIPTION, desc) < 0
        || PyObject_SetItem(box, st->b_ERROR_CODE, code) < 0) {
        goto error;
    }
    Py_XDECREF(value);
    Py_DECREF(code);
    Py_DECREF(desc);
    Py_DECREF(ask);
    return box;
error:
    Py_XDECREF(value);
    Py_XDECREF(code);
    Py_XDECREF(desc);
    Py_XDECREF(box);
    Py_XDECREF(ask);
    return NULL;
}

static PyMethodDef format_answer_def = {
    "formatAnswer", (PyCFunction)(void (*)(void))format_answer,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};
static PyMethodDef format_error_def = {
    "formatError", (PyCFunction)(void (*)(void))format_error,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};

/* The stock chain on a responder's Deferred (amp-spec §2.2 D8). */
static int
chain_response(module_state *st, PyObject *self, PyObject *box,
               PyObject *deferred, int has_ask)
{
    PyObject *r, *fa, *fe, *emit, *eb;
    int rc;

    if (has_ask) {
        fa = PyCMethod_New(&format_answer_def, box, NULL, st->DispatcherCoreType);
        if (fa == NULL) {
            return -1;
        }
        fe = PyCMethod_New(&format_error_def, box, NULL, st->DispatcherCoreType);
        if (fe == NULL) {
            Py_DECREF(fa);
            return -1;
        }
        r = PyObject_CallMethodObjArgs(deferred, st->str_addCallbacks, fa, fe,
                                       NULL);
        Py_DECREF(fa);
        Py_DECREF(fe);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        if ((emit = PyObject_GetAttr(self, st->str__safeEmit)) == NULL) {
            return -1;
        }
        rc = call1_void(deferred, st->str_addCallback, emit);
        Py_DECREF(emit);
        if (rc < 0) {
            return -1;
        }
    }
    if ((eb = PyObject_GetAttr(self, st->str_unhandledError)) == NULL) {
        return -1;
    }
    rc = call1_void(deferred, st->str_addErrback, eb);
    Py_DECREF(eb);
    return rc;
}

/*
 * The Deferred stock's dispatchCommand would return, built from what the
 * responder did (maybeDeferred's rules, amp-spec §2.2 D11), for every
 * outcome but a plain synchronous result: that one is returned in *plain.
 */
static PyObject *
responder_deferred(module_state *st, PyObject *responder, PyObject *box,
                   PyObject **plain)
{
    PyObject *result = PyObject_CallOneArg(responder, box), *failure, *d;
    *plain = NULL;
    if (result == NULL) {
        if ((failure = failure_from_error(st)) == NULL) {
            return NULL;
        }
        d = PyObject_CallOneArg(st->fail, failure);
        Py_DECREF(failure);
        return d;
    }
    if (PyObject_TypeCheck(result, (PyTypeObject *)st->Deferred)) {
        return result;
    }
    if (PyObject_TypeCheck(result, (PyTypeObject *)st->Failure)) {
        d = PyObject_CallOneArg(st->fail, result);
        Py_DECREF(result);
        return d;
    }
    if (PyCoro_CheckExact(result)) {
        d = call1(st->Deferred, st->str_fromCoroutine, result);
        Py_DECREF(result);
        return d;
    }
    *plain = result;
    return NULL;
}

/* What the stock chain does to a plain result, without the Deferreds:
   formatAnswer, then self._safeEmit; a failure in either goes to
   self.unhandledError. */
static int
emit_plain_answer(module_state *st, PyObject *self, PyObject *box,
                  PyObject *answer)
{
    PyObject *ask = PyObject_GetItem(box, st->b_ASK), *r;
    int rc;
    if (ask == NULL) {
        return -1;
    }
    rc = PyObject_SetItem(answer, st->b_ANSWER, ask);
    Py_DECREF(ask);
    if (rc < 0) {
        /* e.g. an amp_X responder that returned None (amp-spec §2.4). */
        return error_to_unhandled(st, self);
    }
    r = call1(self, st->str__safeEmit, answer);
    if (r == NULL) {
        return error_to_unhandled(st, self);
    }
    Py_DECREF(r);
    return 0;
}

static int
unhandled_command(module_state *st, PyObject *cmd, PyObject **deferred)
{
    /* dispatchCommand's answer to a missing responder (amp-spec §2.2 D11):
       fail(RemoteAmpError(b"UNHANDLED", "Unhandled Command: %r" % cmd,
       False, local=Failure(UnhandledCommand()))). */
    PyObject *inner, *local, *desc, *args, *kw, *exc;
    *deferred = NULL;
    if ((inner = PyObject_CallNoArgs(st->UnhandledCommand)) == NULL) {
        return -1;
    }
    local = PyObject_CallOneArg(st->Failure, inner);
    Py_DECREF(inner);
    if (local == NULL) {
        return -1;
    }
    kw = Py_BuildValue("{sN}", "local", local);
    if (kw == NULL) {
        return -1;
    }
    if ((desc = PyUnicode_FromFormat("Unhandled Command: %R", cmd)) == NULL) {
        Py_DECREF(kw);
        return -1;
    }
    args = PyTuple_Pack(3, st->b_UNHANDLED_ERROR_CODE, desc, Py_False);
    Py_DECREF(desc);
    if (args == NULL) {
        Py_DECREF(kw);
        return -1;
    }
    exc = PyObject_Call(st->RemoteAmpError, args, kw);
    Py_DECREF(args);
    Py_DECREF(kw);
    if (exc == NULL) {
        return -1;
    }
    *deferred = PyObject_CallOneArg(st->fail, exc);
    Py_DECREF(exc);
    return *deferred == NULL ? -1 : 0;
}

static int
command_received(module_state *st, PyObject *self, PyObject *box)
{
    PyObject *deferred = NULL, *plain = NULL;
    int has_ask, rc;

    if (resolves_to(self, st->str_dispatchCommand, st->stock_dispatchCommand)) {
        /* dispatchCommand is stock's: do its work here, and keep a plain
           synchronous result out of Deferreds altogether. */
        PyObject *cmd, *locator, *responder;
        if ((cmd = PyObject_GetItem(box, st->b_COMMAND)) == NULL) {
            return -1;
        }
        if ((locator = PyObject_GetAttr(self, st->str_locator)) == NULL) {
            Py_DECREF(cmd);
            return -1;
        }
        responder = call1(locator, st->str_locateResponder, cmd);
        Py_DECREF(locator);
        if (responder == NULL) {
            Py_DECREF(cmd);
            return -1;
        }
        if (responder == Py_None) {
            rc = unhandled_command(st, cmd, &deferred);
            Py_DECREF(cmd);
            Py_DECREF(responder);
            if (rc < 0) {
                return -1;
            }
        }
        else {
            Py_DECREF(cmd);
            deferred = responder_deferred(st, responder, box, &plain);
            Py_DECREF(responder);
            if (deferred == NULL && plain == NULL) {
                return -1;
            }
        }
    }
    else if ((deferred = call1(self, st->str_dispatchCommand, box)) == NULL) {
        return -1;
    }
    if ((has_ask = PySequence_Contains(box, st->b_ASK)) < 0) {
        Py_XDECREF(deferred);
        Py_XDECREF(plain);
        return -1;
    }
    if (plain != NULL) {
        rc = has_ask ? emit_plain_answer(st, self, box, plain) : 0;
        Py_DECREF(plain);
        return rc;
    }
    rc = chain_response(st, self, box, deferred, has_ask);
    Py_DECREF(deferred);
    return rc;
}

static PyObject *
Dispatcher_commandReceived(CoreObject *self, PyTypeObject *cls,
                           PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"box"};
    PyObject *a[1];
    if (bind_args("BoxDispatcher._commandReceived", names, 1, 1, args, nargs, kwnames, a) < 0
        || command_received(DEFINING_STATE(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* [D9] ampBoxReceived: _answer, then _error, then _command, else
   NoEmptyBoxes. */
static int
box_received(module_state *st, PyObject *self, PyObject *box)
{
    PyObject *r;
    int has;

    if ((has = PySequence_Contains(box, st->b_ANSWER)) < 0) {
        return -1;
    }
    if (has) {
        return call1_void(self, st->str__answerReceived, box);
    }
    if ((has = PySequence_Contains(box, st->b_ERROR)) < 0) {
        return -1;
    }
    if (has) {
        return call1_void(self, st->str__errorReceived, box);
    }
    if ((has = PySequence_Contains(box, st->b_COMMAND)) < 0) {
        return -1;
    }
    if (has) {
        return call1_void(self, st->str__commandReceived, box);
    }
    r = PyObject_CallOneArg(st->NoEmptyBoxes, box);
    if (r != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(r), r);
        Py_DECREF(r);
    }
    return -1;
}

static PyObject *
Dispatcher_ampBoxReceived(CoreObject *self, PyTypeObject *cls,
                          PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"box"};
    PyObject *a[1];
    if (bind_args("BoxDispatcher.ampBoxReceived", names, 1, 1, args, nargs, kwnames, a) < 0
        || box_received(DEFINING_STATE(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* [D10] _safeEmit(box): send, swallowing ProtocolSwitched and
   ConnectionLost only. */
static PyObject *
Dispatcher_safeEmit(CoreObject *self, PyTypeObject *cls,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"aBox"};
    module_state *st = DEFINING_STATE(cls);
    PyObject *a[1], *sender, *r;

    if (bind_args("BoxDispatcher._safeEmit", names, 1, 1, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if ((sender = PyObject_GetAttr((PyObject *)self, st->str_boxSender)) == NULL) {
        return NULL;
    }
    if (resolves_to(a[0], st->str__sendTo, st->stock_sendTo)) {
        r = call1(sender, st->str_sendBox, a[0]);
    }
    else {
        r = call1(a[0], st->str__sendTo, sender);
    }
    Py_DECREF(sender);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(st->ProtocolSwitched)
            || PyErr_ExceptionMatches(st->ConnectionLost)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
Dispatcher_get_counter(CoreObject *self, void *closure)
{
    UNUSED(closure);
    return PyLong_FromUnsignedLongLong(self->counter);
}

static int
Dispatcher_set_counter(CoreObject *self, PyObject *value, void *closure)
{
    unsigned long long v;
    UNUSED(closure);
    if (value == NULL) {
        self->counter = 0;   /* back to the class default */
        return 0;
    }
    v = PyLong_AsUnsignedLongLong(value);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    self->counter = v;
    return 0;
}

#define METHOD(pyname, cname, doc)                                      \
    {pyname, (PyCFunction)(void (*)(void))cname,                        \
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef Dispatcher_methods[] = {
    METHOD("_nextTag", Dispatcher_nextTag,
           "Return the next tag for an _ask key: lowercase hex bytes from 1."),
    METHOD("_sendBoxCommand", Dispatcher_sendBoxCommand,
           "_sendBoxCommand(command, box, requiresAnswer=True)"),
    METHOD("callRemoteString", Dispatcher_callRemoteString,
           "callRemoteString(command, requiresAnswer=True, **kw)"),
    METHOD("failAllOutgoing", Dispatcher_failAllOutgoing,
           "failAllOutgoing(reason): errback every outstanding request."),
    METHOD("stopReceivingBoxes", Dispatcher_stopReceivingBoxes,
           "stopReceivingBoxes(reason): no more boxes; fail all outgoing."),
    METHOD("ampBoxReceived", Dispatcher_ampBoxReceived,
           "ampBoxReceived(box): route an answer, error or command box."),
    METHOD("_answerReceived", Dispatcher_answerReceived, "_answerReceived(box)"),
    METHOD("_errorReceived", Dispatcher_errorReceived, "_errorReceived(box)"),
    METHOD("_commandReceived", Dispatcher_commandReceived, "_commandReceived(box)"),
    METHOD("_safeEmit", Dispatcher_safeEmit, "_safeEmit(aBox)"),
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef Dispatcher_getset[] = {
    {"_counter", (getter)Dispatcher_get_counter, (setter)Dispatcher_set_counter,
     "The last tag number handed out by _nextTag.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot Dispatcher_slots[] = {
    {Py_tp_doc, (void *)"C core of ampcore.BoxDispatcher."},
    {Py_tp_methods, Dispatcher_methods},
    {Py_tp_getset, Dispatcher_getset},
    {Py_tp_traverse, Core_traverse},
    {Py_tp_clear, Core_clear},
    {0, NULL}
};

static PyType_Spec Dispatcher_spec = {
    .name = "ampcore._ampcore.DispatcherCore",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Dispatcher_slots,
};

/* ==== ProtocolCore (amp-spec §1.3-§1.5) ================================= */

typedef struct {
    module_state *st;
    PyObject *self;
} protocol_ctx;

/* Deliver one box to self.boxReceiver, then stop if a callback switched
   protocols (assigned self.recvd) or paused us (amp-spec §1.3 P10). */
static int
protocol_sink(void *arg, PyObject *box)
{
    protocol_ctx *ctx = (protocol_ctx *)arg;
    module_state *st = ctx->st;
    PyObject *receiver = PyObject_GetAttr(ctx->self, st->str_boxReceiver);
    int rc;
    if (receiver == NULL) {
        return -1;
    }
    rc = call1_void(receiver, st->str_ampBoxReceived, box);
    Py_DECREF(receiver);
    if (rc < 0) {
        return -1;
    }
    if (((CoreObject *)ctx->self)->recvd_set != NULL) {
        return 1;
    }
    rc = attr_true(ctx->self, st->str_paused);
    return rc;   /* 1: paused, stop; 0: go on; -1: error */
}

static PyObject *
Protocol_dataReceived(CoreObject *self, PyTypeObject *cls,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    static const char *const names[] = {"data"};
    module_state *st = DEFINING_STATE(cls);
    PyObject *a[1], *me = (PyObject *)self, *inner, *data, *r;
    protocol_ctx ctx = {st, me};
    Py_buffer view;
    int rc, t;

    if (bind_args("BinaryBoxProtocol.dataReceived", names, 1, 1, args, nargs, kwnames, a) < 0) {
        return NULL;
    }
    if ((t = attr_true(me, st->str__justStartedTLS)) < 0) {
        return NULL;
    }
    if (t && PyObject_SetAttr(me, st->str__justStartedTLS, Py_False) < 0) {
        return NULL;
    }
    if ((inner = PyObject_GetAttr(me, st->str_innerProtocol)) == NULL) {
        return NULL;
    }
    if (inner != Py_None) {
        /* Switched: everything goes to the new protocol untouched. */
        r = call1(inner, st->str_dataReceived, a[0]);
        Py_DECREF(inner);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    Py_DECREF(inner);
    if (!resolves_to(me, st->str_stringReceived, st->stock_stringReceived)) {
        /* A subclass handles strings itself: give it stock's framing. */
        PyObject *callargs[2] = {me, a[0]};
        return PyObject_Vectorcall(st->stock_int16_dataReceived, callargs, 2, NULL);
    }
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (self->reader.scanning) {
        /* Re-entered from a callback: queue behind what is being parsed. */
        rc = amp_buf_append(&self->queued, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
        if (rc < 0) {
            return PyErr_NoMemory();
        }
        Py_RETURN_NONE;
    }
    if ((t = attr_true(me, st->str_paused)) != 0) {
        /* Paused (or failed to tell): stock frames nothing while paused,
           not even the first string (amp-spec §1.3 P10).  Keep the bytes
           for resumeProducing's dataReceived(b""). */
        rc = t < 0 ? 0 : amp_buf_append(&self->reader.pending, view.buf,
                                        (size_t)view.len);
        PyBuffer_Release(&view);
        if (t < 0) {
            return NULL;
        }
        if (rc < 0) {
            return PyErr_NoMemory();
        }
        Py_RETURN_NONE;
    }
    rc = reader_feed(&self->reader, st, view.buf, (size_t)view.len,
                     protocol_sink, &ctx);
    PyBuffer_Release(&view);
    for (;;) {
        if (self->recvd_set != NULL) {
            /* A callback switched protocols: what it left in recvd replaces
               the rest of the buffer (amp-spec §1.7 SW1). */
            data = self->recvd_set;
            self->recvd_set = NULL;
            reader_reset(&self->reader);
            amp_buf_consume(&self->queued, self->queued.len);
            if (rc == -1 || !PyObject_CheckBuffer(data)) {
                Py_DECREF(data);
                break;
            }
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
                Py_DECREF(data);
                return NULL;
            }
            rc = reader_feed(&self->reader, st, view.buf, (size_t)view.len,
                             protocol_sink, &ctx);
            PyBuffer_Release(&view);
            Py_DECREF(data);
            continue;
        }
        if (self->queued.len == 0 || rc == 2) {
            /* After an over-long key nothing more is read: drop the rest. */
            amp_buf_consume(&self->queued, self->queued.len);
            break;
        }
        /* Bytes a callback fed us re-entrantly come after everything the
           outer call had: parse them now, or keep them in order behind the
           buffered rest when parsing stopped (pause, error). */
        {
            amp_buf q = self->queued;
            amp_buf_init(&self->queued);
            if (rc != 0) {
                int mem = amp_buf_append(&self->reader.pending, q.data, q.len);
                amp_buf_free(&q);
                if (mem < 0) {
                    if (rc == -1) {
                        break;
                    }
                    return PyErr_NoMemory();
                }
                break;
            }
            rc = reader_feed(&self->reader, st, q.data, q.len, protocol_sink,
                             &ctx);
            amp_buf_free(&q);
        }
    }
    if (rc == -1) {
        return NULL;
    }
    if (rc == 2) {
        /* amp-spec §1.3 P3: stock calls this on every later chunk too. */
        if (reader_report_length_limit(&self->reader, st, me) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

/* [S1] sendBox(box) */
static PyObject *
Protocol_sendBox(CoreObject *self, PyTypeObject *cls, PyObject *const *args,
                 Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"box"};
    module_state *st = DEFINING_STATE(cls);
    PyObject *a[1], *me = (PyObject *)self, *transport, *buffer, *data, *r;
    int locked;

    if (bind_args("BinaryBoxProtocol.sendBox", names, 1, 1, args, nargs, kwnames, a) < 0) {
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
        /* TLS is starting: keep the box object itself (amp-spec §1.4). */
        r = call1(buffer, st->str_append, a[0]);
        Py_DECREF(buffer);
        Py_DECREF(transport);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
        Py_RETURN_NONE;
    }
    Py_DECREF(buffer);
    if (resolves_to(a[0], st->str_serialize, st->stock_serialize)) {
        data = serialize_box(st, a[0]);
    }
    else {
        data = call0(a[0], st->str_serialize);
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

static PyObject *
Protocol_get_recvd(CoreObject *self, void *closure)
{
    UNUSED(closure);
    return reader_unconsumed(&self->reader);
}

/* self.recvd = x inside a callback hands the rest of the buffer over (and
   replaces it with x); outside one it replaces what is buffered. */
static int
Protocol_set_recvd(CoreObject *self, PyObject *value, void *closure)
{
    Py_buffer view;
    int rc = 0;
    UNUSED(closure);
    if (self->reader.scanning) {
        Py_XINCREF(value);
        Py_XSETREF(self->recvd_set, value);
        return 0;
    }
    reader_reset(&self->reader);
    if (value != NULL && PyObject_CheckBuffer(value)) {
        if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        rc = amp_buf_append(&self->reader.pending, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
        if (rc < 0) {
            PyErr_NoMemory();
        }
    }
    return rc;
}

static PyMethodDef Protocol_methods[] = {
    METHOD("dataReceived", Protocol_dataReceived,
           "dataReceived(data): parse boxes in C and hand each to "
           "self.boxReceiver.ampBoxReceived, or relay to the inner protocol."),
    METHOD("sendBox", Protocol_sendBox,
           "sendBox(box): serialize in C and write once to the transport."),
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef Protocol_getset[] = {
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

static int
protocol_types_init(PyObject *module, module_state *st)
{
    st->CoreType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Core_spec, NULL);
    if (st->CoreType == NULL) {
        return -1;
    }
    st->DispatcherCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &Dispatcher_spec, (PyObject *)st->CoreType);
    if (st->DispatcherCoreType == NULL) {
        return -1;
    }
    st->counter_descr = PyDict_GetItemWithError(st->DispatcherCoreType->tp_dict,
                                                st->str__counter);
    if (st->counter_descr == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError, "DispatcherCore has no _counter");
        }
        return -1;
    }
    Py_INCREF(st->counter_descr);
    st->ProtocolCoreType = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &Protocol_spec, (PyObject *)st->CoreType);
    if (st->ProtocolCoreType == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->CoreType) < 0
        || PyModule_AddType(module, st->DispatcherCoreType) < 0
        || PyModule_AddType(module, st->ProtocolCoreType) < 0) {
        return -1;
    }
    return 0;
}

#endif /* AMPCORE_PROTOCOL_H */
