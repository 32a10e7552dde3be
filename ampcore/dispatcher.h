/*
 * ampcore._ampcore: DispatcherCore, BoxDispatcher's methods in C.
 *
 * The tag counter, the outstanding-request table's traffic, and routing of
 * answer, error and command boxes (commands go on to responder.h).  Each
 * method mirrors the BoxDispatcher method of the same name; callbacks into
 * Python are looked up on each use, as stock does, so overrides are
 * honoured.
 */
#ifndef AMPCORE_DISPATCHER_H
#define AMPCORE_DISPATCHER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "calls.h"
#include "client.h"
#include "codec.h"
#include "core.h"
#include "failure.h"
#include "responder.h"
#include "state.h"

/* ==== the request table ================================================ */

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

/* ==== DispatcherCore: BoxDispatcher's methods ========================== */

/* The signatures of the BoxDispatcher methods implemented here. */
static const char *const box_params[] = {"box"};
static const char *const reason_params[] = {"reason"};
static const char *const sendBoxCommand_params[] = {"command", "box",
                                                    "requiresAnswer"};
static const char *const callRemoteString_params[] = {"command",
                                                      "requiresAnswer"};
static const char *const safeEmit_params[] = {"aBox"};
#define DISPATCHER_SPEC(method, params, n, required)                    \
    static const arg_spec method##_spec = {                             \
        "BoxDispatcher." #method, params, n, required, 1}
DISPATCHER_SPEC(_nextTag, NULL, 0, 0);
DISPATCHER_SPEC(_sendBoxCommand, sendBoxCommand_params, 3, 2);
DISPATCHER_SPEC(callRemoteString, callRemoteString_params, 2, 1);
DISPATCHER_SPEC(failAllOutgoing, reason_params, 1, 1);
DISPATCHER_SPEC(stopReceivingBoxes, reason_params, 1, 1);
DISPATCHER_SPEC(_answerReceived, box_params, 1, 1);
DISPATCHER_SPEC(_errorReceived, box_params, 1, 1);
DISPATCHER_SPEC(_commandReceived, box_params, 1, 1);
DISPATCHER_SPEC(ampBoxReceived, box_params, 1, 1);
DISPATCHER_SPEC(_safeEmit, safeEmit_params, 1, 1);
#undef DISPATCHER_SPEC

/* Stock's BoxDispatcher._nextTag, step by step: `self._counter += 1`,
   then `return b"%x" % (self._counter,)`.  Whatever _counter holds (a
   bool, a big or negative int, an int subclass with its own __add__, a
   float, a str...), this gives stock's tag or stock's exception, where
   stock raises it. */
static PyObject *
next_tag_as_stock(module_state *st, PyObject *self)
{
    PyObject *one, *v, *next, *args, *tag;
    if ((one = PyLong_FromLong(1)) == NULL) {
        return NULL;
    }
    v = PyObject_GetAttr(self, st->str__counter);
    next = v ? PyNumber_InPlaceAdd(v, one) : NULL;
    Py_XDECREF(v);
    Py_DECREF(one);
    if (next == NULL) {
        return NULL;
    }
    if (PyObject_SetAttr(self, st->str__counter, next) < 0) {
        Py_DECREF(next);
        return NULL;
    }
    Py_DECREF(next);
    /* Read again, as stock's second `self._counter` does. */
    if ((v = PyObject_GetAttr(self, st->str__counter)) == NULL) {
        return NULL;
    }
    args = PyTuple_Pack(1, v);
    Py_DECREF(v);
    if (args == NULL) {
        return NULL;
    }
    tag = PyNumber_Remainder(st->b_HEX_FORMAT, args);
    Py_DECREF(args);
    return tag;
}

static PyObject *
Dispatcher_nextTag(CoreObject *self, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    char tag[24];
    size_t n;
    if (bind_args(&_nextTag_spec, args, nargs, kwnames, NULL, NULL, NULL) < 0) {
        return NULL;
    }
    if (self->counter_obj != NULL || self->counter == INT64_MAX
        || compat_type_lookup(Py_TYPE(self), st->str__counter) != st->counter_descr) {
        /* _counter is not a small non-negative int held in C, or a
           subclass made it a class attribute of its own. */
        return next_tag_as_stock(st, (PyObject *)self);
    }
    /* Lowercase hex, no prefix, from 1, as stock's b"%x" % counter. */
    self->counter++;
    self->counter_own = 1;
    n = amp_format_hex(tag, (unsigned long long)self->counter);
    return PyBytes_FromStringAndSize(tag, (Py_ssize_t)n);
}

/* BoxDispatcher._sendBoxCommand(command, box, requiresAnswer=True) */
static PyObject *
Dispatcher_sendBoxCommand(CoreObject *self, PyTypeObject *cls,
                          PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *a[3];

    if (bind_args(&_sendBoxCommand_spec, args, nargs, kwnames, a, NULL, NULL) < 0) {
        return NULL;
    }
    return send_box_command(st, (PyObject *)self, a[0], a[1],
                            a[2] != NULL ? a[2] : Py_True);
}

/* The **kw of callRemoteString, into the box: Box(kw) turns str keys into
   ASCII bytes, as AmpBox.__init__ does. */
static int
put_keyword(void *box, PyObject *name, PyObject *value)
{
    PyObject *key = PyUnicode_AsASCIIString(name);
    int rc;
    if (key == NULL) {
        return -1;
    }
    rc = PyDict_SetItem((PyObject *)box, key, value);
    Py_DECREF(key);
    return rc;
}

/* BoxDispatcher.callRemoteString(command, requiresAnswer=True, **kw) */
static PyObject *
Dispatcher_callRemoteString(CoreObject *self, PyTypeObject *cls,
                            PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *a[2], *box, *r;
    PyObject *callargs[4];

    box = st->AmpBox->tp_new(st->AmpBox, st->empty_tuple, NULL);
    if (box == NULL) {
        return NULL;
    }
    if (bind_args(&callRemoteString_spec, args, nargs, kwnames, a,
                  put_keyword, box) < 0) {
        Py_DECREF(box);
        return NULL;
    }
    callargs[0] = (PyObject *)self;
    callargs[1] = a[0];
    callargs[2] = box;
    callargs[3] = a[1] != NULL ? a[1] : Py_True;
    r = PyObject_VectorcallMethod(st->str__sendBoxCommand, callargs, 4, NULL);
    Py_DECREF(box);
    return r;
}

/* `key, value = pair` as Python's bytecode unpacks two targets (exact
   tuples and lists directly, anything else by iterating it, three steps at
   most), with Python's messages: 0 with two new references, or -1. */
static int
unpack_pair(PyObject *pair, PyObject **key, PyObject **value)
{
    PyObject *it, *items[2] = {NULL, NULL}, *extra;
    int i;

    if ((PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2)
        || (PyList_CheckExact(pair) && PyList_GET_SIZE(pair) == 2)) {
        PyObject **both = PyTuple_CheckExact(pair)
            ? &PyTuple_GET_ITEM(pair, 0) : &PyList_GET_ITEM(pair, 0);
        *key = Py_NewRef(both[0]);
        *value = Py_NewRef(both[1]);
        return 0;
    }
    if ((it = PyObject_GetIter(pair)) == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)
            && Py_TYPE(pair)->tp_iter == NULL && !PySequence_Check(pair)) {
            PyErr_Format(PyExc_TypeError,
                         "cannot unpack non-iterable %.200s object",
                         Py_TYPE(pair)->tp_name);
        }
        return -1;
    }
    for (i = 0; i < 2; i++) {
        if ((items[i] = PyIter_Next(it)) == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError,
                             "not enough values to unpack (expected 2, got %d)", i);
            }
            goto error;
        }
    }
    if ((extra = PyIter_Next(it)) != NULL) {
        Py_DECREF(extra);
        PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
        goto error;
    }
    if (PyErr_Occurred()) {
        goto error;
    }
    Py_DECREF(it);
    *key = items[0];
    *value = items[1];
    return 0;
error:
    Py_DECREF(it);
    Py_XDECREF(items[0]);
    Py_XDECREF(items[1]);
    return -1;
}

/* BoxDispatcher.failAllOutgoing(reason) */
static PyObject *
Dispatcher_failAllOutgoing(CoreObject *self, PyTypeObject *cls,
                           PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *a[1], *table, *items, *it, *pair, *me = (PyObject *)self;
    int rc = 0;

    if (bind_args(&failAllOutgoing_spec, args, nargs, kwnames, a, NULL, NULL) < 0) {
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
        PyObject *key, *value;
        rc = unpack_pair(pair, &key, &value);
        Py_DECREF(pair);
        if (rc == 0) {
            rc = call1_void(value, st->str_errback, a[0]);
            Py_DECREF(key);
            Py_DECREF(value);
        }
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
    module_state *st = state_from_class(cls);
    PyObject *a[1];
    if (bind_args(&stopReceivingBoxes_spec, args, nargs, kwnames, a, NULL, NULL) < 0
        || call1_void((PyObject *)self, st->str_failAllOutgoing, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Pop the request a reply answers and put unhandledError at the end of its
   chain, in the order BoxDispatcher._answerReceived and _errorReceived
   do it. */
static PyObject *
take_request(module_state *st, PyObject *self, PyObject *box, PyObject *key)
{
    PyObject *table, *tag, *question, *eb;
    int rc;
    if ((table = PyObject_GetAttr(self, st->str__outstandingRequests)) == NULL) {
        return NULL;
    }
    if ((tag = box_getitem(st, box, key)) == NULL) {
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
       for ever, as BoxDispatcher._errorReceived does. */
    if ((code = box_getitem(st, box, st->b_ERROR_CODE)) == NULL
        || (desc = box_getitem(st, box, st->b_ERROR_DESCRIPTION)) == NULL) {
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
    PyObject *a[1];
    if (bind_args(&_answerReceived_spec, args, nargs, kwnames, a, NULL, NULL) < 0
        || answer_received(state_from_class(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Dispatcher_errorReceived(CoreObject *self, PyTypeObject *cls,
                         PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    PyObject *a[1];
    if (bind_args(&_errorReceived_spec, args, nargs, kwnames, a, NULL, NULL) < 0
        || error_received(state_from_class(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Dispatcher_commandReceived(CoreObject *self, PyTypeObject *cls,
                           PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    PyObject *a[1];
    if (bind_args(&_commandReceived_spec, args, nargs, kwnames, a, NULL, NULL) < 0
        || command_received(state_from_class(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* BoxDispatcher.ampBoxReceived: _answer, then _error, then _command, else
   NoEmptyBoxes. */
static int
box_received(module_state *st, PyObject *self, PyObject *box)
{
    PyObject *r;
    int has;

    if ((has = box_contains(st, box, st->b_ANSWER)) < 0) {
        return -1;
    }
    if (has) {
        return call1_void(self, st->str__answerReceived, box);
    }
    if ((has = box_contains(st, box, st->b_ERROR)) < 0) {
        return -1;
    }
    if (has) {
        return call1_void(self, st->str__errorReceived, box);
    }
    if ((has = box_contains(st, box, st->b_COMMAND)) < 0) {
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
    PyObject *a[1];
    if (bind_args(&ampBoxReceived_spec, args, nargs, kwnames, a, NULL, NULL) < 0
        || box_received(state_from_class(cls), (PyObject *)self, a[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* BoxDispatcher._safeEmit(aBox): send, swallowing ProtocolSwitched and
   ConnectionLost only. */
static PyObject *
Dispatcher_safeEmit(CoreObject *self, PyTypeObject *cls,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *a[1], *sender, *r;

    if (bind_args(&_safeEmit_spec, args, nargs, kwnames, a, NULL, NULL) < 0) {
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

/* _counter, read: what stock's `self._counter` gives (the class's 0 until
   the instance has its own). */
static PyObject *
Dispatcher_get_counter(CoreObject *self, void *Py_UNUSED(closure))
{
    if (self->counter_obj != NULL) {
        return Py_NewRef(self->counter_obj);
    }
    return PyLong_FromLongLong(self->counter);
}

/* _counter, set or deleted as an instance attribute shadowing the class's
   `_counter = 0`: any object is taken, as stock takes it (what cannot be
   counted fails at the next _nextTag, as stock's does); `del` brings the
   class's 0 back, or raises AttributeError if there was nothing to
   delete. */
static int
Dispatcher_set_counter(CoreObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    PyObject *old = self->counter_obj;
    long long v;
    int overflow = 0;

    if (value == NULL) {
        if (!self->counter_own) {
            PyErr_Format(PyExc_AttributeError,
                         "'%.100s' object has no attribute '_counter'",
                         Py_TYPE(self)->tp_name);
            return -1;
        }
        self->counter_own = 0;
        self->counter = 0;
        self->counter_obj = NULL;
    }
    else {
        if (PyLong_CheckExact(value)) {
            v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (v == -1 && PyErr_Occurred()) {
                return -1;
            }
        }
        else {
            v = -1;
        }
        self->counter_own = 1;
        if (overflow == 0 && v >= 0) {
            self->counter = (int64_t)v;
            self->counter_obj = NULL;
        }
        else {
            self->counter = 0;
            self->counter_obj = Py_NewRef(value);
        }
    }
    /* Last: dropping the old value may run any code, this setter again. */
    Py_XDECREF(old);
    return 0;
}

static PyMethodDef Dispatcher_methods[] = {
    CORE_METHOD("_nextTag", Dispatcher_nextTag,
           "_nextTag($self)\n--\n\n"
           "Return the next tag for an _ask key: lowercase hex bytes from 1."),
    CORE_METHOD("_sendBoxCommand", Dispatcher_sendBoxCommand,
           "_sendBoxCommand($self, command, box, requiresAnswer=True)\n--\n\n"
           "Tag box as an _ask if an answer is wanted, send it, and return the\n"
           "Deferred of its answer (None if requiresAnswer is false)."),
    CORE_METHOD("callRemote", Dispatcher_callRemote,
                "callRemote($self, commandType, *a, **kw)\n--\n\n"
                "Send a commandType request made from the keywords; return the\n"
                "Deferred of its parsed response (None if the command requires\n"
                "no answer)."),
    CORE_METHOD("callRemoteString", Dispatcher_callRemoteString,
           "callRemoteString($self, command, requiresAnswer=True, **kw)\n--\n\n"
           "Send a command box of the keywords (bytes to bytes) and return the\n"
           "Deferred of the answer box (None if requiresAnswer is false)."),
    CORE_METHOD("failAllOutgoing", Dispatcher_failAllOutgoing,
           "failAllOutgoing($self, reason)\n--\n\n"
           "Errback every outstanding request with reason."),
    CORE_METHOD("stopReceivingBoxes", Dispatcher_stopReceivingBoxes,
           "stopReceivingBoxes($self, reason)\n--\n\n"
           "No more boxes will come: fail every outstanding request."),
    CORE_METHOD("ampBoxReceived", Dispatcher_ampBoxReceived,
           "ampBoxReceived($self, box)\n--\n\n"
           "Route an answer, error or command box."),
    CORE_METHOD("_answerReceived", Dispatcher_answerReceived,
           "_answerReceived($self, box)\n--\n\n"
           "Fire the outstanding request's Deferred with an _answer box."),
    CORE_METHOD("_errorReceived", Dispatcher_errorReceived,
           "_errorReceived($self, box)\n--\n\n"
           "Fail the outstanding request's Deferred with an _error box's\n"
           "RemoteAmpError."),
    CORE_METHOD("_commandReceived", Dispatcher_commandReceived,
           "_commandReceived($self, box)\n--\n\n"
           "Dispatch a command box to its responder and send the answer or\n"
           "error box."),
    CORE_METHOD("_safeEmit", Dispatcher_safeEmit,
           "_safeEmit($self, aBox)\n--\n\n"
           "Send aBox, ignoring ProtocolSwitched and ConnectionLost."),
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

#endif /* AMPCORE_DISPATCHER_H */
