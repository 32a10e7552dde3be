/*
 * ampcore._ampcore: calling out to Python and binding the arguments of
 * calls in.
 *
 * Calls out go through the vectorcall method API with interned names: no
 * bound-method objects, no argument tuples.  Calls in are bound by one
 * binder, bind_args(), so every C method refuses bad arguments with the
 * message Python gives for the stock method it stands in for.  Boxes are
 * asked for keys without the detour Python subclasses of dict take.
 */
#ifndef AMPCORE_CALLS_H
#define AMPCORE_CALLS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <string.h>

#include "compat.h"
#include "state.h"

/* ==== calling out ======================================================= */

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

/* func(self, *args, **kw) for a vectorcall's arguments (the caller's
   args cannot be assumed to have room for self in front). */
static PyObject *
call_with_self(PyObject *func, PyObject *self, PyObject *const *args,
               Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *small[8], **stack = small, *r;
    Py_ssize_t i, n = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (n + 1 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))
        && (stack = PyMem_New(PyObject *, (size_t)n + 1)) == NULL) {
        return PyErr_NoMemory();
    }
    stack[0] = self;
    for (i = 0; i < n; i++) {
        stack[i + 1] = args[i];
    }
    r = PyObject_Vectorcall(func, stack, (size_t)nargs + 1, kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return r;
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

/*
 * `key in box` and `box[key]` for the boxes AMP passes around: a dict,
 * or a dict subclass (AmpBox) that keeps dict's own __contains__ and
 * __getitem__ and has no __missing__, is asked as a dict.  (A Python
 * subclass of dict reaches those through slot wrappers that call the
 * method by name, several times the cost.)  Anything else: the protocol.
 */
static int
box_contains(module_state *st, PyObject *box, PyObject *key)
{
    if (PyDict_CheckExact(box)
        || (PyDict_Check(box)
            && compat_type_lookup(Py_TYPE(box), st->str___contains__)
               == st->dict_contains)) {
        return PyDict_Contains(box, key);
    }
    return PySequence_Contains(box, key);
}

/* box[key], a new reference, or NULL with KeyError or another error. */
static PyObject *
box_getitem(module_state *st, PyObject *box, PyObject *key)
{
    PyTypeObject *tp = Py_TYPE(box);
    PyObject *v, *exc;
    if (PyDict_CheckExact(box)
        || (PyDict_Check(box)
            && compat_type_lookup(tp, st->str___getitem__) == st->dict_getitem
            && compat_type_lookup(tp, st->str___missing__) == NULL)) {
        if ((v = PyDict_GetItemWithError(box, key)) != NULL) {
            return Py_NewRef(v);
        }
        if (!PyErr_Occurred()
            && (exc = PyObject_CallOneArg(PyExc_KeyError, key)) != NULL) {
            /* dict's own KeyError(key), its one argument the key. */
            PyErr_SetObject(PyExc_KeyError, exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    return PyObject_GetItem(box, key);
}

/*
 * d.addCallbacks(callback, errback, callbackKeywords={}): the entry
 * d.addCallback/addErrback would add, with a plain dict for the callback's
 * keywords.  Twisted runs each callback as callback(result, *args,
 * **keywords), and unpacking its default (a read-only mapping proxy)
 * costs a method call; a dict is unpacked in place.  0, or -1.
 */
static int
add_callbacks(module_state *st, PyObject *d, PyObject *callback,
              PyObject *errback)
{
    /* stack[0] is the spare slot PY_VECTORCALL_ARGUMENTS_OFFSET lends. */
    PyObject *stack[5], *r;
    if ((stack[4] = PyDict_New()) == NULL) {
        return -1;
    }
    stack[0] = NULL;
    stack[1] = d;
    stack[2] = callback;
    stack[3] = errback;
    r = PyObject_VectorcallMethod(st->str_addCallbacks, stack + 1,
                                  3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                  st->kw_callbackKeywords);
    Py_DECREF(stack[4]);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Does `name` on `self` still resolve to `expected` (found on the type,
   with no instance attribute shadowing it)?  Every C shortcut for a
   method a subclass or an instance may override is gated on this. */
static int
resolves_to(PyObject *self, PyObject *name, PyObject *expected)
{
    PyObject *dict, *found;
    PyTypeObject *tp = Py_TYPE(self);
    if (expected == NULL || compat_type_lookup(tp, name) != expected) {
        return 0;
    }
    if (!compat_has_instance_dict(tp)) {
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

/* ==== binding arguments ================================================= */

/* The signature of the Python function a C method stands in for: its
   positional-or-keyword parameters, the first `required` of them
   required. */
typedef struct {
    const char *name;            /* the qualified name errors show */
    const char *const *params;   /* parameter names, self excluded */
    Py_ssize_t nparams;
    Py_ssize_t required;
    int is_method;               /* 1: Python counts self in its messages */
} arg_spec;

/* For a function with **kw: takes each keyword that names no parameter;
   returns 0, or -1 with an exception set. */
typedef int (*extra_keyword)(void *ctx, PyObject *name, PyObject *value);

/* Python's own "missing ... argument(s): 'a', 'b', and 'c'" message. */
static void
raise_missing(const arg_spec *spec, PyObject **out)
{
    const char *missing[8];
    Py_ssize_t i, n = 0;
    char list[256] = "";
    for (i = 0; i < spec->required && n < 8; i++) {
        if (out[i] == NULL) {
            missing[n++] = spec->params[i];
        }
    }
    for (i = 0; i < n; i++) {
        size_t used = strlen(list);
        const char *sep = i == 0 ? "" : (n == 2 ? " and " : (i == n - 1 ? ", and " : ", "));
        snprintf(list + used, sizeof(list) - used, "%s'%s'", sep, missing[i]);
    }
    PyErr_Format(PyExc_TypeError,
                 "%s() missing %zd required positional argument%s: %s",
                 spec->name, n, n == 1 ? "" : "s", list);
}

static void
raise_too_many(const arg_spec *spec, Py_ssize_t nargs)
{
    Py_ssize_t self = spec->is_method ? 1 : 0;
    Py_ssize_t most = spec->nparams + self, given = nargs + self;
    if (spec->required == spec->nparams) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes %zd positional argument%s but %zd %s given",
                     spec->name, most, most == 1 ? "" : "s", given,
                     given == 1 ? "was" : "were");
    }
    else {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes from %zd to %zd positional arguments but "
                     "%zd %s given", spec->name, spec->required + self, most,
                     given, given == 1 ? "was" : "were");
    }
}

/* The parameter keyword `kw` names, or nparams if none. */
static Py_ssize_t
param_index(const arg_spec *spec, PyObject *kw)
{
    Py_ssize_t i;
    for (i = 0; i < spec->nparams; i++) {
        if (PyUnicode_CompareWithASCIIString(kw, spec->params[i]) == 0) {
            break;
        }
    }
    return i;
}

/*
 * Bind a vectorcall's arguments to spec's parameters: out[i] becomes the
 * argument for parameter i (borrowed), or NULL for an optional one not
 * given.  Keywords naming no parameter go to `extra` (a **kw), in order,
 * once the parameters are bound; they are refused when `extra` is NULL.
 * 0, or -1 with Python's own TypeError for a bad call.
 */
static int
bind_args(const arg_spec *spec, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, PyObject **out, extra_keyword extra, void *ctx)
{
    Py_ssize_t i, j, nkw;
    int has_extra = 0;
    if (kwnames == NULL && nargs == spec->nparams) {
        /* The common call: every parameter given by position. */
        for (i = 0; i < nargs; i++) {
            out[i] = args[i];
        }
        return 0;
    }
    nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > spec->nparams) {
        raise_too_many(spec, nargs);
        return -1;
    }
    for (i = 0; i < spec->nparams; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    for (j = 0; j < nkw; j++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, j);
        i = param_index(spec, kw);
        if (i == spec->nparams) {
            if (extra == NULL) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%U'",
                             spec->name, kw);
                return -1;
            }
            has_extra = 1;
            continue;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'",
                         spec->name, spec->params[i]);
            return -1;
        }
        out[i] = args[nargs + j];
    }
    for (i = 0; i < spec->required; i++) {
        if (out[i] == NULL) {
            raise_missing(spec, out);
            return -1;
        }
    }
    for (j = 0; has_extra && j < nkw; j++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, j);
        if (param_index(spec, kw) == spec->nparams
            && extra(ctx, kw, args[nargs + j]) < 0) {
            return -1;
        }
    }
    return 0;
}

#endif /* AMPCORE_CALLS_H */
