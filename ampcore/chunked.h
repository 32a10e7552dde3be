/*
 * ampcore._ampcore: receiving a value of ampcore.arguments.Chunked, checked
 * and joined in C.
 *
 *   _joinChunks(box, name, maxLength, error) -> bytes or None
 *
 * does exactly what _joinChunksPython in ampcore/arguments.py does, with
 * the same results, the same exceptions and the same messages (the tests
 * run both against each other): the value of `name` in the dict `box`,
 * whether bare (`name`), cut (`name.0` .. `name.N-1`) or in the BigString
 * layout (`name`, `name.2` .. `name.N+1`); None if there is none; its keys
 * deleted from `box`.  A refused layout raises error(name, reason), which
 * is ampcore.arguments.MalformedChunks.
 *
 * One walk over the box checks every chunk key and adds up the lengths; the
 * total is checked against maxLength before anything is allocated; a second
 * walk copies each chunk straight into the result.  Python code can only
 * run before the first walk (looking up `name`) and after the second
 * (deleting the keys), so the borrowed pointers in between stay valid.
 *
 * Only plain dicts and AmpBoxes should be given: their items are read with
 * PyDict_Next, past any method a subclass may override (arguments.py gives
 * any other box to the Python join).
 */
#ifndef AMPCORE_CHUNKED_H
#define AMPCORE_CHUNKED_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* AMP's largest value: the length of every chunk but the last. */
#define CHUNKED_CHUNK_LENGTH 65535

/* The index a key suffix names: 1 and *index if it is canonical decimal
   (ASCII digits, no leading zero but for "0"), else 0.  Indexes too large
   to be the index of any chunk come out as PY_SSIZE_T_MAX. */
static int
chunked_index(const char *s, Py_ssize_t n, Py_ssize_t *index)
{
    Py_ssize_t i, v = 0;
    if (n < 1 || (s[0] == '0' && n > 1)) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    for (i = 0; i < n; i++) {
        int digit = s[i] - '0';
        if (v > (PY_SSIZE_T_MAX - digit) / 10) {
            v = PY_SSIZE_T_MAX; /* past any box's chunk count, whatever
                                   the width of Py_ssize_t */
            break;
        }
        v = v * 10 + digit;
    }
    *index = v;
    return 1;
}

/* Raise error(name, reason): always NULL. */
static PyObject *
chunked_malformed(PyObject *error, PyObject *name, const char *format, ...)
{
    PyObject *reason, *exc;
    va_list vargs;
    va_start(vargs, format);
    reason = PyUnicode_FromFormatV(format, vargs);
    va_end(vargs);
    if (reason == NULL) {
        return NULL;
    }
    exc = PyObject_CallFunctionObjArgs(error, name, reason, NULL);
    Py_DECREF(reason);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* Whether `key` is `name` + "." + something: the something, else NULL. */
static inline const char *
chunked_suffix(PyObject *key, const char *name, Py_ssize_t name_len,
               Py_ssize_t *suffix_len)
{
    const char *k;
    Py_ssize_t k_len;
    if (!PyBytes_Check(key)) {
        return NULL;
    }
    k = PyBytes_AS_STRING(key);
    k_len = PyBytes_GET_SIZE(key);
    if (k_len <= name_len || k[name_len] != '.' || memcmp(k, name, (size_t)name_len) != 0) {
        return NULL;
    }
    *suffix_len = k_len - name_len - 1;
    return k + name_len + 1;
}

/* Delete each key of `keys` from `box`: 0, or -1 with an exception. */
static int
chunked_delete(PyObject *box, PyObject *keys)
{
    Py_ssize_t i;
    for (i = 0; i < PyList_GET_SIZE(keys); i++) {
        if (PyDict_DelItem(box, PyList_GET_ITEM(keys, i)) < 0) {
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(joinChunks_doc,
"_joinChunks($module, box, name, maxLength, error, /)\n--\n\n"
"Private to ampcore.arguments: the value of a Chunked argument in a\n"
"received box (a dict), checked and joined, its keys deleted from the\n"
"box; None if it is absent.  A layout that is refused raises\n"
"error(name, reason).  The same as ampcore.arguments._joinChunksPython.");

static PyObject *
module_joinChunks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *box, *name, *error, *keys = NULL, *bare = NULL, *result = NULL;
    PyObject *key, *value;
    const char *name_s, *suffix;
    Py_ssize_t name_len, max_length, suffix_len, index, length, pos;
    Py_ssize_t n = 0, total = 0, low = 0, high = 0, high_length = 0;
    Py_ssize_t pieces, first, copied;
    int has0 = 0, has1 = 0;
    char *out;

    (void)module;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "_joinChunks expected 4 arguments, got %zd", nargs);
        return NULL;
    }
    box = args[0];
    name = args[1];
    error = args[3];
    if (!PyDict_Check(box)) {
        PyErr_SetString(PyExc_TypeError, "_joinChunks needs a dict");
        return NULL;
    }
    if (!PyBytes_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "the argument name must be bytes");
        return NULL;
    }
    max_length = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (max_length == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* Allocated before the walks: nothing between them may run a
       collection (and so Python code). */
    if ((keys = PyList_New(0)) == NULL) {
        return NULL;
    }
    bare = PyDict_GetItemWithError(box, name);
    if (bare == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (bare == Py_None) {
        bare = NULL;     /* None is no value, as box.get(name) is None */
    }
    Py_XINCREF(bare);
    if (bare != NULL) {
        if (!PyBytes_Check(bare)) {
            PyErr_Format(PyExc_TypeError, "the value of %R is not bytes", name);
            goto done;
        }
        if (PyBytes_GET_SIZE(bare) > CHUNKED_CHUNK_LENGTH) {
            chunked_malformed(error, name, "chunk %R is longer than 65535 bytes",
                              name);
            goto done;
        }
    }
    name_s = PyBytes_AS_STRING(name);
    name_len = PyBytes_GET_SIZE(name);

    /* First walk: check every chunk key and value, count, add up. */
    pos = 0;
    while (PyDict_Next(box, &pos, &key, &value)) {
        suffix = chunked_suffix(key, name_s, name_len, &suffix_len);
        if (suffix == NULL) {
            continue;
        }
        if (!chunked_index(suffix, suffix_len, &index)) {
            chunked_malformed(error, name,
                              "chunk key %R: the index is not canonical decimal",
                              key);
            goto done;
        }
        if (!PyBytes_Check(value)) {
            PyErr_Format(PyExc_TypeError, "the value of %R is not bytes", key);
            goto done;
        }
        length = PyBytes_GET_SIZE(value);
        if (length > CHUNKED_CHUNK_LENGTH) {
            chunked_malformed(error, name, "chunk %R is longer than 65535 bytes",
                              key);
            goto done;
        }
        if (n == 0 || index < low) {
            low = index;
        }
        if (n == 0 || index > high) {
            high = index;
            high_length = length;
        }
        n++;
        total += length;
        has0 |= index == 0;
        has1 |= index == 1;
    }

    if (n == 0) {
        if (bare == NULL) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (PyBytes_GET_SIZE(bare) > max_length) {
            chunked_malformed(error, name, "%zd bytes, over maxLength %zd",
                              PyBytes_GET_SIZE(bare), max_length);
            goto done;
        }
        if (PyDict_DelItem(box, name) < 0) {
            goto done;
        }
        result = Py_NewRef(bare);
        goto done;
    }
    if (bare == NULL) {
        if (low != 0 || high != n - 1) {
            chunked_malformed(error, name, "%zd chunks not numbered .0 to .%zd",
                              n, n - 1);
            goto done;
        }
        if (n == 1) {
            chunked_malformed(error, name,
                              "a lone chunk .0 (a value of at most 65535 bytes "
                              "goes under the bare key)");
            goto done;
        }
        first = 0;
        pieces = n;
    }
    else {
        if (has0) {
            chunked_malformed(error, name, "both the bare key and chunk .0");
            goto done;
        }
        if (has1) {
            chunked_malformed(error, name,
                              "the bare key with chunk .1 (BigString chunks "
                              "start at .2)");
            goto done;
        }
        if (low != 2 || high != n + 1) {
            chunked_malformed(error, name,
                              "%zd chunks after the bare key not numbered .2 "
                              "to .%zd", n, n + 1);
            goto done;
        }
        total += PyBytes_GET_SIZE(bare);
        first = 1;
        pieces = n + 1;
    }
    if (total > max_length) {
        chunked_malformed(error, name, "%zd bytes in chunks, over maxLength %zd",
                          total, max_length);
        goto done;
    }
    /* Every piece is at most a chunk long: the ones before the last are all
       full exactly when they add up to (pieces - 1) full chunks. */
    if (total - high_length != (pieces - 1) * CHUNKED_CHUNK_LENGTH) {
        chunked_malformed(error, name, "a chunk before the last is not 65535 bytes");
        goto done;
    }
    if (high_length == 0) {
        chunked_malformed(error, name, "the last chunk is empty");
        goto done;
    }

    /* Second walk: copy each chunk to its place.  The checks above put
       piece p at p * 65535 and make the pieces fill the result exactly;
       `copied` confirms it. */
    if ((result = PyBytes_FromStringAndSize(NULL, total)) == NULL) {
        goto done;
    }
    out = PyBytes_AS_STRING(result);
    copied = 0;
    if (bare != NULL) {
        memcpy(out, PyBytes_AS_STRING(bare), (size_t)CHUNKED_CHUNK_LENGTH);
        copied = CHUNKED_CHUNK_LENGTH;
    }
    pos = 0;
    while (PyDict_Next(box, &pos, &key, &value)) {
        suffix = chunked_suffix(key, name_s, name_len, &suffix_len);
        if (suffix == NULL || !chunked_index(suffix, suffix_len, &index)) {
            continue;
        }
        length = PyBytes_GET_SIZE(value);
        index -= first;
        memcpy(out + index * CHUNKED_CHUNK_LENGTH, PyBytes_AS_STRING(value),
               (size_t)length);
        copied += length;
        if (PyList_Append(keys, key) < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
    if (copied != total) {
        PyErr_SetString(PyExc_SystemError, "ampcore: the box changed while joining");
        Py_CLEAR(result);
        goto done;
    }
    if (chunked_delete(box, keys) < 0
        || (bare != NULL && PyDict_DelItem(box, name) < 0)) {
        Py_CLEAR(result);
        goto done;
    }
done:
    Py_XDECREF(bare);
    Py_DECREF(keys);
    return result;
}

#endif /* AMPCORE_CHUNKED_H */
