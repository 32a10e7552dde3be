/*
 * ampcore._ampcore: serialization, AmpBox.serialize in C.
 *
 * The fast path writes a dict or AmpBox of exact bytes with the pure-C
 * codec; everything else takes stock's steps in stock's order, so that what
 * stock refuses fails with the same exception.
 */
#ifndef AMPCORE_SERIALIZE_H
#define AMPCORE_SERIALIZE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "codec.h"
#include "state.h"

/* `def unpack(item): k, v = item; return k, v`, compiled once: the odd
   items() of a box subclass then fail exactly as under stock. */
/* Called once, by the module's exec slot. */
static int
serialize_init(module_state *st)
{
    PyObject *globals = PyDict_New(), *r;
    if (globals == NULL) {
        return -1;
    }
    if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
        Py_DECREF(globals);
        return -1;
    }
    r = PyRun_String("def unpack(item):\n    k, v = item\n    return k, v\n",
                     Py_file_input, globals, globals);
    if (r == NULL) {
        Py_DECREF(globals);
        return -1;
    }
    Py_DECREF(r);
    st->unpack_pair = PyDict_GetItemString(globals, "unpack");
    Py_XINCREF(st->unpack_pair);
    Py_DECREF(globals);
    return st->unpack_pair == NULL ? -1 : 0;
}


static int
raise_too_long(module_state *st, int is_key, PyObject *value, PyObject *key)
{
    /* TooLong(isKey, isLocal, value, keyName): the same objects
       AmpBox.serialize passes, so `exc.value is` the caller's object. */
    PyObject *exc = PyObject_CallFunctionObjArgs(
        st->TooLong, is_key ? Py_True : Py_False, Py_True, value,
        key ? key : Py_None, NULL);
    if (exc != NULL) {
        PyErr_SetObject(st->TooLong, exc);
        Py_DECREF(exc);
    }
    return -1;
}

static PyObject *
pack_length(Py_ssize_t n)
{
    char prefix[2] = {(char)((n >> 8) & 0xFF), (char)(n & 0xFF)};
    return PyBytes_FromStringAndSize(prefix, 2);
}

/*
 * The general path, for boxes whose keys or values are not all exact bytes
 * or whose items() may be overridden.  It takes stock's steps in stock's
 * order (AmpBox.serialize): sorted(box.items()), then per pair the str
 * checks, the length checks, and finally b"".join, so every exception
 * (mixed key types failing in the sort, len() of an int, a value join
 * refuses) is the one stock raises.
 */
static PyObject *
serialize_general(module_state *st, PyObject *box)
{
    PyObject *items = NULL, *parts = NULL, *result = NULL, *pair, *k, *v, *t;
    Py_ssize_t i, n, klen, vlen;

    t = PyObject_CallMethodNoArgs(box, st->str_items);
    if (t == NULL) {
        return NULL;
    }
    items = PySequence_List(t);
    Py_DECREF(t);
    if (items == NULL || PyList_Sort(items) < 0) {
        goto done;
    }
    n = PyList_GET_SIZE(items);
    parts = PyList_New(0);
    if (parts == NULL) {
        goto done;
    }
    for (i = 0; i < n; i++) {
        pair = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
            /* Anything but a pair: unpack it as stock's `for k, v in`
               does, errors included, with the interpreter's own code. */
            t = PyObject_CallOneArg(st->unpack_pair, pair);
            if (t == NULL) {
                goto done;
            }
            PyList_SET_ITEM(items, i, t);
            Py_DECREF(pair);
            pair = t;
        }
        k = PyTuple_GET_ITEM(pair, 0);
        v = PyTuple_GET_ITEM(pair, 1);
        if (Py_IS_TYPE(k, &PyUnicode_Type)) {
            PyErr_Format(PyExc_TypeError, "Unicode key not allowed: %R", k);
            goto done;
        }
        if (Py_IS_TYPE(v, &PyUnicode_Type)) {
            PyErr_Format(PyExc_TypeError,
                         "Unicode value for key %R not allowed: %R", k, v);
            goto done;
        }
        if ((klen = PyObject_Size(k)) < 0) {
            goto done;
        }
        if (klen > AMP_MAX_KEY_LENGTH) {
            raise_too_long(st, 1, k, NULL);
            goto done;
        }
        if ((vlen = PyObject_Size(v)) < 0) {
            goto done;
        }
        if (vlen > AMP_MAX_VALUE_LENGTH) {
            raise_too_long(st, 0, v, k);
            goto done;
        }
        if ((t = pack_length(klen)) == NULL) {
            goto done;
        }
        if (PyList_Append(parts, t) < 0 || PyList_Append(parts, k) < 0) {
            Py_DECREF(t);
            goto done;
        }
        Py_DECREF(t);
        if ((t = pack_length(vlen)) == NULL) {
            goto done;
        }
        if (PyList_Append(parts, t) < 0 || PyList_Append(parts, v) < 0) {
            Py_DECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    if ((t = pack_length(0)) == NULL) {
        goto done;
    }
    if (PyList_Append(parts, t) < 0) {
        Py_DECREF(t);
        goto done;
    }
    Py_DECREF(t);
    result = PyObject_CallMethodOneArg(st->empty_bytes, st->str_join, parts);
done:
    Py_XDECREF(items);
    Py_XDECREF(parts);
    return result;
}

#define STACK_PAIRS 16

/* AmpBox.serialize for a box object; the fast path covers plain dicts and
   AmpBoxes whose keys and values are all exact bytes. */
static PyObject *
serialize_box(module_state *st, PyObject *box)
{
    amp_pair stack_pairs[STACK_PAIRS], *pairs = stack_pairs;
    PyObject *key, *value, *result = NULL;
    Py_ssize_t pos = 0, n, i = 0;
    size_t bad;

    if (!PyDict_CheckExact(box) && !Py_IS_TYPE(box, st->AmpBox)) {
        return serialize_general(st, box);
    }
    n = PyDict_GET_SIZE(box);
    if (n > STACK_PAIRS) {
        pairs = PyMem_New(amp_pair, (size_t)n);
        if (pairs == NULL) {
            return PyErr_NoMemory();
        }
    }
    /* No user code runs from here to the end: the dict cannot change under
       the borrowed pointers. */
    while (PyDict_Next(box, &pos, &key, &value)) {
        if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(value)) {
            if (pairs != stack_pairs) {
                PyMem_Free(pairs);
            }
            return serialize_general(st, box);
        }
        pairs[i].key = (const unsigned char *)PyBytes_AS_STRING(key);
        pairs[i].key_len = (size_t)PyBytes_GET_SIZE(key);
        pairs[i].value = (const unsigned char *)PyBytes_AS_STRING(value);
        pairs[i].value_len = (size_t)PyBytes_GET_SIZE(value);
        pairs[i].index = (size_t)(pos - 1);
        i++;
    }
    amp_sort_pairs(pairs, (size_t)n);
    switch (amp_check_pairs(pairs, (size_t)n, &bad)) {
    case AMP_PAIRS_OK:
        result = PyBytes_FromStringAndSize(NULL,
                                           (Py_ssize_t)amp_box_size(pairs, (size_t)n));
        if (result != NULL) {
            amp_write_box((unsigned char *)PyBytes_AS_STRING(result), pairs,
                          (size_t)n);
        }
        break;
    case AMP_PAIR_KEY_TOO_LONG:
    case AMP_PAIR_VALUE_TOO_LONG:
        /* Recover the objects: the dict position recorded for this pair. */
        pos = (Py_ssize_t)pairs[bad].index;
        if (PyDict_Next(box, &pos, &key, &value)) {
            if (pairs[bad].key_len > AMP_MAX_KEY_LENGTH) {
                raise_too_long(st, 1, key, NULL);
            }
            else {
                raise_too_long(st, 0, value, key);
            }
        }
        else {
            PyErr_SetString(PyExc_SystemError, "ampcore: box changed size");
        }
        break;
    }
    if (pairs != stack_pairs) {
        PyMem_Free(pairs);
    }
    return result;
}

PyDoc_STRVAR(serialize_doc,
"serialize($module, box, /)\n--\n\n"
"Encode a box as AmpBox.serialize does: the same bytes (pairs sorted\n"
"bytewise by key) and, for what stock refuses, the same exceptions.");

static PyObject *
module_serialize(PyObject *module, PyObject *box)
{
    return serialize_box(get_state(module), box);
}

#endif /* AMPCORE_SERIALIZE_H */
