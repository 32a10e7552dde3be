/*
 * ampcore._ampcore: Twisted Failures from C.  An exception raised by user
 * code becomes a twisted.python.failure.Failure, as maybeDeferred's
 * `except: Failure()` makes one, and a failure nobody handles goes to the
 * dispatcher's unhandledError, as at the end of stock's Deferred chains.
 */
#ifndef AMPCORE_FAILURE_H
#define AMPCORE_FAILURE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "calls.h"
#include "compat.h"
#include "state.h"

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

/* `except BaseException: return fail()`: a Deferred failed with the
   exception being raised (new reference), or NULL. */
static PyObject *
fail_with_error(module_state *st)
{
    PyObject *failure = failure_from_error(st), *d;
    if (failure == NULL) {
        return NULL;
    }
    d = PyObject_CallOneArg(st->fail, failure);
    Py_DECREF(failure);
    return d;
}

#endif /* AMPCORE_FAILURE_H */
