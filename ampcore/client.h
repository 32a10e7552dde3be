/*
 * ampcore._ampcore: the client side of BoxDispatcher.  Sending a command
 * (BoxDispatcher._sendBoxCommand), and callRemote for a Command whose
 * construction, _doCommand, makeArguments and parseResponse are
 * Command's own: its arguments are coded in C (arguments.h), and its
 * Deferred is fired from C with the decoded answer, or with the failure
 * Command._doCommand's _massageError would give.  Any other command takes
 * stock's BoxDispatcher.callRemote.
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
 * Deferred after failAllOutgoing, or NULL.  For a registered request,
 * *tag_out (if given) receives its tag, a new reference; else NULL.
 */
static PyObject *
send_box_command(module_state *st, PyObject *self, PyObject *command,
                 PyObject *box, int wants, PyObject **tag_out)
{
    PyObject *reason, *tag = NULL, *sender = NULL, *r, *d = NULL, *table;

    if (tag_out != NULL) {
        *tag_out = NULL;
    }
    if ((reason = PyObject_GetAttr(self, st->str__failAllReason)) == NULL) {
        return NULL;
    }
    if (reason != Py_None) {
        /* Nothing is sent and no tag is used after failAllOutgoing. */
        r = wants ? PyObject_CallOneArg(st->fail, reason) : Py_NewRef(Py_None);
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
    if (wants && PyObject_SetItem(box, st->b_ASK, tag) < 0) {
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
    if (!wants) {
        Py_DECREF(tag);
        Py_RETURN_NONE;
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
    if (tag_out != NULL) {
        *tag_out = tag;
    }
    else {
        Py_DECREF(tag);
    }
    return d;
error:
    Py_XDECREF(tag);
    Py_XDECREF(sender);
    Py_XDECREF(d);
    return NULL;
}

/* ==== the calls callRemote sent from C ==================================
 *
 * Beside _outstandingRequests (tag -> Deferred, as stock keeps it), the
 * core keeps tag -> (Deferred, schema, Command class) for the requests
 * whose answers C decodes.  An answer is decoded only if the Deferred
 * popped from _outstandingRequests is the one recorded here, so that code
 * replacing entries of that table gets stock's behaviour.
 */

enum { CALL_DEFERRED, CALL_SCHEMA, CALL_COMMAND };

static int
remember_call(CoreObject *self, PyObject *tag, PyObject *d, PyObject *schema,
              PyObject *command)
{
    PyObject *entry;
    int rc;
    if (self->calls == NULL && (self->calls = PyDict_New()) == NULL) {
        return -1;
    }
    if ((entry = PyTuple_Pack(3, d, schema, command)) == NULL) {
        return -1;
    }
    rc = PyDict_SetItem(self->calls, tag, entry);
    Py_DECREF(entry);
    return rc;
}

/*
 * Take the call recorded for `tag` if its Deferred is `question`: 1 with
 * new references in *schema and *command, 0 if there is none, -1 on error.
 * The record is dropped either way.
 */
static int
recall_call(CoreObject *self, PyObject *tag, PyObject *question,
            PyObject **schema, PyObject **command)
{
    PyObject *entry;
    int mine;
    *schema = *command = NULL;
    if (self->calls == NULL || !PyDict_CheckExact(self->calls)) {
        return 0;
    }
    entry = PyDict_GetItemWithError(self->calls, tag);
    if (entry == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    mine = PyTuple_GET_ITEM(entry, CALL_DEFERRED) == question;
    if (mine) {
        *schema = Py_NewRef(PyTuple_GET_ITEM(entry, CALL_SCHEMA));
        *command = Py_NewRef(PyTuple_GET_ITEM(entry, CALL_COMMAND));
    }
    if (PyDict_DelItem(self->calls, tag) < 0) {
        Py_CLEAR(*schema);
        Py_CLEAR(*command);
        return -1;
    }
    return mine;
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

/* question.errback(what _massageError makes of `failure`): 0, or -1. */
static int
fail_call(module_state *st, PyObject *question, PyObject *schema,
          PyObject *command, PyObject *failure)
{
    PyObject *massaged = massage_error(st, schema, command, failure);
    int rc;
    if (massaged == NULL) {
        return -1;
    }
    rc = call1_void(question, st->str_errback, massaged);
    Py_DECREF(massaged);
    return rc;
}

/* An answer box to a call sent from C: fire its Deferred with the parsed
   response, or with the failure parseResponse's exception gives. */
static int
answer_call(module_state *st, PyObject *self, PyObject *question,
            PyObject *schema, PyObject *command, PyObject *box)
{
    PyObject *response = schema_parse_response(st, schema, command, box, self);
    PyObject *failure;
    int rc;
    if (response != NULL) {
        rc = call1_void(question, st->str_callback, response);
        Py_DECREF(response);
        return rc;
    }
    if ((failure = failure_from_error(st)) == NULL) {
        return -1;
    }
    rc = fail_call(st, question, schema, command, failure);
    Py_DECREF(failure);
    return rc;
}

/* ==== callRemote ========================================================= */

/* _massageError(error), bound to (schema, Command class): for a request
   that failed before it was sent (after failAllOutgoing), where stock's
   _doCommand chains it on the failed Deferred. */
static const char *const massage_params[] = {"error"};
static const arg_spec massageError_spec = {
    "Command._doCommand.<locals>._massageError", massage_params, 1, 1, 0};

static PyObject *
massage_errback(PyObject *call, PyTypeObject *cls, PyObject *const *args,
                Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *error;
    if (bind_args(&massageError_spec, args, nargs, kwnames, &error, NULL,
                  NULL) < 0) {
        return NULL;
    }
    return massage_error(state_from_class(cls), PyTuple_GET_ITEM(call, 0),
                         PyTuple_GET_ITEM(call, 1), error);
}

static PyMethodDef massage_errback_def = {
    "_massageError", (PyCFunction)(void (*)(void))massage_errback,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};

/* d.addErrback(_massageError) for a request failAllOutgoing refused. */
static int
chain_massage(module_state *st, PyObject *d, PyObject *schema,
              PyObject *command)
{
    PyObject *call = PyTuple_Pack(2, schema, command), *errback;
    int rc;
    if (call == NULL) {
        return -1;
    }
    errback = PyCMethod_New(&massage_errback_def, call, NULL,
                            st->DispatcherCoreType);
    Py_DECREF(call);
    if (errback == NULL) {
        return -1;
    }
    rc = call1_void(d, st->str_addErrback, errback);
    Py_DECREF(errback);
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
    PyObject *me = (PyObject *)self, *command, *schema, *box, *name, *d, *tag;
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
    if ((schema_stock(schema) & CLIENT_STOCK) != CLIENT_STOCK) {
        Py_DECREF(schema);
        return call_with_self(st->stock_callRemote, me, args, nargs, kwnames);
    }
    /* `try: co = commandType(**kw) except BaseException: return fail()` */
    if (schema_check_keywords(st, schema, command, kwnames) < 0) {
        Py_DECREF(schema);
        return fail_with_error(st);
    }
    /* _doCommand: proto._sendBoxCommand(self.commandName,
       self.makeArguments(self.structured, proto), self.requiresAnswer),
       evaluated in that order; what raises here, callRemote raises. */
    if ((name = schema_attr(st, schema, command, ATTR_COMMAND_NAME)) == NULL) {
        Py_DECREF(schema);
        return NULL;
    }
    box = schema_make_arguments_kw(st, schema, command, args + nargs, kwnames,
                                   me);
    if (box == NULL || (wants = schema_requires_answer(st, schema, command)) < 0) {
        Py_XDECREF(box);
        Py_DECREF(name);
        Py_DECREF(schema);
        return NULL;
    }
    d = send_box_command(st, me, name, box, wants, &tag);
    Py_DECREF(name);
    Py_DECREF(box);
    if (d != NULL && tag != NULL) {
        /* Registered: its answer is decoded here, into this Deferred. */
        if (remember_call(self, tag, d, schema, command) < 0) {
            Py_CLEAR(d);
        }
        Py_DECREF(tag);
    }
    else if (d != NULL && wants && chain_massage(st, d, schema, command) < 0) {
        /* Refused after failAllOutgoing: fail(reason), massaged. */
        Py_CLEAR(d);
    }
    Py_DECREF(schema);
    return d;
}

#endif /* AMPCORE_CLIENT_H */
