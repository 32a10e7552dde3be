/*
 * ampcore._ampcore: the private and version-dependent CPython API the
 * binding uses, behind one small interface.  Nothing else in ampcore calls
 * an underscore-prefixed CPython function or tests PY_VERSION_HEX.
 */
#ifndef AMPCORE_COMPAT_H
#define AMPCORE_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The attribute `name` as found on the type's MRO, without calling
   descriptors (a borrowed reference, or NULL with no exception set).  The
   fast paths compare it with the stock implementation they replace. */
static inline PyObject *
compat_type_lookup(PyTypeObject *type, PyObject *name)
{
    return _PyType_Lookup(type, name);
}

/*
 * The type's version tag: a number CPython changes whenever an attribute of
 * the type or of one of its bases is set or deleted, so an unchanged tag
 * means every attribute lookup on the type still finds what it found.  0
 * when the type has none and cannot be given one (then nothing can be
 * assumed).  A lookup is what assigns a tag; `name` is any interned name.
 */
static inline unsigned int
compat_type_version(PyTypeObject *type, PyObject *name)
{
    if (type->tp_version_tag == 0) {
        (void)_PyType_Lookup(type, name);
    }
    return type->tp_version_tag;
}

/* Whether a weak reference is alive and refers to `obj`. */
static inline int
compat_weakref_refers_to(PyObject *ref, PyObject *obj)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *target = NULL;
    int alive = PyWeakref_GetRef(ref, &target);
    Py_XDECREF(target);
    if (alive < 0) {
        PyErr_Clear();
    }
    return alive > 0 && target == obj;
#else
    return PyWeakref_GET_OBJECT(ref) == obj;
#endif
}

/*
 * A tag that differs after any change to `dict` (values included), or 0
 * where this CPython keeps none that an extension may read; callers that
 * cache a fact about a dict's contents check the contents again when 0.
 * Tags are globally unique, so a new dict at a freed one's address cannot
 * match a cached tag.  CPython 3.12 deprecated the field (it is still kept
 * up to date there and in 3.13); 3.14 drops it.
 */
#include <stdint.h>
static inline uint64_t
compat_dict_version(PyObject *dict)
{
#if PY_VERSION_HEX < 0x030E0000
#  if defined(__GNUC__) || defined(__clang__)
#    pragma GCC diagnostic push
#    pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#  elif defined(_MSC_VER)
#    pragma warning(push)
#    pragma warning(disable: 4996)
#  endif
    return ((PyDictObject *)dict)->ma_version_tag;
#  if defined(__GNUC__) || defined(__clang__)
#    pragma GCC diagnostic pop
#  elif defined(_MSC_VER)
#    pragma warning(pop)
#  endif
#else
    (void)dict;
    return 0;
#endif
}

/* Whether instances of `type` can carry attributes of their own (a
   `__dict__`), which could shadow what the type defines. */
static inline int
compat_has_instance_dict(PyTypeObject *type)
{
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        return 1;
    }
#endif
    return type->tp_dictoffset != 0;
}

/*
 * Take the exception being raised: *type, *value and *tb become new
 * references (any of them NULL if absent), the value normalized and
 * carrying its traceback, and the error indicator is cleared.
 */
static inline void
compat_fetch_exception(PyObject **type, PyObject **value, PyObject **tb)
{
#if PY_VERSION_HEX >= 0x030C0000
    *value = PyErr_GetRaisedException();
    *type = *value ? Py_NewRef((PyObject *)Py_TYPE(*value)) : NULL;
    *tb = *value ? PyException_GetTraceback(*value) : NULL;
#else
    PyErr_Fetch(type, value, tb);
    PyErr_NormalizeException(type, value, tb);
    if (*tb != NULL && *value != NULL) {
        PyException_SetTraceback(*value, *tb);
    }
#endif
}

#endif /* AMPCORE_COMPAT_H */
