/*
 * ampcore._ampcore: the client side of BoxDispatcher.  Sending a command
 * (BoxDispatcher._sendBoxCommand), and callRemote for a Command whose
 * construction, _doCommand, makeArguments and parseResponse are
 * Command's own: its arguments are coded in C (arguments.h), and the
 * Deferred returned carries, as stock's does, the parsing of the answer
 * and _massageError, here as C callbacks.  Any other command takes stock's
 * BoxDispatcher.callRemote.
 */
#ifndef AMPCORE_CLIENT_H
#define AMPCORE_CLIENT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "arguments.h"
#include "calls.h"
#include "core.h"
#include "failure.h"
#include "schema.h"
#include "state.h"

/* What callRemote's fast path needs of a Command class to stand in for
   stock's code. */
#define CLIENT_STOCK \
    (STOCK_CONSTRUCTION | STOCK_DO_COMMAND | STOCK_MAKE_ARGUMENTS \
     | STOCK_PARSE_RESPONSE)

/* ==== sending =========================================================== */

/*
 * BoxDispatcher._sendBoxCommand(command, box, requiresAnswer): the
 * Deferred registered for the answer (a new reference), None, a failed
 * Deferred after failAllOutgoing, or NULL.  requiresAnswer's truth is
 * taken where stock's `if requiresAnswer:` takes it, each time.
 */
static PyObject *
send_box_command(module_state *st, PyObject *self, PyObject *command,
                 PyObject *box, PyObject *requires)
{
    PyObject *reason, *tag = NULL, *sender = NULL, *r, *d = NULL, *table;
    int wants;

    if ((reason = PyObject_GetAttr(self, st->str__failAllReason)) == NULL) {
        return NULL;
    }
    if (reason != Py_None) {
        /* Nothing is sent and no tag is used after failAllOutgoing. */
        wants = PyObject_IsTrue(requires);
        r = wants < 0 ? NULL
            : wants ? PyObject_CallOneArg(st->fail, reason) : Py_NewRef(Py_None);
        Py_DECREF(reason);
        return r;
    }
    Py_DECREF(reason);
    if (PyObject_SetItem(box, st->b_COMMAND, command) < 0) {
        return NULL;
    }
    if ((tag = call0(self, st->str__nextTag)) == NULL) {
        return NULL;
    }
    if ((wants = PyObject_IsTrue(requires)) < 0
        || (wants && PyObject_SetItem(box, st->b_ASK, tag) < 0)) {
        goto error;
    }
    if ((sender = PyObject_GetAttr(self, st->str_boxSender)) == NULL) {
        goto error;
    }
    if (resolves_to(box, st->str__sendTo, st->stock_sendTo)) {
        /* AmpBox._sendTo is exactly sender.sendBox(box). */
        r = call1(sender, st->str_sendBox, box);
    }
    else {
        r = call1(box, st->str__sendTo, sender);
    }
    Py_CLEAR(sender);
    if (r == NULL) {
        goto error;
    }
    Py_DECREF(r);
    if ((wants = PyObject_IsTrue(requires)) <= 0) {
        Py_DECREF(tag);
        return wants < 0 ? NULL : Py_NewRef(Py_None);
    }
    /* Registered only after a successful send, as stock does. */
    if ((d = PyObject_CallNoArgs(st->Deferred)) == NULL) {
        goto error;
    }
    if ((table = PyObject_GetAttr(self, st->str__outstandingRequests)) == NULL) {
        goto error;
    }
    if (PyObject_SetItem(table, tag, d) < 0) {
        Py_DECREF(table);
        goto error;
    }
    Py_DECREF(table);
    Py_DECREF(tag);
    return d;
error:
    Py_XDECREF(tag);
    Py_XDECREF(sender);
    Py_XDECREF(d);
    return NULL;
}

/* ==== answers ============================================================ */

/*
 * What Command._doCommand's _massageError leaves of a failure (a new
 * reference): a RemoteAmpError becomes the exception the Command declares
 * for its code (reverseErrors), or UnknownRemoteError, with its
 * description; any other failure goes on, as a new Failure of the same
 * exception.
 */
static PyObject *
massage_error(module_state *st, PyObject *schema, PyObject *command,
              PyObject *failure)
{
    PyObject *trapped, *value, *code, *desc, *reverse, *error_type, *exc;
    PyObject *result = NULL;

    /* error.trap(RemoteAmpError): anything else is raised again, and the
       Deferred makes a new Failure of it. */
    if ((trapped = call1(failure, st->str_trap, st->RemoteAmpError)) == NULL) {
        return failure_from_error(st);
    }
    Py_DECREF(trapped);
    if ((value = PyObject_GetAttr(failure, st->str_value)) == NULL) {
        return NULL;
    }
    code = PyObject_GetAttr(value, st->str_errorCode);
    desc = code ? PyObject_GetAttr(value, st->str_description) : NULL;
    reverse = desc ? schema_attr(st, schema, command, ATTR_REVERSE_ERRORS) : NULL;
    /* self.reverseErrors.get(rje.errorCode, UnknownRemoteError) */
    error_type = reverse ? PyObject_CallMethodObjArgs(reverse, st->str_get, code,
                                                      st->UnknownRemoteError,
                                                      NULL)
                         : NULL;
    exc = error_type ? PyObject_CallOneArg(error_type, desc) : NULL;
    if (exc != NULL) {
        result = PyObject_CallOneArg(st->Failure, exc);
    }
    Py_DECREF(value);
    Py_XDECREF(code);
    Py_XDECREF(desc);
    Py_XDECREF(reverse);
    Py_XDECREF(error_type);
    Py_XDECREF(exc);
    return result;
}

/* The closures Command._doCommand chains, bound to (schema, Command class,
   proto). */
enum { CALL_SCHEMA, CALL_COMMAND, CALL_PROTO };

static const char *const answer_params[] = {"box"};
static const char *const massage_params[] = {"error"};
static const arg_spec parseResponseCallback_spec = {
    "Command.parseResponse", answer_params, 1, 1, 0};
static const arg_spec massageError_spec = {
    "Command._doCommand.<locals>._massageError", massage_params, 1, 1, 0};

/* _massageError(error) */
static PyObject *
massage_errback(PyObject *call, PyTypeObject *cls, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *error;
    if (bind_args(&massageError_spec, args, nargs, kwnames, &error, NULL,
                  NULL) < 0) {
        return NULL;
    }
    return massage_error(state_from_class(cls), PyTuple_GET_ITEM(call, CALL_SCHEMA),
                         PyTuple_GET_ITEM(call, CALL_COMMAND), error);
}

/*
 * parseResponse(box, proto), and what _massageError makes of its error:
 * stock chains the two as a callback and the next errback; with no other
 * callback between them, returning the massaged Failure from here is the
 * same chain in one step.
 */
static PyObject *
parse_response_callback(PyObject *call, PyTypeObject *cls,
                        PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *box, *response, *failure, *massaged;
    if (bind_args(&parseResponseCallback_spec, args, nargs, kwnames, &box, NULL,
                  NULL) < 0) {
        return NULL;
    }
    response = schema_parse_response(st, PyTuple_GET_ITEM(call, CALL_SCHEMA),
                                     PyTuple_GET_ITEM(call, CALL_COMMAND), box,
                                     PyTuple_GET_ITEM(call, CALL_PROTO));
    if (response != NULL) {
        return response;
    }
    if ((failure = failure_from_error(st)) == NULL) {
        return NULL;
    }
    massaged = massage_error(st, PyTuple_GET_ITEM(call, CALL_SCHEMA),
                             PyTuple_GET_ITEM(call, CALL_COMMAND), failure);
    Py_DECREF(failure);
    return massaged;
}

static PyMethodDef parse_response_def = {
    "parseResponse", (PyCFunction)(void (*)(void))parse_response_callback,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};
static PyMethodDef massage_errback_def = {
    "_massageError", (PyCFunction)(void (*)(void))massage_errback,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};

/* d.addCallback(parseResponse, proto); d.addErrback(_massageError), as
   Command._doCommand chains them: 0, or -1. */
static int
chain_call(module_state *st, PyObject *d, PyObject *schema, PyObject *command,
           PyObject *proto)
{
    PyObject *call, *callback = NULL, *errback = NULL, *r;
    int rc = -1;
    if (d == Py_None) {
        /* requiresAnswer turned false inside _sendBoxCommand and true
           again: stock's d.addCallback(...) fails on None. */
        r = PyObject_GetAttr(d, st->str_addCallback);
        Py_XDECREF(r);
        return -1;
    }
    call = PyTuple_Pack(3, schema, command, proto);
    if (call != NULL
        && (callback = PyCMethod_New(&parse_response_def, call, NULL,
                                     st->DispatcherCoreType)) != NULL
        && (errback = PyCMethod_New(&massage_errback_def, call, NULL,
                                    st->DispatcherCoreType)) != NULL) {
        rc = add_callbacks(st, d, callback, errback);
    }
    Py_XDECREF(call);
    Py_XDECREF(callback);
    Py_XDECREF(errback);
    return rc;
}

/* ==== callRemote ========================================================= */

/* BoxDispatcher.callRemote(commandType, *a, **kw) */
static PyObject *
Dispatcher_callRemote(CoreObject *self, PyTypeObject *cls,
                      PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    module_state *st = state_from_class(cls);
    PyObject *me = (PyObject *)self, *command, *schema, *box = NULL;
    PyObject *name = NULL, *requires = NULL, *d = NULL;
    int wants;

    /* Positional extras (ProtocolSwitchCommand's factory), and a
       _sendBoxCommand of someone else's: stock's own code. */
    if (nargs != 1
        || !resolves_to(me, st->str__sendBoxCommand, st->core_sendBoxCommand)) {
        return call_with_self(st->stock_callRemote, me, args, nargs, kwnames);
    }
    command = args[0];
    if ((schema = command_schema(st, command)) == NULL) {
        return NULL;
    }
    /* The Command instance is never made: what _doCommand reads through
       it (`self.commandName`, ...) is read from the class, which is the
       same while the class's attributes are plain values (a coded schema)
       and its instances look attributes up the ordinary way. */
    if ((schema_stock(schema) & CLIENT_STOCK) != CLIENT_STOCK
        || !schema_coded_in_c(schema)
        || ((PyTypeObject *)command)->tp_getattro != PyObject_GenericGetAttr) {
        Py_DECREF(schema);
        return call_with_self(st->stock_callRemote, me, args, nargs, kwnames);
    }
    /* `try: co = commandType(**kw) except BaseException: return fail()` */
    if (schema_check_keywords(st, schema, command, kwnames) < 0) {
        Py_DECREF(schema);
        return fail_with_error(st);
    }
    /* _doCommand: d = proto._sendBoxCommand(self.commandName,
       self.makeArguments(self.structured, proto), self.requiresAnswer),
       evaluated in that order (what raises here, callRemote raises); then
       `if self.requiresAnswer:` chains parseResponse and _massageError. */
    if ((name = schema_attr(st, schema, command, ATTR_COMMAND_NAME)) == NULL
        || (box = schema_make_arguments_kw(st, schema, command, args + nargs,
                                           kwnames, me)) == NULL
        || (requires = schema_attr(st, schema, command,
                                   ATTR_REQUIRES_ANSWER)) == NULL
        || (d = send_box_command(st, me, name, box, requires)) == NULL
        || (wants = schema_requires_answer(st, schema, command)) < 0
        || (wants && chain_call(st, d, schema, command, me) < 0)) {
        Py_CLEAR(d);
    }
    Py_XDECREF(name);
    Py_XDECREF(box);
    Py_XDECREF(requires);
    Py_DECREF(schema);
    return d;
}

#endif /* AMPCORE_CLIENT_H */
