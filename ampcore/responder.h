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

#include "arguments.h"
#include "calls.h"
#include "compat.h"
#include "failure.h"
#include "schema.h"
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
    if ((ask = box_getitem(st, request, st->b_ASK)) == NULL) {
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
        || (ask = box_getitem(st, request, st->b_ASK)) == NULL
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
    PyObject *result = PyObject_CallOneArg(responder, box), *d;
    *plain = NULL;
    if (result == NULL) {
        return fail_with_error(st);
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
    PyObject *ask = box_getitem(st, box, st->b_ASK), *r;
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

/* ==== Commands served from C ===========================================
 *
 * When AMP's own locator finds a Command responder (the class's
 * _commandDispatch, as CommandLocator.locateResponder reads it), the work
 * of CommandLocator._wrapWithSerialization's `doit` is done here: parse
 * the arguments, call the responder, and make the response, with the
 * Deferred chain stock builds only for results that need one.
 */

/* What the responder side needs of a Command class to stand in for
   stock's code: Command's own parseArguments and makeResponse. */
#define SERVER_STOCK (STOCK_PARSE_ARGUMENTS | STOCK_MAKE_RESPONSE)

/* Whether self locates responders as stock AMP does: AMP.locateResponder,
   which asks CommandLocator then SimpleStringLocator, with
   _wrapWithSerialization stock's, none of them overridden. */
static int
locates_as_stock(module_state *st, PyObject *self)
{
    return resolves_to(self, st->str_locateResponder, st->stock_locateResponder)
           && resolves_to(self, st->str__wrapWithSerialization,
                          st->stock_wrapWithSerialization)
           && compat_type_lookup((PyTypeObject *)st->CommandLocator,
                                 st->str_locateResponder)
               == st->stock_command_locateResponder
           && compat_type_lookup((PyTypeObject *)st->SimpleStringLocator,
                                 st->str_locateResponder)
               == st->stock_string_locateResponder;
}

/* The arguments of the closures below: (proto, responder function,
   command, its schema), as _wrapWithSerialization's `doit` holds them. */
enum { SERVE_PROTO, SERVE_RESPONDER, SERVE_COMMAND, SERVE_SCHEMA };

static const char *const objects_params[] = {"objects"};
static const arg_spec makeResponseFor_spec = {
    "CommandLocator._wrapWithSerialization.<locals>.doit.<locals>."
    "makeResponseFor", objects_params, 1, 1, 0};
static const arg_spec checkKnownErrors_spec = {
    "CommandLocator._wrapWithSerialization.<locals>.doit.<locals>."
    "checkKnownErrors", error_params, 1, 1, 0};

/* makeResponseFor's `except`: raise BadLocalReturn for the exception being
   raised, with stock's message. */
static void
raise_bad_local_return(module_state *st, PyObject *serve, PyObject *objects)
{
    PyObject *original, *method, *message, *exc;
    if ((original = failure_from_error(st)) == NULL) {
        return;
    }
    method = PyMethod_New(PyTuple_GET_ITEM(serve, SERVE_RESPONDER),
                          PyTuple_GET_ITEM(serve, SERVE_PROTO));
    if (method == NULL) {
        Py_DECREF(original);
        return;
    }
    message = PyUnicode_FromFormat("%R returned %R and %R could not serialize it",
                                   method, objects,
                                   PyTuple_GET_ITEM(serve, SERVE_COMMAND));
    Py_DECREF(method);
    if (message == NULL) {
        Py_DECREF(original);
        return;
    }
    exc = PyObject_CallFunctionObjArgs(st->BadLocalReturn, message, original,
                                       NULL);
    Py_DECREF(message);
    Py_DECREF(original);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* makeResponseFor(objects), bound to (proto, responder, command). */
static PyObject *
make_response_for(PyObject *serve, PyTypeObject *cls, PyObject *const *args,
                  Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *objects, *response;
    if (bind_args(&makeResponseFor_spec, args, nargs, kwnames, &objects, NULL,
                  NULL) < 0) {
        return NULL;
    }
    response = schema_make_response(st, PyTuple_GET_ITEM(serve, SERVE_SCHEMA),
                                    PyTuple_GET_ITEM(serve, SERVE_COMMAND),
                                    objects,
                                    PyTuple_GET_ITEM(serve, SERVE_PROTO));
    if (response == NULL
        && schema_response_all_stock(PyTuple_GET_ITEM(serve, SERVE_SCHEMA))
        && PyErr_ExceptionMatches(PyExc_Exception)) {
        /* BadLocalReturn's text carries the brief traceback of the error,
           which C code has none of: make the response again with stock's
           Python code (the stock classes' code on the same values), so
           that the error raised carries stock's frames. */
        PyErr_Clear();
        response = PyObject_CallFunctionObjArgs(
            st->stock_makeResponse, PyTuple_GET_ITEM(serve, SERVE_COMMAND),
            objects, PyTuple_GET_ITEM(serve, SERVE_PROTO), NULL);
    }
    if (response == NULL) {
        raise_bad_local_return(st, serve, objects);
    }
    return response;
}

/* checkKnownErrors(error), bound to the command: an error the command
   declares becomes a RemoteAmpError carrying its code; any other is
   re-raised by Failure.trap. */
static PyObject *
check_known_errors(PyObject *command, PyTypeObject *cls, PyObject *const *args,
                   Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *error, *all, *types = NULL, *trap = NULL, *key = NULL;
    PyObject *code = NULL, *value = NULL, *desc = NULL, *fatal_errors = NULL;
    PyObject *exc = NULL, *kw = NULL, *callargs = NULL, *result = NULL;
    int fatal;

    if (bind_args(&checkKnownErrors_spec, args, nargs, kwnames, &error, NULL,
                  NULL) < 0) {
        return NULL;
    }
    /* key = error.trap(*command.allErrors) */
    if ((all = PyObject_GetAttr(command, st->str_allErrors)) == NULL) {
        return NULL;
    }
    if ((types = PySequence_Tuple(all)) == NULL
        || (trap = PyObject_GetAttr(error, st->str_trap)) == NULL
        || (key = PyObject_Call(trap, types, NULL)) == NULL
        || (code = PyObject_GetItem(all, key)) == NULL
        || (value = PyObject_GetAttr(error, st->str_value)) == NULL
        || (desc = PyObject_Str(value)) == NULL
        || (fatal_errors = PyObject_GetAttr(command, st->str_fatalErrors)) == NULL
        || (fatal = PySequence_Contains(fatal_errors, key)) < 0) {
        goto done;
    }
    /* Failure(RemoteAmpError(code, desc, fatal, local=error)) */
    if ((callargs = Py_BuildValue("(OOO)", code, desc,
                                  fatal ? Py_True : Py_False)) == NULL
        || (kw = Py_BuildValue("{sO}", "local", error)) == NULL
        || (exc = PyObject_Call(st->RemoteAmpError, callargs, kw)) == NULL) {
        goto done;
    }
    result = PyObject_CallOneArg(st->Failure, exc);
done:
    Py_DECREF(all);
    Py_XDECREF(types);
    Py_XDECREF(trap);
    Py_XDECREF(key);
    Py_XDECREF(code);
    Py_XDECREF(value);
    Py_XDECREF(desc);
    Py_XDECREF(fatal_errors);
    Py_XDECREF(callargs);
    Py_XDECREF(kw);
    Py_XDECREF(exc);
    return result;
}

static PyMethodDef make_response_for_def = {
    "makeResponseFor", (PyCFunction)(void (*)(void))make_response_for,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};
static PyMethodDef check_known_errors_def = {
    "checkKnownErrors", (PyCFunction)(void (*)(void))check_known_errors,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};

/* d.addCallback(makeResponseFor) (unless `respond` is 0: d already failed)
   and d.addErrback(checkKnownErrors), as `doit` chains them: 0, or -1. */
static int
chain_serialization(module_state *st, PyObject *serve, PyObject *d,
                    int respond)
{
    PyObject *callback, *errback;
    int rc;
    if (respond) {
        callback = PyCMethod_New(&make_response_for_def, serve, NULL,
                                 st->DispatcherCoreType);
        if (callback == NULL) {
            return -1;
        }
        rc = call1_void(d, st->str_addCallback, callback);
        Py_DECREF(callback);
        if (rc < 0) {
            return -1;
        }
    }
    errback = PyCMethod_New(&check_known_errors_def,
                            PyTuple_GET_ITEM(serve, SERVE_COMMAND), NULL,
                            st->DispatcherCoreType);
    if (errback == NULL) {
        return -1;
    }
    rc = call1_void(d, st->str_addErrback, errback);
    Py_DECREF(errback);
    return rc;
}

/* fail(the exception being raised), with `doit`'s chain: a new reference,
   or NULL. */
static PyObject *
failed_serving(module_state *st, PyObject *serve)
{
    PyObject *d = fail_with_error(st);
    if (d != NULL && chain_serialization(st, serve, d, 0) < 0) {
        Py_CLEAR(d);
    }
    return d;
}

/*
 * What dispatchCommand's maybeDeferred(doit, box) gives for a Command
 * served from C, for every outcome but a response made synchronously: that
 * one (the response box) is returned in *plain, with no Deferred at all.
 */
static PyObject *
serve_command(module_state *st, PyObject *self, PyObject *box,
              PyObject *command, PyObject *schema, PyObject *responder,
              PyObject **plain)
{
    PyObject *kw, *result, *serve, *d = NULL;
    int respond = 1;

    *plain = NULL;
    /* An error here is doit's own: maybeDeferred fails with it, and
       checkKnownErrors never sees it.  That includes an argument named f,
       which doit's maybeDeferred(aCallable, **kw) takes for its own. */
    kw = schema_parse_arguments(st, schema, command, box, self);
    if (kw != NULL && PyDict_Check(kw)) {
        int clash = PyDict_Contains(kw, st->str_f);
        if (clash != 0) {
            if (clash > 0) {
                PyErr_SetString(PyExc_TypeError, "maybeDeferred() got "
                                "multiple values for argument 'f'");
            }
            Py_CLEAR(kw);
        }
    }
    if (kw == NULL) {
        return fail_with_error(st);
    }
    if ((serve = PyTuple_Pack(4, self, responder, command, schema)) == NULL) {
        Py_DECREF(kw);
        return NULL;
    }
    /* MethodType(responder, self)(**kw) */
    result = PyObject_VectorcallDict(responder, &self, 1, kw);
    Py_DECREF(kw);
    if (result == NULL) {
        d = failed_serving(st, serve);
        Py_DECREF(serve);
        return d;
    }
    if (PyObject_TypeCheck(result, (PyTypeObject *)st->Deferred)) {
        d = result;
    }
    else if (PyObject_TypeCheck(result, (PyTypeObject *)st->Failure)) {
        d = PyObject_CallOneArg(st->fail, result);
        Py_DECREF(result);
        respond = 0;
    }
    else if (PyCoro_CheckExact(result)) {
        d = call1(st->Deferred, st->str_fromCoroutine, result);
        Py_DECREF(result);
    }
    else {
        /* A plain result: makeResponseFor now, no Deferred unless it
           fails. */
        *plain = make_response_for(serve, st->DispatcherCoreType, &result, 1,
                                   NULL);
        Py_DECREF(result);
        if (*plain == NULL) {
            d = failed_serving(st, serve);
            Py_DECREF(serve);
            return d;
        }
        /* makeResponse may give a Deferred or a Failure (for one, fail()
           when responseType() raises): the chain goes on from it, as a
           callback's Deferred or Failure result would make it. */
        if (PyObject_TypeCheck(*plain, (PyTypeObject *)st->Deferred)) {
            d = *plain;
        }
        else if (PyObject_TypeCheck(*plain, (PyTypeObject *)st->Failure)) {
            d = PyObject_CallOneArg(st->fail, *plain);
            Py_DECREF(*plain);
        }
        else {
            Py_DECREF(serve);
            return NULL;
        }
        *plain = NULL;
        respond = 0;
    }
    if (d != NULL && chain_serialization(st, serve, d, respond) < 0) {
        Py_CLEAR(d);
    }
    Py_DECREF(serve);
    return d;
}

/* twisted.python.compat.nativeString(s): Twisted's own for anything but
   exact bytes and str. */
static PyObject *
native_string(module_state *st, PyObject *s)
{
    if (PyBytes_CheckExact(s)) {
        return PyUnicode_DecodeASCII(PyBytes_AS_STRING(s), PyBytes_GET_SIZE(s),
                                     NULL);
    }
    if (PyUnicode_CheckExact(s)) {
        PyObject *ascii = PyUnicode_AsASCIIString(s);
        if (ascii == NULL) {
            return NULL;
        }
        Py_DECREF(ascii);
        return Py_NewRef(s);
    }
    return PyObject_CallOneArg(st->nativeString, s);
}

/* nativeString(prefix + name.upper()) for bytes (bytes.upper changes
   ASCII letters only): a new str, or NULL with UnicodeDecodeError as
   bytes.decode("ascii") raises it. */
static PyObject *
ascii_method_name(PyObject *prefix, PyObject *name)
{
    Py_ssize_t np = PyBytes_GET_SIZE(prefix), nn = PyBytes_GET_SIZE(name), i;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(prefix);
    const unsigned char *q = (const unsigned char *)PyBytes_AS_STRING(name);
    PyObject *joined, *fname;
    Py_UCS1 *out;
    int ascii = np <= PY_SSIZE_T_MAX - nn;
    for (i = 0; ascii && i < np; i++) {
        ascii = p[i] < 128;
    }
    for (i = 0; ascii && i < nn; i++) {
        ascii = q[i] < 128;
    }
    if (!ascii) {
        /* Not ASCII: the error bytes.decode("ascii") gives, on the
           joined bytes as stock decodes them. */
        PyObject *upper = PyObject_CallMethod(name, "upper", NULL);
        if (upper == NULL) {
            return NULL;
        }
        joined = PyNumber_Add(prefix, upper);
        Py_DECREF(upper);
        if (joined == NULL) {
            return NULL;
        }
        fname = PyUnicode_DecodeASCII(PyBytes_AS_STRING(joined),
                                      PyBytes_GET_SIZE(joined), NULL);
        Py_DECREF(joined);
        return fname;
    }
    if ((fname = PyUnicode_New(np + nn, 127)) == NULL) {
        return NULL;
    }
    out = PyUnicode_1BYTE_DATA(fname);
    memcpy(out, p, (size_t)np);
    for (i = 0; i < nn; i++) {
        out[np + i] = (Py_UCS1)(q[i] >= 'a' && q[i] <= 'z' ? q[i] - 32 : q[i]);
    }
    return fname;
}

/* SimpleStringLocator.locateResponder(self, name): getattr(self,
   nativeString(self.baseDispatchPrefix + name.upper()), None). */
static PyObject *
locate_string_responder(module_state *st, PyObject *self, PyObject *name)
{
    PyObject *prefix, *upper = NULL, *joined = NULL, *fname = NULL;
    PyObject *responder = NULL;

    if ((prefix = PyObject_GetAttr(self, st->str_baseDispatchPrefix)) == NULL) {
        return NULL;
    }
    if (PyBytes_CheckExact(prefix) && PyBytes_CheckExact(name)) {
        fname = ascii_method_name(prefix, name);
    }
    else if ((upper = call0(name, st->str_upper)) != NULL
             && (joined = PyNumber_Add(prefix, upper)) != NULL) {
        fname = native_string(st, joined);
    }
    if (fname != NULL) {
        /* The same object as the name in the class's dict, so that the
           type's method cache, which compares names by identity, finds
           it, rather than a new string each call missing it. */
        PyUnicode_InternInPlace(&fname);
        responder = PyObject_GetAttr(self, fname);
        if (responder == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            responder = Py_NewRef(Py_None);
        }
    }
    Py_DECREF(prefix);
    Py_XDECREF(upper);
    Py_XDECREF(joined);
    Py_XDECREF(fname);
    return responder;
}

/*
 * AMP.locateResponder(cmd) for a locator that locates as stock does, with
 * a Command's responder served from C when its coding is stock's: returns
 * the Deferred dispatchCommand would, or NULL with the response box in
 * *plain, or NULL with an exception set.
 */
static PyObject *
dispatch_located(module_state *st, PyObject *self, PyObject *box,
                 PyObject *cmd, PyObject **plain)
{
    PyObject *table, *entry, *responder, *d;
    int found;

    *plain = NULL;
    if ((table = PyObject_GetAttr(self, st->str__commandDispatch)) == NULL) {
        return NULL;
    }
    /* CommandLocator.locateResponder: `if name in cd: ... = cd[name]` */
    found = box_contains(st, table, cmd);
    entry = found > 0 ? box_getitem(st, table, cmd) : NULL;
    Py_DECREF(table);
    if (found < 0 || (found && entry == NULL)) {
        return NULL;
    }
    if (found && PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 2
        && PyType_Check(PyTuple_GET_ITEM(entry, 0))
        && PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(entry, 0),
                            (PyTypeObject *)st->Command)) {
        PyObject *command = PyTuple_GET_ITEM(entry, 0);
        PyObject *schema = command_schema(st, command);
        if (schema == NULL) {
            Py_DECREF(entry);
            return NULL;
        }
        if ((schema_stock(schema) & SERVER_STOCK) == SERVER_STOCK) {
            d = serve_command(st, self, box, command, schema,
                              PyTuple_GET_ITEM(entry, 1), plain);
            Py_DECREF(schema);
            Py_DECREF(entry);
            return d;
        }
        Py_DECREF(schema);
    }
    Py_XDECREF(entry);
    if (found) {
        /* Not coded as stock codes: stock's own lookup and doit. */
        responder = call1(self, st->str_locateResponder, cmd);
    }
    else {
        /* AMP.locateResponder's second choice, amp_<NAME> methods. */
        responder = locate_string_responder(st, self, cmd);
    }
    if (responder == NULL) {
        return NULL;
    }
    if (responder == Py_None) {
        Py_DECREF(responder);
        return unhandled_command(st, cmd, &d) < 0 ? NULL : d;
    }
    d = responder_deferred(st, responder, box, plain);
    Py_DECREF(responder);
    return d;
}

/*
 * What self.dispatchCommand(box) gives, as a Deferred (a new reference),
 * or NULL with a plain synchronous answer in *plain, or NULL with an
 * exception set.  When dispatchCommand is stock's, its work is done here,
 * and a plain result never goes through Deferreds.
 */
static PyObject *
dispatch_command(module_state *st, PyObject *self, PyObject *box,
                 PyObject **plain)
{
    PyObject *cmd, *locator, *responder, *d = NULL;

    *plain = NULL;
    if (!resolves_to(self, st->str_dispatchCommand, st->stock_dispatchCommand)) {
        return call1(self, st->str_dispatchCommand, box);
    }
    if ((cmd = box_getitem(st, box, st->b_COMMAND)) == NULL) {
        return NULL;
    }
    if ((locator = PyObject_GetAttr(self, st->str_locator)) == NULL) {
        Py_DECREF(cmd);
        return NULL;
    }
    if (locator == self && locates_as_stock(st, self)) {
        d = dispatch_located(st, self, box, cmd, plain);
    }
    else if ((responder = call1(locator, st->str_locateResponder, cmd)) != NULL) {
        if (responder == Py_None) {
            (void)unhandled_command(st, cmd, &d);
        }
        else {
            d = responder_deferred(st, responder, box, plain);
        }
        Py_DECREF(responder);
    }
    Py_DECREF(locator);
    Py_DECREF(cmd);
    return d;
}

/* BoxDispatcher._commandReceived(box) */
static int
command_received(module_state *st, PyObject *self, PyObject *box)
{
    PyObject *deferred, *plain;
    int has_ask, rc;

    deferred = dispatch_command(st, self, box, &plain);
    if (deferred == NULL && plain == NULL) {
        return -1;
    }
    if ((has_ask = box_contains(st, box, st->b_ASK)) < 0) {
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
