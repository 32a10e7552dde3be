/*
 * ampcore._ampcore: Command argument coding in C, Command's four coding
 * classmethods (makeArguments, makeResponse, parseArguments,
 * parseResponse) over the schemas of schema.h.
 *
 * Each operation gives what stock gives: the same box or dict, the same
 * exception for the same bad value, the same calls in the same order where
 * code can see them.  It takes stock's steps: the working copy stock's
 * _objectsToStrings / _stringsToObjects make (a real dict: arguments coded
 * by their own methods see it as stock leaves it), then each argument in
 * list order, retrieve (the same pop or get-and-delete), then the value.
 * An argument is coded in C when, at its turn, it is exactly a stock kind
 * with nothing of its class or instance changed (entry_in_c); values of
 * the types stock's own code handles plainly are coded in C, anything else
 * by calling the argument's own stock method.  Every other argument is
 * coded by its own toBox / fromBox, with the same arguments stock passes.
 *
 * The C API, for the dispatcher (`schema` may be NULL: it is looked up;
 * given, it is used while still valid, so callers may keep one):
 *
 *   PyObject *schema_make_arguments(st, schema, cls, objects, proto)
 *   int schema_check_keywords(st, schema, cls, kwnames)
 *   PyObject *schema_make_arguments_kw(st, schema, cls, kwvalues,
 *                                      kwnames, proto)
 *   PyObject *schema_make_response(st, schema, cls, objects, proto)
 *   PyObject *schema_parse_arguments(st, schema, cls, box, proto)
 *   PyObject *schema_parse_response(st, schema, cls, box, proto)
 *
 * each a new reference, or NULL with an exception; they do what
 * Command.<op>.__func__(cls, ...) does, whether or not cls overrides the
 * classmethod (schema_stock() says whether it does).  callRemote's path,
 * for STOCK_CONSTRUCTION classes, is schema_check_keywords (what
 * `cls(**kw)` checks: 0 or -1) then schema_make_arguments_kw
 * (makeArguments(kw)), straight from a vectorcall's keywords.
 * Schemas and their accessors are schema.h's (command_schema, schema_attr,
 * schema_requires_answer, schema_stock).
 */
#ifndef AMPCORE_ARGUMENTS_H
#define AMPCORE_ARGUMENTS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <string.h>

#include "calls.h"
#include "codec.h"
#include "compat.h"
#include "failure.h"
#include "reader.h"
#include "schema.h"
#include "serialize.h"
#include "state.h"

/* ==== helpers =========================================================== */

/* KeyError(key), as dict.pop raises it. */
static void
set_key_error(PyObject *key)
{
    PyObject *args = PyTuple_Pack(1, key);
    if (args != NULL) {
        PyErr_SetObject(PyExc_KeyError, args);
        Py_DECREF(args);
    }
}

/* raise exc_type(message), taking the message. */
static void
raise_with(PyObject *exc_type, PyObject *message)
{
    PyObject *exc;
    if (message == NULL) {
        return;
    }
    exc = PyObject_CallOneArg(exc_type, message);
    Py_DECREF(message);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

/* f(a, b, c), for the stock functions. */
static PyObject *
call3(PyObject *f, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *args[3] = {a, b, c};
    return PyObject_Vectorcall(f, args, 3, NULL);
}

/* obj.name(a, b) */
static PyObject *
call_method2(PyObject *obj, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {obj, a, b};
    return PyObject_VectorcallMethod(name, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

/* obj.name(a, b, c, d): toBox and fromBox. */
static PyObject *
call_method4(PyObject *obj, PyObject *name, PyObject *a, PyObject *b,
             PyObject *c, PyObject *d)
{
    PyObject *args[5] = {obj, a, b, c, d};
    return PyObject_VectorcallMethod(name, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

/* Whether dict's own C functions are what `d`'s methods do: an exact
   dict, or an AmpBox whose class is as imported. */
static int
is_plain_dict(module_state *st, PyObject *d)
{
    return PyDict_CheckExact(d)
           || (Py_IS_TYPE(d, st->AmpBox) && stock_class_ok(st, STOCK_AMPBOX));
}

/* strings[key] = value */
static int
box_set(module_state *st, PyObject *box, PyObject *key, PyObject *value)
{
    if (is_plain_dict(st, box)) {
        return PyDict_SetItem(box, key, value);
    }
    return PyObject_SetItem(box, key, value);
}

/* b"".join(parts), concatenated here when all are bytes. */
static PyObject *
join_parts(module_state *st, PyObject *parts)
{
    Py_ssize_t i, n = PyList_GET_SIZE(parts), total = 0;
    PyObject *result;
    char *p;
    for (i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        if (!PyBytes_CheckExact(part)) {
            return PyObject_CallMethodOneArg(st->empty_bytes, st->str_join, parts);
        }
        total += PyBytes_GET_SIZE(part);
    }
    if ((result = PyBytes_FromStringAndSize(NULL, total)) == NULL) {
        return NULL;
    }
    p = PyBytes_AS_STRING(result);
    for (i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        memcpy(p, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
        p += PyBytes_GET_SIZE(part);
    }
    return result;
}

/* Python's `==` between two argument names (str; keyword names). */
static inline int
same_name(PyObject *a, PyObject *b)
{
    return a == b
           || (PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b)
               && PyUnicode_Compare(a, b) == 0);
}

/* ==== one use: the schema and what the arguments are now ================ */

typedef struct {
    module_state *st;
    SchemaObject *schema;    /* marked stale when something compiled has
                                changed: the next use compiles again */
    PyObject *proto;
} coder;

static inline void
coder_changed(coder *c)
{
    c->schema->stale = 1;
}

/* Whether an instance __dict__ holding `known` expected keys sets none of
   the coding methods: 1, 0, or -1 on error. */
static int
instance_clean(module_state *st, PyObject *d, Py_ssize_t known)
{
    PyObject *names = st->stock[STOCK_INTEGER].names;
    Py_ssize_t i;
    int r;
    if (PyDict_GET_SIZE(d) == known) {
        return 1;
    }
    for (i = 0; i < CODING_METHOD_COUNT; i++) {
        if ((r = PyDict_Contains(d, PyTuple_GET_ITEM(names, i))) != 0) {
            return r < 0 ? -1 : 0;
        }
    }
    return 1;
}

/* Whether a ListOf's element type may still be coded in C. */
static int
element_in_c(coder *c, PyObject *elem, arg_kind kind)
{
    module_state *st = c->st;
    PyObject *d;
    int known, rc;
    if (!Py_IS_TYPE(elem, st->stock[kind].cls)) {
        coder_changed(c);
        return 0;
    }
    if (!stock_class_ok(st, (stock_class)kind)) {
        return 0;
    }
    if ((d = PyObject_GenericGetDict(elem, NULL)) == NULL) {
        return -1;
    }
    known = PyDict_Contains(d, st->str_optional);
    rc = known < 0 ? -1 : instance_clean(st, d, known);
    Py_DECREF(d);
    return rc;
}

/*
 * At its turn: may this argument be coded in C?  1 (and *optional is what
 * stock's `if self.optional` decides), 0 to code it by its own methods,
 * -1 on error.  It must still be exactly its stock class, that class as
 * imported, with no coding method set on the instance, an optional that
 * is a bool or int, and for a ListOf or AmpList the element type or
 * subargs compiled.
 */
static int
entry_in_c(coder *c, const arg_entry *e, int *optional)
{
    module_state *st = c->st;
    PyObject *d, *v;
    Py_ssize_t known = 1;
    int rc = 0;
    if (e->kind == KIND_PY) {
        return 0;
    }
    if (!Py_IS_TYPE(e->arg, st->stock[e->kind].cls)) {
        coder_changed(c);
        return 0;
    }
    if (!stock_class_ok(st, (stock_class)e->kind)) {
        return 0;
    }
    if ((d = PyObject_GenericGetDict(e->arg, NULL)) == NULL) {
        return -1;
    }
    v = PyDict_GetItemWithError(d, st->str_optional);
    if (v == NULL || !(PyBool_Check(v) || PyLong_CheckExact(v))) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    /* No code runs: a bool's or an int's truth. */
    *optional = PyObject_IsTrue(v);
    if (e->kind == KIND_LISTOF || e->kind == KIND_AMPLIST) {
        PyObject *want = e->kind == KIND_LISTOF ? e->elem : e->sub->list;
        v = PyDict_GetItemWithError(
            d, e->kind == KIND_LISTOF ? st->str_elementType : st->str_subargs);
        if (v != want) {
            if (PyErr_Occurred()) {
                rc = -1;
            }
            else {
                coder_changed(c);
            }
            goto done;
        }
        if (e->kind == KIND_LISTOF
            && (rc = element_in_c(c, e->elem, e->elem_kind)) <= 0) {
            goto done;
        }
        known = 2;
    }
    rc = instance_clean(st, d, known);
done:
    Py_DECREF(d);
    return rc;
}

/* ==== the working copy ================================================== */

/* Keys a view may have taken before it must be made a dict. */
#define WC_VIEW_TAKEN 16

/*
 * Stock's myObjects / myStrings: `objects.copy()`, from which each
 * argument retrieves (and removes) its value.  Until an argument coded by
 * its own methods needs the dict, no copy is made:
 *
 *  - for callRemote's keywords, it is the keywords themselves, with what
 *    was retrieved marked;
 *  - for a plain dict (a box of strings when parsing, a dict of objects
 *    when coding), it is a view of the dict itself, with the keys
 *    retrieved remembered.  Nothing but C runs until the copy is made (a
 *    value that may run code of its own to be coded makes the copy
 *    first), so no code can change the dict in between, and the copy is
 *    then what stock's would be by then.
 */
typedef struct {
    PyObject *dict;              /* owned; NULL: reading keywords or a view */
    PyObject *const *kwvalues;
    PyObject *kwnames;
    unsigned char *taken;        /* per keyword: retrieved */
    PyObject *view;              /* borrowed: the dict viewed, or NULL */
    PyObject *view_taken[WC_VIEW_TAKEN];  /* borrowed: keys retrieved */
    int view_ntaken;
} working_copy;

static void
wc_clear(working_copy *wc)
{
    Py_CLEAR(wc->dict);
}

/* wc = objects.copy(): 0, or -1 with an exception. */
static int
wc_copy(module_state *st, working_copy *wc, PyObject *objects)
{
    if (PyDict_CheckExact(objects)) {
        wc->dict = PyDict_Copy(objects);
    }
    else if (Py_IS_TYPE(objects, st->AmpBox) && stock_class_ok(st, STOCK_AMPBOX)) {
        /* AmpBox.copy: self.__class__() then update(self). */
        if ((wc->dict = new_box(st)) != NULL
            && PyDict_Update(wc->dict, objects) < 0) {
            Py_CLEAR(wc->dict);
        }
    }
    else {
        wc->dict = call0(objects, st->str_copy);
    }
    return wc->dict == NULL ? -1 : 0;
}

/* A working copy of a box of strings: a view of it when it is a plain
   dict, else wc_copy(): 0, or -1 with an exception. */
static int
wc_view(module_state *st, working_copy *wc, PyObject *strings)
{
    if (is_plain_dict(st, strings)) {
        wc->view = strings;
        wc->view_ntaken = 0;
        return 0;
    }
    return wc_copy(st, wc, strings);
}

/* Whether a view's `key` was retrieved already (wire names, bytes, or
   Python names, str: compared as the dict compares them). */
static int
wc_view_took(const working_copy *wc, PyObject *key)
{
    int i;
    for (i = 0; i < wc->view_ntaken; i++) {
        PyObject *t = wc->view_taken[i];
        if (t == key
            || (PyBytes_CheckExact(t) && PyBytes_CheckExact(key)
                && PyBytes_GET_SIZE(t) == PyBytes_GET_SIZE(key)
                && memcmp(PyBytes_AS_STRING(t), PyBytes_AS_STRING(key),
                          (size_t)PyBytes_GET_SIZE(key)) == 0)
            || (PyUnicode_CheckExact(t) && PyUnicode_CheckExact(key)
                && same_name(t, key))) {
            return 1;
        }
    }
    return 0;
}

/* The dict itself, built from the keywords not yet retrieved, or copied
   from the view without the keys retrieved, if need be: borrowed, or NULL
   with an exception. */
static PyObject *
wc_dict(module_state *st, working_copy *wc)
{
    Py_ssize_t i, n;
    PyObject *d;
    if (wc->dict != NULL) {
        return wc->dict;
    }
    if (wc->view != NULL) {
        if (wc_copy(st, wc, wc->view) < 0) {
            return NULL;
        }
        wc->view = NULL;
        for (i = 0; i < wc->view_ntaken; i++) {
            if (PyDict_DelItem(wc->dict, wc->view_taken[i]) < 0) {
                Py_CLEAR(wc->dict);
                return NULL;
            }
        }
        return wc->dict;
    }
    if ((d = PyDict_New()) == NULL) {
        return NULL;
    }
    n = wc->kwnames ? PyTuple_GET_SIZE(wc->kwnames) : 0;
    for (i = 0; i < n; i++) {
        if (!wc->taken[i]
            && PyDict_SetItem(d, PyTuple_GET_ITEM(wc->kwnames, i),
                              wc->kwvalues[i]) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    wc->dict = d;
    return d;
}

/* A missing key: None when optional, else KeyError (NULL). */
static PyObject *
wc_missing(PyObject *key, int optional)
{
    if (optional) {
        Py_RETURN_NONE;
    }
    set_key_error(key);
    return NULL;
}

/*
 * Argument.retrieve(d, key): `d.get(key)` and, unless None, `del d[key]`
 * when optional; else `d.pop(key)`.  New reference (None for an optional
 * value that is missing), or NULL with an exception.
 */
static PyObject *
wc_retrieve(module_state *st, working_copy *wc, PyObject *key, int optional)
{
    PyObject *d = wc->dict, *v;
    if (d == NULL && wc->view != NULL) {
        if (wc->view_ntaken == WC_VIEW_TAKEN && wc_dict(st, wc) == NULL) {
            return NULL;
        }
        d = wc->dict;
    }
    if (d == NULL && wc->view != NULL) {
        v = PyDict_GetItemWithError(wc->view, key);
        if (v == NULL || wc_view_took(wc, key)) {
            return PyErr_Occurred() ? NULL : wc_missing(key, optional);
        }
        if (!(optional && v == Py_None)) {
            wc->view_taken[wc->view_ntaken++] = key;
        }
        return Py_NewRef(v);
    }
    if (d == NULL) {
        Py_ssize_t i, n = wc->kwnames ? PyTuple_GET_SIZE(wc->kwnames) : 0;
        for (i = 0; i < n; i++) {
            if (!wc->taken[i] && same_name(PyTuple_GET_ITEM(wc->kwnames, i), key)) {
                break;
            }
        }
        if (i == n) {
            return wc_missing(key, optional);
        }
        v = wc->kwvalues[i];
        if (!(optional && v == Py_None)) {
            wc->taken[i] = 1;
        }
        return Py_NewRef(v);
    }
    if (!is_plain_dict(st, d)) {
        if (!optional) {
            return call1(d, st->str_pop, key);
        }
        if ((v = call1(d, st->str_get, key)) != NULL && v != Py_None
            && PyObject_DelItem(d, key) < 0) {
            Py_CLEAR(v);
        }
        return v;
    }
    v = PyDict_GetItemWithError(d, key);
    if (v == NULL) {
        return PyErr_Occurred() ? NULL : wc_missing(key, optional);
    }
    Py_INCREF(v);
    if (!(optional && v == Py_None) && PyDict_DelItem(d, key) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* ==== to the wire ======================================================= */

/* An argument's value as its toString gives it, for the values stock's
   code handles plainly: 1 (*out), 0 when not such a value, -1 on error. */
static int
fast_to_string(module_state *st, arg_kind kind, PyObject *obj, PyObject **out)
{
    char buf[32];
    long long x;
    int overflow;
    size_t t;
    char *repr;

    *out = NULL;
    switch (kind) {
    case KIND_INTEGER:
        /* b"%d" % (obj,) */
        if (PyLong_CheckExact(obj)) {
            x = PyLong_AsLongLongAndOverflow(obj, &overflow);
            if (overflow) {
                return 0;
            }
            t = amp_format_decimal(buf, x);
            *out = PyBytes_FromStringAndSize(buf, (Py_ssize_t)t);
            return *out ? 1 : -1;
        }
        if (PyBool_Check(obj)) {
            *out = Py_NewRef(obj == Py_True ? st->b_ONE : st->b_ZERO);
            return 1;
        }
        return 0;
    case KIND_STRING:
        *out = Py_NewRef(obj);
        return 1;
    case KIND_UNICODE:
        if (!PyUnicode_CheckExact(obj)) {
            return 0;
        }
        *out = PyUnicode_AsUTF8String(obj);
        return *out ? 1 : -1;
    case KIND_BOOLEAN:
        /* `if inObject:` where no code of the object's runs. */
        if (!(PyBool_Check(obj) || obj == Py_None || PyLong_CheckExact(obj)
              || PyBytes_CheckExact(obj) || PyUnicode_CheckExact(obj))) {
            return 0;
        }
        t = PyObject_IsTrue(obj);
        *out = Py_NewRef(t ? st->b_TRUE : st->b_FALSE);
        return 1;
    case KIND_FLOAT:
        /* str(obj).encode("ascii"): float's repr. */
        if (!PyFloat_CheckExact(obj)) {
            return 0;
        }
        repr = PyOS_double_to_string(PyFloat_AS_DOUBLE(obj), 'r', 0,
                                     Py_DTSF_ADD_DOT_0, NULL);
        if (repr == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *out = PyBytes_FromString(repr);
        PyMem_Free(repr);
        return *out ? 1 : -1;
    default:
        return 0;
    }
}

/* Whether a ListOf's element type is, right now, the one compiled and
   still codable in C. */
static int
element_current(coder *c, const arg_entry *e)
{
    PyObject *d = PyObject_GenericGetDict(e->arg, NULL), *v;
    int rc;
    if (d == NULL) {
        return -1;
    }
    v = PyDict_GetItemWithError(d, c->st->str_elementType);
    if (v != e->elem) {
        rc = PyErr_Occurred() ? -1 : 0;
    }
    else {
        rc = element_in_c(c, e->elem, e->elem_kind);
    }
    Py_DECREF(d);
    return rc;
}

/* ListOf.toString(inObject): per element, elementType.toString and a
   2-byte length (struct.error past 65535), then b"".join. */
static PyObject *
listof_to_string(coder *c, const arg_entry *e, PyObject *value)
{
    module_state *st = c->st;
    PyObject *it, *obj, *s = NULL, *parts = NULL, *result = NULL, *etype;
    Py_ssize_t n, i, count = 0, cap = 0, *lengths = NULL;
    int fast = 1, plain_iter, all_bytes = 1, r;
    /* Whether code not ours may have run since the element type was last
       looked at (stock reads self.elementType for each element). */
    int dirty;

    if ((it = PyObject_GetIter(value)) == NULL) {
        return NULL;
    }
    plain_iter = PyList_CheckExact(value) || PyTuple_CheckExact(value);
    dirty = 0;
    if ((parts = PyList_New(0)) == NULL) {
        goto done;
    }
    while ((obj = PyIter_Next(it)) != NULL) {
        if (dirty || !plain_iter) {
            if ((fast = element_current(c, e)) < 0) {
                Py_DECREF(obj);
                goto done;
            }
            dirty = 0;
        }
        r = fast ? fast_to_string(st, e->elem_kind, obj, &s) : 0;
        if (r == 0) {
            etype = fast ? Py_NewRef(e->elem)
                         : PyObject_GetAttr(e->arg, st->str_elementType);
            s = etype ? call1(etype, st->str_toString, obj) : NULL;
            Py_XDECREF(etype);
            dirty = 1;
        }
        Py_DECREF(obj);
        if (s == NULL) {
            goto done;
        }
        if (PyBytes_CheckExact(s)) {
            n = PyBytes_GET_SIZE(s);
        }
        else {
            all_bytes = 0;
            dirty = 1;
            if ((n = PyObject_Size(s)) < 0) {
                goto done;
            }
        }
        if (n > 0xFFFF) {
            /* pack("!H", n) refuses it: its own error. */
            PyObject *packed = PyObject_CallFunction(st->struct_pack, "sn", "!H", n);
            Py_XDECREF(packed);
            if (packed == NULL) {
                goto done;
            }
            PyErr_SetString(PyExc_SystemError, "struct.pack took a length over 65535");
            goto done;
        }
        if (count == cap) {
            Py_ssize_t *more;
            cap = cap ? 2 * cap : 16;
            more = PyMem_Realloc(lengths, (size_t)cap * sizeof(Py_ssize_t));
            if (more == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            lengths = more;
        }
        lengths[count++] = n;
        if (PyList_Append(parts, s) < 0) {
            goto done;
        }
        Py_CLEAR(s);
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    if (all_bytes) {
        char *p;
        Py_ssize_t total = 0;
        for (i = 0; i < count; i++) {
            total += 2 + lengths[i];
        }
        if ((result = PyBytes_FromStringAndSize(NULL, total)) == NULL) {
            goto done;
        }
        p = PyBytes_AS_STRING(result);
        for (i = 0; i < count; i++) {
            p[0] = (char)((lengths[i] >> 8) & 0xFF);
            p[1] = (char)(lengths[i] & 0xFF);
            memcpy(p + 2, PyBytes_AS_STRING(PyList_GET_ITEM(parts, i)),
                   (size_t)lengths[i]);
            p += 2 + lengths[i];
        }
    }
    else {
        /* Stock's list of prefixes and strings, for b"".join's errors. */
        PyObject *strings = PyList_New(2 * count), *prefix;
        if (strings == NULL) {
            goto done;
        }
        for (i = 0; i < count; i++) {
            if ((prefix = pack_length(lengths[i])) == NULL) {
                Py_DECREF(strings);
                goto done;
            }
            PyList_SET_ITEM(strings, 2 * i, prefix);
            PyList_SET_ITEM(strings, 2 * i + 1,
                            Py_NewRef(PyList_GET_ITEM(parts, i)));
        }
        result = PyObject_CallMethodOneArg(st->empty_bytes, st->str_join, strings);
        Py_DECREF(strings);
    }
done:
    Py_DECREF(it);
    Py_XDECREF(s);
    Py_XDECREF(parts);
    PyMem_Free(lengths);
    return result;
}

static int objects_to_strings(coder *c, const arglist *al, PyObject *list,
                              working_copy *wc, PyObject *strings);

/* A fresh Box(): AmpBox's tp_new alone while AmpBox is as imported
   (AmpBox.__init__ does nothing to an empty box). */
static PyObject *
fresh_box(module_state *st)
{
    if (stock_class_ok(st, STOCK_AMPBOX)) {
        return new_box(st);
    }
    return PyObject_CallNoArgs((PyObject *)st->AmpBox);
}

/* One element of AmpList.toStringProto:
   _objectsToStrings(objects, self.subargs, Box(), proto).serialize() */
static PyObject *
amplist_element_to_string(coder *c, const arg_entry *e, PyObject *objects)
{
    module_state *st = c->st;
    PyObject *subargs, *box = NULL, *r, *result = NULL;
    working_copy wc = {NULL, NULL, NULL, NULL, NULL, {NULL}, 0};

    if ((subargs = PyObject_GetAttr(e->arg, st->str_subargs)) == NULL) {
        return NULL;
    }
    if ((box = fresh_box(st)) == NULL) {
        goto done;
    }
    if (arglist_matches(e->sub, subargs)) {
        if (wc_view(st, &wc, objects) < 0
            || objects_to_strings(c, e->sub, subargs, &wc, box) < 0) {
            goto done;
        }
    }
    else {
        coder_changed(c);
        r = PyObject_CallFunctionObjArgs(st->objects_to_strings, objects,
                                         subargs, box, c->proto, NULL);
        if (r == NULL) {
            goto done;
        }
        Py_SETREF(box, r);
    }
    if (Py_IS_TYPE(box, st->AmpBox) && stock_class_ok(st, STOCK_AMPBOX)) {
        result = serialize_box(st, box);
    }
    else {
        result = call0(box, st->str_serialize);
    }
done:
    wc_clear(&wc);
    Py_DECREF(subargs);
    Py_XDECREF(box);
    return result;
}

/* AmpList.toStringProto(inObject, proto) */
static PyObject *
amplist_to_string(coder *c, const arg_entry *e, PyObject *value)
{
    PyObject *it, *objects, *s, *parts, *result = NULL;
    if (Py_EnterRecursiveCall(" while coding an AmpList")) {
        return NULL;
    }
    if ((it = PyObject_GetIter(value)) == NULL) {
        Py_LeaveRecursiveCall();
        return NULL;
    }
    if ((parts = PyList_New(0)) == NULL) {
        goto done;
    }
    while ((objects = PyIter_Next(it)) != NULL) {
        s = amplist_element_to_string(c, e, objects);
        Py_DECREF(objects);
        if (s == NULL || PyList_Append(parts, s) < 0) {
            Py_XDECREF(s);
            goto done;
        }
        Py_DECREF(s);
    }
    if (!PyErr_Occurred()) {
        result = join_parts(c->st, parts);
    }
done:
    Py_DECREF(it);
    Py_XDECREF(parts);
    Py_LeaveRecursiveCall();
    return result;
}

/* The argument's toStringProto(value, proto). */
static PyObject *
entry_to_string(coder *c, const arg_entry *e, PyObject *value)
{
    PyObject *out;
    int r = fast_to_string(c->st, e->kind, value, &out);
    if (r != 0) {
        return r > 0 ? out : NULL;
    }
    if (e->kind == KIND_LISTOF) {
        return listof_to_string(c, e, value);
    }
    if (e->kind == KIND_AMPLIST) {
        return amplist_to_string(c, e, value);
    }
    return call_method2(e->arg, c->st->str_toStringProto, value, c->proto);
}

/* argument.toBox(name, strings, myObjects, proto), by its own method. */
static int
to_box_by_itself(coder *c, PyObject *arg, PyObject *name, working_copy *wc,
                 PyObject *strings)
{
    PyObject *d = wc_dict(c->st, wc), *r;
    if (d == NULL) {
        return -1;
    }
    r = call_method4(arg, c->st->str_toBox, name, strings, d, c->proto);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Argument.toBox: retrieve, then strings[name] = toStringProto(...),
   unless an optional value is None. */
static int
entry_to_box(coder *c, const arg_entry *e, working_copy *wc, PyObject *strings)
{
    PyObject *v, *s;
    int optional = 0, rc = entry_in_c(c, e, &optional);
    if (rc <= 0) {
        return rc < 0 ? -1 : to_box_by_itself(c, e->arg, e->name, wc, strings);
    }
    if ((v = wc_retrieve(c->st, wc, e->pyname, optional)) == NULL) {
        return -1;
    }
    if (optional && v == Py_None) {
        Py_DECREF(v);
        return 0;
    }
    if (wc->view != NULL) {
        /* A plain value is coded by C alone; for any other, its own
           methods may run: the copy is made first, as stock's was. */
        int r = kind_is_simple(e->kind) ? fast_to_string(c->st, e->kind, v, &s) : 0;
        if (r == 0 && wc_dict(c->st, wc) == NULL) {
            r = -1;
        }
        if (r != 0) {
            Py_DECREF(v);
            if (r < 0) {
                return -1;
            }
            goto coded;
        }
    }
    s = entry_to_string(c, e, v);
    Py_DECREF(v);
coded:
    if (s == NULL) {
        return -1;
    }
    rc = box_set(c->st, strings, e->name, s);
    Py_DECREF(s);
    return rc;
}

/* `argname, argparser = item`, as the for statement unpacks it: a new
   reference to a 2-tuple, or NULL with stock's exception. */
static PyObject *
unpack_item(module_state *st, PyObject *item)
{
    if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2) {
        return Py_NewRef(item);
    }
    return PyObject_CallOneArg(st->unpack_pair, item);
}

/* What steps through an argument list as `for name, arg in arglist`
   does: by index for a list or tuple (re-reading its length), else by its
   iterator. */
typedef struct {
    PyObject *list;
    PyObject *it;
    Py_ssize_t i;
} list_walk;

static int
walk_start(list_walk *w, PyObject *list)
{
    w->list = list;
    w->i = 0;
    w->it = NULL;
    if (!PyList_CheckExact(list) && !PyTuple_CheckExact(list)) {
        w->it = PyObject_GetIter(list);
        return w->it == NULL ? -1 : 0;
    }
    return 0;
}

/* The next item (new reference), or NULL at the end or on error. */
static PyObject *
walk_next(list_walk *w)
{
    if (w->it != NULL) {
        w->i++;
        return PyIter_Next(w->it);
    }
    if (w->i >= seq_size(w->list)) {
        return NULL;
    }
    return Py_NewRef(seq_item(w->list, w->i++));
}

static void
walk_end(list_walk *w)
{
    Py_CLEAR(w->it);
}

/* The compiled entry for the item at the walk's last position, if it is
   still the item compiled there. */
static const arg_entry *
walk_entry(coder *c, const list_walk *w, const arglist *al, PyObject *item)
{
    Py_ssize_t i = w->i - 1;
    if (al == NULL) {
        return NULL;        /* nothing compiled: a schema left to stock */
    }
    if (w->it == NULL && i < al->n && al->entries[i].item == item) {
        return &al->entries[i];
    }
    coder_changed(c);
    return NULL;
}

/* _objectsToStrings' loop: every (name, argument) of `list` in order,
   from the working copy into `strings`.  0, or -1 with an exception. */
static int
objects_to_strings(coder *c, const arglist *al, PyObject *list,
                   working_copy *wc, PyObject *strings)
{
    list_walk w;
    PyObject *item, *pair;
    const arg_entry *e;
    int rc = 0;

    if (walk_start(&w, list) < 0) {
        return -1;
    }
    while (rc == 0 && (item = walk_next(&w)) != NULL) {
        if ((e = walk_entry(c, &w, al, item)) != NULL) {
            rc = entry_to_box(c, e, wc, strings);
        }
        else if ((pair = unpack_item(c->st, item)) == NULL) {
            rc = -1;
        }
        else {
            rc = to_box_by_itself(c, PyTuple_GET_ITEM(pair, 1),
                                  PyTuple_GET_ITEM(pair, 0), wc, strings);
            Py_DECREF(pair);
        }
        Py_DECREF(item);
    }
    walk_end(&w);
    return rc < 0 || PyErr_Occurred() ? -1 : 0;
}

/* ==== from the wire ===================================================== */

/* int(bytes) for the plain decimal spellings, without the parser. */
static PyObject *
decimal_bytes_to_int(PyObject *v)
{
    const char *p = PyBytes_AS_STRING(v);
    Py_ssize_t n = PyBytes_GET_SIZE(v), i = 0;
    long long x = 0;
    int negative = 0;
    if (n > 0 && p[0] == '-') {
        negative = 1;
        i = 1;
    }
    /* 18 digits cannot overflow a long long. */
    if (n - i < 1 || n - i > 18) {
        return PyNumber_Long(v);
    }
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return PyNumber_Long(v);
        }
        x = x * 10 + (p[i] - '0');
    }
    return PyLong_FromLongLong(negative ? -x : x);
}

/* An argument's fromString(v) for a bytes value: 1 (*out), 0 when not
   such a kind, -1 on error (stock's error for a bad value). */
static int
fast_from_string(arg_kind kind, PyObject *v, PyObject **out)
{
    const char *p = PyBytes_AS_STRING(v);
    Py_ssize_t n = PyBytes_GET_SIZE(v);
    switch (kind) {
    case KIND_INTEGER:
        *out = decimal_bytes_to_int(v);           /* int(v) */
        break;
    case KIND_FLOAT:
        *out = PyFloat_FromString(v);             /* float(v) */
        break;
    case KIND_STRING:
        *out = Py_NewRef(v);
        break;
    case KIND_UNICODE:
        *out = PyUnicode_DecodeUTF8(p, n, NULL);  /* v.decode("utf-8") */
        break;
    case KIND_BOOLEAN:
        if (n == 4 && memcmp(p, "True", 4) == 0) {
            *out = Py_NewRef(Py_True);
        }
        else if (n == 5 && memcmp(p, "False", 5) == 0) {
            *out = Py_NewRef(Py_False);
        }
        else {
            PyErr_Format(PyExc_TypeError, "Bad boolean value: %R", v);
            *out = NULL;
        }
        break;
    default:
        return 0;
    }
    return *out ? 1 : -1;
}

/* ListOf.fromString(inString): Int16StringReceiver's framing (a
   truncated tail is dropped), then elementType.fromString on each. */
static PyObject *
listof_from_string(coder *c, const arg_entry *e, PyObject *v)
{
    module_state *st = c->st;
    const unsigned char *p;
    Py_ssize_t len, off = 0, n, i;
    PyObject *strings, *s, *result = NULL, *from = NULL;
    int fast;

    if (!PyBytes_CheckExact(v) || !stock_class_ok(st, STOCK_INT16)) {
        return call_method2(e->arg, st->str_fromStringProto, v, c->proto);
    }
    p = (const unsigned char *)PyBytes_AS_STRING(v);
    len = PyBytes_GET_SIZE(v);
    if ((strings = PyList_New(0)) == NULL) {
        return NULL;
    }
    while (len - off >= 2) {
        n = ((Py_ssize_t)p[off] << 8) | p[off + 1];
        if (len - off - 2 < n) {
            break;
        }
        s = PyBytes_FromStringAndSize((const char *)p + off + 2, n);
        if (s == NULL || PyList_Append(strings, s) < 0) {
            Py_XDECREF(s);
            goto done;
        }
        Py_DECREF(s);
        off += 2 + n;
    }
    /* elementFromString = self.elementType.fromString, read once. */
    if ((fast = element_current(c, e)) < 0) {
        goto done;
    }
    if (!fast) {
        PyObject *etype = PyObject_GetAttr(e->arg, st->str_elementType);
        from = etype ? PyObject_GetAttr(etype, st->str_fromString) : NULL;
        Py_XDECREF(etype);
        if (from == NULL) {
            goto done;
        }
    }
    n = PyList_GET_SIZE(strings);
    if ((result = PyList_New(n)) == NULL) {
        goto done;
    }
    for (i = 0; i < n; i++) {
        PyObject *string = PyList_GET_ITEM(strings, i), *o = NULL;
        if (fast) {
            (void)fast_from_string(e->elem_kind, string, &o);
        }
        else {
            o = PyObject_CallOneArg(from, string);
        }
        if (o == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, o);
    }
done:
    Py_DECREF(strings);
    Py_XDECREF(from);
    return result;
}

/* The reader's sink: collect each box (the reader hands it over). */
static sink_action
collect_box(void *list, PyObject *box)
{
    int rc = PyList_Append((PyObject *)list, box);
    Py_DECREF(box);
    return rc < 0 ? SINK_ERROR : SINK_CONTINUE;
}

/* parseString(data) for bytes: the C box reader, or stock's own for what
   the reader does not reproduce (an over-long key, a changed AmpBox or
   Int16StringReceiver, whose dataReceived BinaryBoxProtocol's calls). */
static PyObject *
parse_boxes(module_state *st, PyObject *data)
{
    box_reader reader;
    size_t off = 0, box_start = 0;
    reader_status rc;
    PyObject *boxes;

    if (!stock_class_ok(st, STOCK_AMPBOX) || !stock_class_ok(st, STOCK_INT16)) {
        return PyObject_CallOneArg(st->parseString, data);
    }
    if ((boxes = PyList_New(0)) == NULL) {
        return NULL;
    }
    reader_init(&reader);
    rc = reader_scan(&reader, st, (const unsigned char *)PyBytes_AS_STRING(data),
                     (size_t)PyBytes_GET_SIZE(data), &off, &box_start,
                     collect_box, boxes);
    reader_clear(&reader);
    if (rc == READER_ERROR) {
        Py_DECREF(boxes);
        return NULL;
    }
    if (rc == READER_KEY_TOO_LONG) {
        Py_DECREF(boxes);
        return PyObject_CallOneArg(st->parseString, data);
    }
    return boxes;
}

static PyObject *strings_to_objects(coder *c, const arglist *al,
                                    PyObject *list, PyObject *strings);

/* AmpList.fromStringProto(inString, proto): parseString, then
   _stringsToObjects(box, self.subargs, proto) for each box. */
static PyObject *
amplist_from_string(coder *c, const arg_entry *e, PyObject *v)
{
    module_state *st = c->st;
    PyObject *boxes, *result = NULL, *subargs, *o;
    Py_ssize_t i, n;

    if (!PyBytes_CheckExact(v)) {
        return call_method2(e->arg, st->str_fromStringProto, v, c->proto);
    }
    if (Py_EnterRecursiveCall(" while decoding an AmpList")) {
        return NULL;
    }
    if ((boxes = parse_boxes(st, v)) == NULL) {
        goto done;
    }
    if (!PyList_CheckExact(boxes)) {
        PyErr_SetString(PyExc_TypeError, "parseString did not return a list");
        goto done;
    }
    n = PyList_GET_SIZE(boxes);
    if ((result = PyList_New(0)) == NULL) {
        goto done;
    }
    for (i = 0; i < n && i < PyList_GET_SIZE(boxes); i++) {
        PyObject *box = Py_NewRef(PyList_GET_ITEM(boxes, i));
        if ((subargs = PyObject_GetAttr(e->arg, st->str_subargs)) == NULL) {
            Py_DECREF(box);
            Py_CLEAR(result);
            goto done;
        }
        if (arglist_matches(e->sub, subargs)) {
            o = strings_to_objects(c, e->sub, subargs, box);
        }
        else {
            coder_changed(c);
            o = PyObject_CallFunctionObjArgs(st->strings_to_objects, box, subargs,
                                             c->proto, NULL);
        }
        Py_DECREF(subargs);
        Py_DECREF(box);
        if (o == NULL || PyList_Append(result, o) < 0) {
            Py_XDECREF(o);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(o);
    }
done:
    Py_XDECREF(boxes);
    Py_LeaveRecursiveCall();
    return result;
}

/* The argument's fromStringProto(v, proto). */
static PyObject *
entry_from_string(coder *c, const arg_entry *e, PyObject *v)
{
    PyObject *out;
    if (PyBytes_CheckExact(v) && kind_is_simple(e->kind)) {
        (void)fast_from_string(e->kind, v, &out);
        return out;
    }
    if (e->kind == KIND_LISTOF) {
        return listof_from_string(c, e, v);
    }
    if (e->kind == KIND_AMPLIST) {
        return amplist_from_string(c, e, v);
    }
    return call_method2(e->arg, c->st->str_fromStringProto, v, c->proto);
}

/* argument.fromBox(name, myStrings, objects, proto), by its own method. */
static int
from_box_by_itself(coder *c, PyObject *arg, PyObject *name, working_copy *wc,
                   PyObject *objects)
{
    PyObject *d = wc_dict(c->st, wc), *r;
    if (d == NULL) {
        return -1;
    }
    r = call_method4(arg, c->st->str_fromBox, name, d, objects, c->proto);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Argument.fromBox: retrieve, then objects[pythonName] = None for an
   optional value that is missing, else fromStringProto(...). */
static int
entry_from_box(coder *c, const arg_entry *e, working_copy *wc, PyObject *objects)
{
    PyObject *v, *o;
    int optional = 0, rc = entry_in_c(c, e, &optional);
    if (rc <= 0) {
        return rc < 0 ? -1 : from_box_by_itself(c, e->arg, e->name, wc, objects);
    }
    if ((v = wc_retrieve(c->st, wc, e->name, optional)) == NULL) {
        return -1;
    }
    if (optional && v == Py_None) {
        rc = PyDict_SetItem(objects, e->pyname, Py_None);
        Py_DECREF(v);
        return rc;
    }
    o = entry_from_string(c, e, v);
    Py_DECREF(v);
    if (o == NULL) {
        return -1;
    }
    rc = PyDict_SetItem(objects, e->pyname, o);
    Py_DECREF(o);
    return rc;
}

/* _stringsToObjects(strings, list, proto): a new dict, or NULL. */
static PyObject *
strings_to_objects(coder *c, const arglist *al, PyObject *list, PyObject *strings)
{
    working_copy wc = {NULL, NULL, NULL, NULL, NULL, {NULL}, 0};
    list_walk w;
    PyObject *objects, *item, *pair;
    const arg_entry *e;
    int rc = 0;

    if ((objects = PyDict_New()) == NULL) {
        return NULL;
    }
    if (wc_view(c->st, &wc, strings) < 0 || walk_start(&w, list) < 0) {
        wc_clear(&wc);
        Py_DECREF(objects);
        return NULL;
    }
    while (rc == 0 && (item = walk_next(&w)) != NULL) {
        if ((e = walk_entry(c, &w, al, item)) != NULL) {
            rc = entry_from_box(c, e, &wc, objects);
        }
        else if ((pair = unpack_item(c->st, item)) == NULL) {
            rc = -1;
        }
        else {
            rc = from_box_by_itself(c, PyTuple_GET_ITEM(pair, 1),
                                    PyTuple_GET_ITEM(pair, 0), &wc, objects);
            Py_DECREF(pair);
        }
        Py_DECREF(item);
    }
    walk_end(&w);
    wc_clear(&wc);
    if (rc < 0 || PyErr_Occurred()) {
        Py_DECREF(objects);
        return NULL;
    }
    return objects;
}

/* ==== the operations ==================================================== */

/* The allowed names of Command.makeArguments: the compiled set while the
   class and its list are as compiled, else collected from the class as
   stock does.  New reference. */
static PyObject *
allowed_now(coder *c, PyObject *cls)
{
    module_state *st = c->st;
    SchemaObject *s = c->schema;
    PyObject *list, *set, *item, *pair, *name;
    list_walk w;

    if (schema_current(st, s, cls)
        && arglist_matches(s->arguments, s->attrs[ATTR_ARGUMENTS])) {
        return Py_NewRef(s->allowed);
    }
    if ((list = PyObject_GetAttr(cls, st->str_arguments)) == NULL) {
        return NULL;
    }
    if ((set = PySet_New(NULL)) == NULL || walk_start(&w, list) < 0) {
        Py_XDECREF(set);
        Py_DECREF(list);
        return NULL;
    }
    while ((item = walk_next(&w)) != NULL) {
        pair = unpack_item(st, item);
        Py_DECREF(item);
        name = pair ? PyObject_CallOneArg(st->wire_name_to_identifier,
                                          PyTuple_GET_ITEM(pair, 0))
                    : NULL;
        Py_XDECREF(pair);
        if (name == NULL || PySet_Add(set, name) < 0) {
            Py_XDECREF(name);
            break;
        }
        Py_DECREF(name);
    }
    walk_end(&w);
    Py_DECREF(list);
    if (PyErr_Occurred()) {
        Py_DECREF(set);
        return NULL;
    }
    return set;
}

/* `if intendedArg not in allowedNames: raise InvalidSignature(...)` for
   one name: 0, or -1 with an exception. */
static int
check_allowed(module_state *st, PyObject *allowed, PyObject *name)
{
    int r = PySet_Contains(allowed, name);
    PyObject *shown;
    if (r != 0) {
        return r < 0 ? -1 : 0;
    }
    if ((shown = PyObject_Format(name, NULL)) == NULL) {
        return -1;
    }
    raise_with(st->InvalidSignature,
               PyUnicode_FromFormat("%U is not a valid argument", shown));
    Py_DECREF(shown);
    return -1;
}

/* cls.commandType() / cls.responseType(): the box coded into. */
static PyObject *
command_box(coder *c, PyObject *cls, schema_attr_id which)
{
    PyObject *type = schema_attr(c->st, (PyObject *)c->schema, cls, which), *box;
    if (type == NULL) {
        return NULL;
    }
    if (type == (PyObject *)c->st->AmpBox) {
        box = fresh_box(c->st);
    }
    else {
        box = PyObject_CallNoArgs(type);
    }
    Py_DECREF(type);
    return box;
}

/* Whether the schema's operations run here (else: stock's functions). */
static int
coded_here(module_state *st, SchemaObject *s)
{
    return s->mode == SCHEMA_COMPILED && stock_class_ok(st, STOCK_AMPBOX);
}

/*
 * Command.makeArguments(objects, proto) for cls: InvalidSignature for a
 * name no argument has (objects iterated first, as stock does), then
 * cls.arguments, cls.commandType(), and every argument's toBox.  The box
 * (commandType's instance), or NULL.
 */
static PyObject *
schema_make_arguments(module_state *st, PyObject *schema, PyObject *cls,
                      PyObject *objects, PyObject *proto)
{
    SchemaObject *s = schema_for_use(st, schema, cls);
    working_copy wc = {NULL, NULL, NULL, NULL, NULL, {NULL}, 0};
    PyObject *allowed = NULL, *it = NULL, *name, *list = NULL, *box = NULL;
    PyObject *result = NULL;
    coder c;

    if (s == NULL) {
        return NULL;
    }
    if (!coded_here(st, s)) {
        result = call3(st->stock_makeArguments, cls, objects, proto);
        Py_DECREF(s);
        return result;
    }
    c.st = st;
    c.schema = s;
    c.proto = proto;
    if ((allowed = allowed_now(&c, cls)) == NULL
        || (it = PyObject_GetIter(objects)) == NULL) {
        goto done;
    }
    while ((name = PyIter_Next(it)) != NULL) {
        int rc = check_allowed(st, allowed, name);
        Py_DECREF(name);
        if (rc < 0) {
            goto done;
        }
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    /* _objectsToStrings(objects, cls.arguments, cls.commandType(), proto) */
    if ((list = schema_attr(st, (PyObject *)s, cls, ATTR_ARGUMENTS)) == NULL
        || (box = command_box(&c, cls, ATTR_COMMAND_TYPE)) == NULL
        || wc_view(st, &wc, objects) < 0
        || objects_to_strings(&c, s->arguments, list, &wc, box) < 0) {
        goto done;
    }
    result = Py_NewRef(box);
done:
    wc_clear(&wc);
    Py_XDECREF(allowed);
    Py_XDECREF(it);
    Py_XDECREF(list);
    Py_XDECREF(box);
    Py_DECREF(s);
    return result;
}

/* Whether the keywords include `name` (`name in self.structured`). */
static int
keywords_have(PyObject *kwnames, PyObject *name)
{
    Py_ssize_t i, n = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (i = 0; i < n; i++) {
        if (same_name(PyTuple_GET_ITEM(kwnames, i), name)) {
            return 1;
        }
    }
    return 0;
}

/* Command.__init__'s check: every argument not given must be optional,
   else InvalidSignature("forgot a, b for <commandName>").  0, or -1.
   Written for any class: what is not compiled is read as stock reads it. */
static int
check_forgotten(coder *c, PyObject *cls, PyObject *kwnames)
{
    module_state *st = c->st;
    PyObject *list, *item, *pair = NULL, *pyname, *forgotten = NULL, *v;
    PyObject *name, *shown, *sep, *joined;
    const arg_entry *e;
    list_walk w;
    int optional, rc = 0;

    if ((list = schema_attr(st, (PyObject *)c->schema, cls, ATTR_ARGUMENTS)) == NULL) {
        return -1;
    }
    if (walk_start(&w, list) < 0) {
        Py_DECREF(list);
        return -1;
    }
    while (rc == 0 && (item = walk_next(&w)) != NULL) {
        e = walk_entry(c, &w, c->schema->arguments, item);
        pair = NULL;
        if (e != NULL) {
            pyname = Py_NewRef(e->pyname);
        }
        else if ((pair = unpack_item(st, item)) == NULL) {
            pyname = NULL;
        }
        else {
            pyname = PyObject_CallOneArg(st->wire_name_to_identifier,
                                         PyTuple_GET_ITEM(pair, 0));
        }
        if (pyname == NULL) {
            rc = -1;
        }
        else if (!PyUnicode_Check(pyname) || !keywords_have(kwnames, pyname)) {
            /* `not arg.optional`, read only for a name not given. */
            optional = 0;
            rc = e != NULL ? entry_in_c(c, e, &optional) : 0;
            if (rc == 0) {
                v = PyObject_GetAttr(e != NULL ? e->arg : PyTuple_GET_ITEM(pair, 1),
                                     st->str_optional);
                optional = v ? PyObject_IsTrue(v) : -1;
                Py_XDECREF(v);
                rc = optional < 0 ? -1 : 0;
            }
            else if (rc > 0) {
                rc = 0;
            }
            if (rc == 0 && !optional) {
                if (forgotten == NULL && (forgotten = PyList_New(0)) == NULL) {
                    rc = -1;
                }
                else if (PyList_Append(forgotten, pyname) < 0) {
                    rc = -1;
                }
            }
        }
        Py_XDECREF(pyname);
        Py_XDECREF(pair);
        Py_DECREF(item);
    }
    walk_end(&w);
    Py_DECREF(list);
    if (rc < 0 || PyErr_Occurred()) {
        Py_XDECREF(forgotten);
        return -1;
    }
    if (forgotten == NULL) {
        return 0;
    }
    /* "forgot {} for {}".format(", ".join(forgotten), self.commandName) */
    name = schema_attr(st, (PyObject *)c->schema, cls, ATTR_COMMAND_NAME);
    sep = PyUnicode_FromString(", ");
    joined = sep ? PyUnicode_Join(sep, forgotten) : NULL;
    shown = name && joined ? PyObject_Format(name, NULL) : NULL;
    if (shown != NULL) {
        raise_with(st->InvalidSignature,
                   PyUnicode_FromFormat("forgot %U for %U", joined, shown));
    }
    Py_XDECREF(name);
    Py_XDECREF(sep);
    Py_XDECREF(joined);
    Py_XDECREF(shown);
    Py_DECREF(forgotten);
    return -1;
}

/*
 * `cls(**kw)`'s check (Command.__init__): the arguments not among the
 * keyword names kwnames (a tuple of str, or NULL) must all be optional,
 * else InvalidSignature("forgot a, b for <commandName>").  0, or -1 with
 * an exception.  callRemote turns this one into a failed Deferred (its
 * `try: co = commandType(*a, **kw) except BaseException: return fail()`),
 * unlike the errors of schema_make_arguments_kw, which it raises.
 */
static int
schema_check_keywords(module_state *st, PyObject *schema, PyObject *cls,
                      PyObject *kwnames)
{
    SchemaObject *s = schema_for_use(st, schema, cls);
    coder c;
    int rc;
    if (s == NULL) {
        return -1;
    }
    c.st = st;
    c.schema = s;
    c.proto = Py_None;
    rc = check_forgotten(&c, cls, kwnames);
    Py_DECREF(s);
    return rc;
}

/* {kwnames[i]: kwvalues[i]}: the dict stock's Command keeps as
   `structured`.  New reference. */
static PyObject *
keywords_dict(PyObject *const *kwvalues, PyObject *kwnames)
{
    Py_ssize_t i, n = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *d = PyDict_New();
    for (i = 0; d != NULL && i < n; i++) {
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(kwnames, i), kwvalues[i]) < 0) {
            Py_CLEAR(d);
        }
    }
    return d;
}

/*
 * Command.makeArguments(kw, proto) where kw is a vectorcall's keywords
 * (kwvalues[i] the value of kwnames[i]; kwnames may be NULL), without
 * building the dict: InvalidSignature for a name no argument has, then
 * the coding.  The box, or NULL.  _doCommand's step after `cls(**kw)`
 * (schema_check_keywords) for classes with STOCK_CONSTRUCTION.
 */
static PyObject *
schema_make_arguments_kw(module_state *st, PyObject *schema, PyObject *cls,
                         PyObject *const *kwvalues, PyObject *kwnames,
                         PyObject *proto)
{
    SchemaObject *s = schema_for_use(st, schema, cls);
    Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    unsigned char taken_here[32] = {0};
    working_copy wc = {NULL, kwvalues, kwnames, taken_here, NULL, {NULL}, 0};
    PyObject *allowed = NULL, *list = NULL, *box = NULL, *result = NULL;
    coder c;

    if (s == NULL) {
        return NULL;
    }
    if (!coded_here(st, s)) {
        PyObject *kw = keywords_dict(kwvalues, kwnames);
        result = kw ? call3(st->stock_makeArguments, cls, kw, proto) : NULL;
        Py_XDECREF(kw);
        Py_DECREF(s);
        return result;
    }
    if (nkw > (Py_ssize_t)sizeof(taken_here)
        && (wc.taken = PyMem_Calloc((size_t)nkw, 1)) == NULL) {
        Py_DECREF(s);
        return PyErr_NoMemory();
    }
    c.st = st;
    c.schema = s;
    c.proto = proto;
    if ((allowed = allowed_now(&c, cls)) == NULL) {
        goto done;
    }
    for (i = 0; i < nkw; i++) {
        if (check_allowed(st, allowed, PyTuple_GET_ITEM(kwnames, i)) < 0) {
            goto done;
        }
    }
    if ((list = schema_attr(st, (PyObject *)s, cls, ATTR_ARGUMENTS)) == NULL
        || (box = command_box(&c, cls, ATTR_COMMAND_TYPE)) == NULL
        || objects_to_strings(&c, s->arguments, list, &wc, box) < 0) {
        goto done;
    }
    result = Py_NewRef(box);
done:
    wc_clear(&wc);
    if (wc.taken != taken_here) {
        PyMem_Free(wc.taken);
    }
    Py_XDECREF(allowed);
    Py_XDECREF(list);
    Py_XDECREF(box);
    Py_DECREF(s);
    return result;
}

/*
 * Command.makeResponse(objects, proto) for cls: cls.responseType() (a
 * failed Deferred, fail(), if that raises anything), then every response
 * argument's toBox.  The box, the Deferred, or NULL.
 */
static PyObject *
schema_make_response(module_state *st, PyObject *schema, PyObject *cls,
                     PyObject *objects, PyObject *proto)
{
    SchemaObject *s = schema_for_use(st, schema, cls);
    working_copy wc = {NULL, NULL, NULL, NULL, NULL, {NULL}, 0};
    PyObject *list = NULL, *box, *result = NULL;
    coder c;

    if (s == NULL) {
        return NULL;
    }
    if (!coded_here(st, s)) {
        result = call3(st->stock_makeResponse, cls, objects, proto);
        Py_DECREF(s);
        return result;
    }
    c.st = st;
    c.schema = s;
    c.proto = proto;
    if ((box = command_box(&c, cls, ATTR_RESPONSE_TYPE)) == NULL) {
        result = fail_with_error(st);
        Py_DECREF(s);
        return result;
    }
    if ((list = schema_attr(st, (PyObject *)s, cls, ATTR_RESPONSE)) != NULL
        && wc_view(st, &wc, objects) == 0
        && objects_to_strings(&c, s->response, list, &wc, box) == 0) {
        result = Py_NewRef(box);
    }
    wc_clear(&wc);
    Py_XDECREF(list);
    Py_DECREF(box);
    Py_DECREF(s);
    return result;
}

/* Command.parseArguments / parseResponse: _stringsToObjects(box,
   cls.arguments or cls.response, proto).  A new dict, or NULL. */
static PyObject *
schema_parse(module_state *st, PyObject *schema, PyObject *cls, PyObject *box,
             PyObject *proto, int response)
{
    SchemaObject *s = schema_for_use(st, schema, cls);
    PyObject *list, *result;
    coder c;

    if (s == NULL) {
        return NULL;
    }
    if (!coded_here(st, s)) {
        result = call3(response ? st->stock_parseResponse : st->stock_parseArguments,
                       cls, box, proto);
        Py_DECREF(s);
        return result;
    }
    c.st = st;
    c.schema = s;
    c.proto = proto;
    list = schema_attr(st, (PyObject *)s, cls,
                       response ? ATTR_RESPONSE : ATTR_ARGUMENTS);
    result = list ? strings_to_objects(&c, response ? s->response : s->arguments,
                                       list, box)
                  : NULL;
    Py_XDECREF(list);
    Py_DECREF(s);
    return result;
}

static inline PyObject *
schema_parse_arguments(module_state *st, PyObject *schema, PyObject *cls,
                       PyObject *box, PyObject *proto)
{
    return schema_parse(st, schema, cls, box, proto, 0);
}

static inline PyObject *
schema_parse_response(module_state *st, PyObject *schema, PyObject *cls,
                      PyObject *box, PyObject *proto)
{
    return schema_parse(st, schema, cls, box, proto, 1);
}

/* ==== the private module functions (for tests) ========================= */

static const char *const coding_params[] = {"cls", "objects", "proto"};
static const char *const parsing_params[] = {"cls", "box", "proto"};
static const arg_spec makeArguments_spec = {"_makeArguments", coding_params, 3, 3, 0};
static const arg_spec makeResponse_spec = {"_makeResponse", coding_params, 3, 3, 0};
static const arg_spec parseArguments_spec = {"_parseArguments", parsing_params, 3, 3, 0};
static const arg_spec parseResponse_spec = {"_parseResponse", parsing_params, 3, 3, 0};

typedef enum {
    OP_MAKE_ARGUMENTS,
    OP_MAKE_RESPONSE,
    OP_PARSE_ARGUMENTS,
    OP_PARSE_RESPONSE
} coding_op;

static PyObject *
run_op(PyObject *module, const arg_spec *spec, coding_op op,
       PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    module_state *st = get_state(module);
    PyObject *a[3];
    if (bind_args(spec, args, nargs, kwnames, a, NULL, NULL) < 0) {
        return NULL;
    }
    switch (op) {
    case OP_MAKE_ARGUMENTS:
        return schema_make_arguments(st, NULL, a[0], a[1], a[2]);
    case OP_MAKE_RESPONSE:
        return schema_make_response(st, NULL, a[0], a[1], a[2]);
    case OP_PARSE_ARGUMENTS:
        return schema_parse_arguments(st, NULL, a[0], a[1], a[2]);
    default:
        return schema_parse_response(st, NULL, a[0], a[1], a[2]);
    }
}

PyDoc_STRVAR(makeArguments_doc,
"_makeArguments($module, cls, objects, proto)\n--\n\n"
"Command.makeArguments for cls, in C (private, for tests).");
PyDoc_STRVAR(makeResponse_doc,
"_makeResponse($module, cls, objects, proto)\n--\n\n"
"Command.makeResponse for cls, in C (private, for tests).");
PyDoc_STRVAR(parseArguments_doc,
"_parseArguments($module, cls, box, proto)\n--\n\n"
"Command.parseArguments for cls, in C (private, for tests).");
PyDoc_STRVAR(parseResponse_doc,
"_parseResponse($module, cls, box, proto)\n--\n\n"
"Command.parseResponse for cls, in C (private, for tests).");
PyDoc_STRVAR(makeArgumentsFromKeywords_doc,
"_makeArgumentsFromKeywords($module, cls, proto, /, **kw)\n--\n\n"
"What cls(**kw) checks, then cls.makeArguments(kw, proto), in C, from\n"
"the call's keywords: callRemote's path (private, for tests).");

#define CODING_FUNCTION(cname, spec, op)                                \
    static PyObject *                                                   \
    cname(PyObject *module, PyObject *const *args, Py_ssize_t nargs,    \
          PyObject *kwnames)                                            \
    {                                                                   \
        return run_op(module, &spec, op, args, nargs, kwnames);         \
    }
CODING_FUNCTION(module_makeArguments, makeArguments_spec, OP_MAKE_ARGUMENTS)
CODING_FUNCTION(module_makeResponse, makeResponse_spec, OP_MAKE_RESPONSE)
CODING_FUNCTION(module_parseArguments, parseArguments_spec, OP_PARSE_ARGUMENTS)
CODING_FUNCTION(module_parseResponse, parseResponse_spec, OP_PARSE_RESPONSE)
#undef CODING_FUNCTION

/* _makeArgumentsFromKeywords(cls, proto, /, **kw) */
static PyObject *
module_makeArgumentsFromKeywords(PyObject *module, PyObject *const *args,
                                 Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "_makeArgumentsFromKeywords() takes 2 positional "
                     "arguments but %zd were given", nargs);
        return NULL;
    }
    if (schema_check_keywords(get_state(module), NULL, args[0], kwnames) < 0) {
        return NULL;
    }
    return schema_make_arguments_kw(get_state(module), NULL, args[0],
                                    args + nargs, kwnames, args[1]);
}

#endif /* AMPCORE_ARGUMENTS_H */
