/*
 * ampcore._ampcore: the responder side of BoxDispatcher, for
 * BoxDispatcher._commandReceived: find the responder, call it, and answer
 * with its result or an error box.  When dispatchCommand is stock's, the
 * responder is called from here and a plain synchronous answer is sent
 * without any Deferred; every other outcome gets the Deferred chain stock
 * builds, with C callbacks in it.
 */
#ifndef AMPCORE_RESPONDER_H
#define AMPCORE_RESPONDER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "calls.h"
#include "failure.h"
#include "state.h"

/* The closures _commandReceived puts on a responder's Deferred. */
static const char *const answerBox_params[] = {"answerBox"};
static const char *const error_params[] = {"error"};
static const arg_spec formatAnswer_spec = {
    "BoxDispatcher._commandReceived.<locals>.formatAnswer", answerBox_params,
    1, 1, 0};
static const arg_spec formatError_spec = {
    "BoxDispatcher._commandReceived.<locals>.formatError", error_params,
    1, 1, 0};

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

#endif /* AMPCORE_RESPONDER_H */
