/*
 * ampcore._ampcore: DispatcherCore, BoxDispatcher's methods in C.
 *
 * The tag counter and the outstanding-request table's traffic, routing of
 * answer, error and command boxes, and the responder side: when
 * dispatchCommand is stock's, the responder is called from here and a plain
 * synchronous answer is sent without any Deferred.  Each method mirrors the
 * BoxDispatcher method of the same name; callbacks into Python are looked
 * up on each use, as stock does, so overrides are honoured.
 */
#ifndef AMPCORE_DISPATCHER_H
#define AMPCORE_DISPATCHER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>

#include "calls.h"
#include "compat.h"
#include "core.h"
#include "state.h"

/* ==== failures ========================================================== */

/* Turn the exception being raised into a twisted Failure (new reference),
   as maybeDeferred's `except: Failure()` would; NULL if that fails. */
static PyObject *
failure_from_error(module_state *st)
{
    PyObject *type, *value, *tb, *failure;
    compat_fetch_exception(&type, &value, &tb);
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
static const char *const answerBox_params[] = {"answerBox"};
static const char *const error_params[] = {"error"};
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
/* The closures _commandReceived puts on a responder's Deferred. */
static const arg_spec formatAnswer_spec = {
    "BoxDispatcher._commandReceived.<locals>.formatAnswer", answerBox_params,
    1, 1, 0};
static const arg_spec formatError_spec = {
    "BoxDispatcher._commandReceived.<locals>.formatError", error_params,
    1, 1, 0};


static PyObject *
Dispatcher_nextTag(CoreObject *self, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    char tag[2 * sizeof(self->counter) + 1];
    int n;
    if (bind_args(&_nextTag_spec, args, nargs, kwnames, NULL, NULL, NULL) < 0) {
        return NULL;
    }
    if (compat_type_lookup(Py_TYPE(self), st->str__counter) != st->counter_descr) {
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
    /* Lowercase hex, no prefix, from 1, as stock's b"%x" % counter. */
    self->counter++;
    n = snprintf(tag, sizeof(tag), "%llx", self->counter);
    return PyBytes_FromStringAndSize(tag, n);
}

/* BoxDispatcher._sendBoxCommand(command, box, requiresAnswer=True) */
static PyObject *
Dispatcher_sendBoxCommand(CoreObject *self, PyTypeObject *cls,
                          PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *a[3], *reason, *tag = NULL, *sender = NULL, *r, *d = NULL;
    PyObject *table, *me = (PyObject *)self;
    int wants;

    if (bind_args(&_sendBoxCommand_spec, args, nargs, kwnames, a, NULL, NULL) < 0) {
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
    /* Registered only after a successful send, as stock does. */
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
       for ever, as BoxDispatcher._errorReceived does. */
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

/* ---- the responder side ------------------------------------------------ */

/* formatAnswer, bound to the request box (the closure of that name in
   BoxDispatcher._commandReceived): tag the responder's own box with the
   request's _ask and pass it on. */
static PyObject *
format_answer(PyObject *request, PyTypeObject *cls, PyObject *const *args,
              Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *answer, *ask;
    int rc;
    if (bind_args(&formatAnswer_spec, args, nargs, kwnames, &answer, NULL,
                  NULL) < 0) {
        return NULL;
    }
    if ((ask = PyObject_GetItem(request, st->b_ASK)) == NULL) {
        return NULL;
    }
    rc = PyObject_SetItem(answer, st->b_ANSWER, ask);
    Py_DECREF(ask);
    return rc < 0 ? NULL : Py_NewRef(answer);
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
   responder, as the closure of that name in
   BoxDispatcher._commandReceived builds it. */
static PyObject *
format_error(PyObject *request, PyTypeObject *cls, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *error, *value = NULL, *code = NULL, *desc = NULL, *box = NULL;
    PyObject *ask = NULL, *checked;
    int remote, fatal;

    if (bind_args(&formatError_spec, args, nargs, kwnames, &error, NULL,
                  NULL) < 0) {
        return NULL;
    }
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
        box = PyObject_CallNoArgs(fatal ? st->QuitBox : (PyObject *)st->AmpBox);
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

/* The chain BoxDispatcher._commandReceived puts on a responder's
   Deferred. */
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
 * responder did (maybeDeferred's rules), for every
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
        /* e.g. an amp_X responder that returned None: stock's
           formatAnswer fails the same way. */
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
    /* BoxDispatcher.dispatchCommand's answer to a missing responder:
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

static PyObject *
Dispatcher_get_counter(CoreObject *self, void *Py_UNUSED(closure))
{
        return PyLong_FromUnsignedLongLong(self->counter);
}

static int
Dispatcher_set_counter(CoreObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    unsigned long long v;
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

static PyMethodDef Dispatcher_methods[] = {
    CORE_METHOD("_nextTag", Dispatcher_nextTag,
           "Return the next tag for an _ask key: lowercase hex bytes from 1."),
    CORE_METHOD("_sendBoxCommand", Dispatcher_sendBoxCommand,
           "_sendBoxCommand(command, box, requiresAnswer=True)"),
    CORE_METHOD("callRemoteString", Dispatcher_callRemoteString,
           "callRemoteString(command, requiresAnswer=True, **kw)"),
    CORE_METHOD("failAllOutgoing", Dispatcher_failAllOutgoing,
           "failAllOutgoing(reason): errback every outstanding request."),
    CORE_METHOD("stopReceivingBoxes", Dispatcher_stopReceivingBoxes,
           "stopReceivingBoxes(reason): no more boxes; fail all outgoing."),
    CORE_METHOD("ampBoxReceived", Dispatcher_ampBoxReceived,
           "ampBoxReceived(box): route an answer, error or command box."),
    CORE_METHOD("_answerReceived", Dispatcher_answerReceived, "_answerReceived(box)"),
    CORE_METHOD("_errorReceived", Dispatcher_errorReceived, "_errorReceived(box)"),
    CORE_METHOD("_commandReceived", Dispatcher_commandReceived, "_commandReceived(box)"),
    CORE_METHOD("_safeEmit", Dispatcher_safeEmit, "_safeEmit(aBox)"),
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
