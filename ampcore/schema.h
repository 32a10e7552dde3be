/*
 * ampcore._ampcore: Command schemas, what arguments.h codes Command
 * arguments and responses from.
 *
 * A schema is compiled per Command class on first use and cached in the
 * module state.  It holds what Command's coding classmethods read from the
 * class (commandName, arguments, response, requiresAnswer, errors,
 * fatalErrors, reverseErrors, commandType, responseType) and, per argument,
 * its wire name, its Python name (from Twisted's own
 * _wireNameToPythonIdentifier) and its kind: which stock Argument class it
 * is exactly, or KIND_PY for one coded by its own toBox/fromBox.
 *
 * Nothing here assumes a class stays as it was compiled:
 *
 *  - The class's version tag (and its metaclass's) tells whether any
 *    attribute of it or of a base was set since; if so the attributes are
 *    looked up again and compared by identity, and the schema compiled
 *    again if one differs.
 *  - The argument lists may be mutated in place: each use compares their
 *    length and items (immutable (name, argument) tuples) by identity, and
 *    arguments.h matches each item it codes by identity too.
 *  - The arguments are instances anyone may change (optional, elementType,
 *    subargs, a method set on the instance): arguments.h looks at each one
 *    when its turn comes (entry_in_c), as stock reads them then.
 *  - The stock classes themselves may be monkeypatched: their attributes
 *    are checked against what was imported, again whenever their version
 *    tag changes (stock_class_ok).
 *
 * The cache maps id(class) to the schema and holds the class only through
 * a weak reference, whose callback drops the entry when the class dies:
 * dynamically created Command classes are not kept alive.  (A schema
 * holds the class's argument lists strongly, so an argument that refers
 * back to its own Command class would keep that one class alive.)
 */
#ifndef AMPCORE_SCHEMA_H
#define AMPCORE_SCHEMA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "calls.h"
#include "compat.h"
#include "state.h"

/* ==== the stock classes ================================================= */

/* The attributes whose stock values the C code stands in for, per class:
   for the Argument kinds, every coding method (toBox, fromBox, retrieve,
   toStringProto, fromStringProto, toString, fromString) and what those
   read from the instance; for AmpBox, what is done to boxes in C; for
   Int16StringReceiver, what ListOf.fromString's framing uses. */
#define ARGUMENT_CHECKED(X)                                             \
    X(toBox) X(fromBox) X(retrieve) X(toStringProto) X(fromStringProto) \
    X(toString) X(fromString) X(optional) X(elementType) X(subargs)
/* The first names of ARGUMENT_CHECKED: the coding methods, which an
   instance attribute could also override. */
#define CODING_METHOD_COUNT 7
#define AMPBOX_CHECKED(X)                                               \
    X(__init__) X(__new__) X(copy) X(serialize) X(__setitem__)          \
    X(__getitem__) X(__delitem__) X(get) X(pop) X(update) X(keys)       \
    X(__iter__)
#define INT16_CHECKED(X)                                                \
    X(__init__) X(__new__) X(dataReceived) X(MAX_LENGTH)                \
    X(prefixLength) X(structFormat) X(paused)

static PyObject *
tuple_of(PyObject *const *items, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    Py_ssize_t i;
    for (i = 0; t != NULL && i < n; i++) {
        PyTuple_SET_ITEM(t, i, Py_NewRef(items[i]));
    }
    return t;
}

/* A tuple of the names one stock class is checked for. */
static PyObject *
stock_checked_names(module_state *st, stock_class which)
{
#define X(name) st->str_##name,
    if (which == STOCK_AMPBOX) {
        PyObject *const names[] = {AMPBOX_CHECKED(X)};
        return tuple_of(names, Py_ARRAY_LENGTH(names));
    }
    if (which == STOCK_INT16) {
        PyObject *const names[] = {INT16_CHECKED(X)};
        return tuple_of(names, Py_ARRAY_LENGTH(names));
    }
    {
        PyObject *const names[] = {ARGUMENT_CHECKED(X)};
        return tuple_of(names, Py_ARRAY_LENGTH(names));
    }
#undef X
}

/* Check one stock class now: 1 if all its checked attributes are the
   originals and attribute access is object's own, else 0. */
static int
stock_class_check(stock_class_state *sc)
{
    Py_ssize_t i;
    if (sc->cls->tp_getattro != PyBaseObject_Type.tp_getattro) {
        return 0;     /* a __getattribute__ or __getattr__ was added */
    }
    for (i = 0; i < sc->names_count; i++) {
        if (compat_type_lookup(sc->cls, PyTuple_GET_ITEM(sc->names, i))
            != sc->originals[i]) {
            return 0;
        }
    }
    return 1;
}

/* Whether a stock class still has every checked attribute it was imported
   with.  Cheap while its version tag is unchanged. */
static inline int
stock_class_ok(module_state *st, stock_class which)
{
    stock_class_state *sc = &st->stock[which];
    unsigned int tag = compat_type_version(sc->cls, st->str_copy);
    if (tag == 0 || tag != sc->tag) {
        sc->stock = stock_class_check(sc);
        sc->tag = tag;
    }
    return sc->stock;
}

/* ==== compiled argument lists =========================================== */

/* How one argument is coded: exactly which stock class it is (one of the
   first seven stock classes), or by its own methods. */
typedef enum {
    KIND_INTEGER = STOCK_INTEGER,
    KIND_STRING = STOCK_STRING,
    KIND_UNICODE = STOCK_UNICODE,
    KIND_BOOLEAN = STOCK_BOOLEAN,
    KIND_FLOAT = STOCK_FLOAT,
    KIND_LISTOF = STOCK_LISTOF,
    KIND_AMPLIST = STOCK_AMPLIST,
    KIND_PY                       /* its own toBox / fromBox */
} arg_kind;

static const char *const kind_names[] = {
    "Integer", "String", "Unicode", "Boolean", "Float", "ListOf", "AmpList",
    "python"
};

/* A kind a ListOf element may have: one coded by toString/fromString
   alone, not a list. */
static inline int
kind_is_simple(arg_kind kind)
{
    return kind <= KIND_FLOAT;
}

/* AmpLists nest; a self-containing one stops being compiled here. */
#define MAX_AMPLIST_DEPTH 16

typedef struct arglist arglist;

/* One (name, argument) pair of an argument list. */
typedef struct {
    PyObject *item;        /* the pair as found in the list, owned: its
                              identity selects this entry */
    PyObject *name;        /* wire name (bytes), borrowed from item */
    PyObject *pyname;      /* _wireNameToPythonIdentifier(name), owned */
    PyObject *arg;         /* the argument, borrowed from item */
    arg_kind kind;         /* what the argument was when compiled */
    PyObject *elem;        /* ListOf: its elementType then, owned */
    arg_kind elem_kind;
    arglist *sub;          /* AmpList: its subargs, compiled */
} arg_entry;

struct arglist {
    PyObject *list;        /* the list (or tuple) compiled, owned */
    Py_ssize_t n;          /* entries filled */
    arg_entry entries[];
};

static void
arglist_free(arglist *al)
{
    Py_ssize_t i;
    if (al == NULL) {
        return;
    }
    for (i = 0; i < al->n; i++) {
        Py_XDECREF(al->entries[i].item);
        Py_XDECREF(al->entries[i].pyname);
        Py_XDECREF(al->entries[i].elem);
        arglist_free(al->entries[i].sub);
    }
    Py_XDECREF(al->list);
    PyMem_Free(al);
}

static int
arglist_traverse(arglist *al, visitproc visit, void *arg)
{
    Py_ssize_t i;
    if (al == NULL) {
        return 0;
    }
    Py_VISIT(al->list);
    for (i = 0; i < al->n; i++) {
        Py_VISIT(al->entries[i].item);
        Py_VISIT(al->entries[i].elem);
        if (arglist_traverse(al->entries[i].sub, visit, arg) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Items of a list or tuple, by index (the size is read on every use). */
static inline Py_ssize_t
seq_size(PyObject *seq)
{
    return PyList_CheckExact(seq) ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq);
}

static inline PyObject *
seq_item(PyObject *seq, Py_ssize_t i)
{
    return PyList_CheckExact(seq) ? PyList_GET_ITEM(seq, i)
                                  : PyTuple_GET_ITEM(seq, i);
}

/* Whether `list` is the list compiled with its items unchanged. */
static int
arglist_matches(const arglist *al, PyObject *list)
{
    Py_ssize_t i;
    if (al == NULL || al->list != list || seq_size(list) != al->n) {
        return 0;
    }
    for (i = 0; i < al->n; i++) {
        if (seq_item(list, i) != al->entries[i].item) {
            return 0;
        }
    }
    return 1;
}

/* The stock class `arg` is exactly, as a kind; KIND_PY for any other. */
static arg_kind
kind_of(module_state *st, PyObject *arg)
{
    int k;
    for (k = KIND_INTEGER; k < KIND_PY; k++) {
        if (Py_IS_TYPE(arg, st->stock[k].cls)) {
            return (arg_kind)k;
        }
    }
    return KIND_PY;
}

/* The compile outcome of an argument list. */
typedef enum {
    COMPILE_ERROR = -1,      /* an exception is set */
    COMPILE_UNSUPPORTED = 0, /* not a shape compiled: stock codes it */
    COMPILE_OK = 1
} compile_status;

static compile_status arglist_compile(module_state *st, PyObject *list,
                                      int depth, arglist **out);

/* Fill in what a ListOf or AmpList entry needs, from the instance as it
   is now; an entry that cannot be compiled is left KIND_PY. */
static int
entry_compile_container(module_state *st, arg_entry *e, int depth)
{
    PyObject *d = PyObject_GenericGetDict(e->arg, NULL), *v;
    compile_status rc;
    if (d == NULL) {
        return -1;
    }
    if (e->kind == KIND_LISTOF) {
        v = PyDict_GetItemWithError(d, st->str_elementType);
        if (v == NULL || !kind_is_simple(kind_of(st, v))) {
            e->kind = KIND_PY;
        }
        else {
            e->elem = Py_NewRef(v);
            e->elem_kind = kind_of(st, v);
        }
    }
    else {
        v = PyDict_GetItemWithError(d, st->str_subargs);
        if (v == NULL || depth >= MAX_AMPLIST_DEPTH) {
            e->kind = KIND_PY;
        }
        else {
            /* Held across the call: compiling can run code (Twisted's
               name function, a collection) that drops it from d. */
            Py_INCREF(v);
            rc = arglist_compile(st, v, depth + 1, &e->sub);
            Py_DECREF(v);
            if (rc == COMPILE_ERROR) {
                Py_DECREF(d);
                return -1;
            }
            if (rc == COMPILE_UNSUPPORTED) {
                e->kind = KIND_PY;
            }
        }
    }
    Py_DECREF(d);
    return PyErr_Occurred() ? -1 : 0;
}

/*
 * Compile a list of (name, argument) pairs.  Compiled are exact lists or
 * tuples of exact 2-tuples with a bytes name whose Python name Twisted's
 * _wireNameToPythonIdentifier gives as a str; anything else is left to
 * stock's code entirely (COMPILE_UNSUPPORTED), which then raises whatever
 * stock raises for it, when stock raises it.
 */
static compile_status
arglist_compile(module_state *st, PyObject *list, int depth, arglist **out)
{
    arglist *al;
    Py_ssize_t i, n;
    *out = NULL;
    if (!PyList_CheckExact(list) && !PyTuple_CheckExact(list)) {
        return COMPILE_UNSUPPORTED;
    }
    n = seq_size(list);
    al = PyMem_Calloc(1, sizeof(arglist) + (size_t)n * sizeof(arg_entry));
    if (al == NULL) {
        PyErr_NoMemory();
        return COMPILE_ERROR;
    }
    al->list = Py_NewRef(list);
    /* The list is re-read on each step: code run from here may change it
       (a mismatch later only means compiling again). */
    for (i = 0; i < n && i < seq_size(list); i++) {
        arg_entry *e = &al->entries[i];
        PyObject *item = seq_item(list, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(item, 0))) {
            goto unsupported;
        }
        e->item = Py_NewRef(item);
        e->name = PyTuple_GET_ITEM(item, 0);
        e->arg = PyTuple_GET_ITEM(item, 1);
        e->kind = KIND_PY;
        al->n = i + 1;
        e->pyname = PyObject_CallOneArg(st->wire_name_to_identifier, e->name);
        if (e->pyname == NULL) {
            /* e.g. a non-ASCII name: stock raises it on each use. */
            PyErr_Clear();
            goto unsupported;
        }
        if (!PyUnicode_CheckExact(e->pyname)) {
            goto unsupported;
        }
        /* The keyword names of responder calls: interned, as the names
           of a function's parameters are, they match by identity. */
        PyUnicode_InternInPlace(&e->pyname);
        state_know_key(st, e->name, 0);
        e->kind = kind_of(st, e->arg);
        if ((e->kind == KIND_LISTOF || e->kind == KIND_AMPLIST)
            && entry_compile_container(st, e, depth) < 0) {
            arglist_free(al);
            return COMPILE_ERROR;
        }
    }
    *out = al;
    return COMPILE_OK;
unsupported:
    arglist_free(al);
    return COMPILE_UNSUPPORTED;
}

/* Whether every argument of the list, nested ones included, is coded by
   the stock classes' code alone (no argument's own methods run). */
static int
arglist_all_stock(const arglist *al)
{
    Py_ssize_t i;
    for (i = 0; al != NULL && i < al->n; i++) {
        if (al->entries[i].kind == KIND_PY
            || (al->entries[i].kind == KIND_LISTOF
                && al->entries[i].elem_kind == KIND_PY)
            || !arglist_all_stock(al->entries[i].sub)) {
            return 0;
        }
    }
    return 1;
}

/* ==== the schema object ================================================= */

/* The class attributes a schema records: (index, name, is_value).  Values
   are used; methods (is_value 0) are only compared with Command's own. */
#define SCHEMA_ATTRS(X)                                                 \
    X(COMMAND_NAME, commandName, 1)                                     \
    X(ARGUMENTS, arguments, 1)                                          \
    X(RESPONSE, response, 1)                                            \
    X(REQUIRES_ANSWER, requiresAnswer, 1)                               \
    X(ERRORS, errors, 1)                                                \
    X(FATAL_ERRORS, fatalErrors, 1)                                     \
    X(REVERSE_ERRORS, reverseErrors, 1)                                 \
    X(COMMAND_TYPE, commandType, 1)                                     \
    X(RESPONSE_TYPE, responseType, 1)                                   \
    X(MAKE_ARGUMENTS, makeArguments, 0)                                 \
    X(MAKE_RESPONSE, makeResponse, 0)                                   \
    X(PARSE_ARGUMENTS, parseArguments, 0)                               \
    X(PARSE_RESPONSE, parseResponse, 0)                                 \
    X(INIT, __init__, 0)                                                \
    X(NEW, __new__, 0)                                                  \
    X(DO_COMMAND, _doCommand, 0)

typedef enum {
#define X(index, name, is_value) ATTR_##index,
    SCHEMA_ATTRS(X)
#undef X
    ATTR_COUNT
} schema_attr_id;

/* Which of a class's Command methods are Command's own (schema_stock()):
   a caller may stand in for stock's code only where it would run. */
typedef enum {
    STOCK_MAKE_ARGUMENTS = 1 << 0,
    STOCK_MAKE_RESPONSE = 1 << 1,
    STOCK_PARSE_ARGUMENTS = 1 << 2,
    STOCK_PARSE_RESPONSE = 1 << 3,
    /* cls(**kw) is type.__call__, object.__new__ and Command.__init__ */
    STOCK_CONSTRUCTION = 1 << 4,
    STOCK_DO_COMMAND = 1 << 5
} stock_methods;

/* How a schema's operations run. */
typedef enum {
    SCHEMA_COMPILED = 0,     /* in C, argument by argument */
    SCHEMA_STOCK             /* an odd class: every operation is stock's
                                function, called as is */
} schema_mode;

typedef struct {
    PyObject_HEAD
    void *cls_id;            /* the class, compared by identity only */
    PyObject *cls_ref;       /* weak reference to it, whose callback drops
                                the cache entry; NULL when not cached */
    PyTypeObject *meta;      /* type(cls) when compiled */
    unsigned int cls_tag;    /* version tags then (0: none) */
    unsigned int meta_tag;
    schema_mode mode;
    int stale;               /* set when a use found something changed */
    unsigned int stock;      /* stock_methods */
    PyObject *attrs[ATTR_COUNT];  /* values owned; methods borrowed and
                                     only compared (NULL: not found) */
    arglist *arguments, *response;
    PyObject *allowed;       /* frozenset of the arguments' Python names */
} SchemaObject;

static const int attr_is_value[ATTR_COUNT] = {
#define X(index, name, is_value) is_value,
    SCHEMA_ATTRS(X)
#undef X
};

static PyObject *
attr_name(module_state *st, schema_attr_id which)
{
    switch (which) {
#define X(index, name, is_value) case ATTR_##index: return st->str_##name;
    SCHEMA_ATTRS(X)
#undef X
    default:
        return NULL;
    }
}

static int
Schema_traverse(SchemaObject *self, visitproc visit, void *arg)
{
    int i;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->cls_ref);
    Py_VISIT(self->meta);
    for (i = 0; i < ATTR_COUNT; i++) {
        if (attr_is_value[i]) {
            Py_VISIT(self->attrs[i]);
        }
    }
    Py_VISIT(self->allowed);
    if (arglist_traverse(self->arguments, visit, arg) < 0) {
        return -1;
    }
    return arglist_traverse(self->response, visit, arg);
}

static int
Schema_clear(SchemaObject *self)
{
    int i;
    Py_CLEAR(self->cls_ref);
    Py_CLEAR(self->meta);
    for (i = 0; i < ATTR_COUNT; i++) {
        if (attr_is_value[i]) {
            Py_CLEAR(self->attrs[i]);
        }
        else {
            self->attrs[i] = NULL;
        }
    }
    Py_CLEAR(self->allowed);
    arglist_free(self->arguments);
    arglist_free(self->response);
    self->arguments = self->response = NULL;
    /* Nothing left to code from: the next use compiles again. */
    self->stale = 1;
    return 0;
}

static void
Schema_dealloc(SchemaObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Schema_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* ==== compiling, validating, caching ==================================== */

/* Whether the metaclass lets `cls.NAME` be the raw class attribute: plain
   type attribute access, and no attribute of any recorded name. */
static int
meta_is_plain(module_state *st, PyTypeObject *meta)
{
    int i;
    if (meta->tp_getattro != PyType_Type.tp_getattro) {
        return 0;
    }
    for (i = 0; i < ATTR_COUNT; i++) {
        if (i != ATTR_INIT && i != ATTR_NEW
            && compat_type_lookup(meta, attr_name(st, (schema_attr_id)i)) != NULL) {
            return 0;
        }
    }
    return 1;
}

/* Whether the attributes recorded are still what the class resolves. */
static int
attrs_unchanged(module_state *st, SchemaObject *s, PyTypeObject *cls)
{
    int i;
    if (Py_TYPE(cls) != s->meta || !meta_is_plain(st, s->meta)) {
        return 0;
    }
    for (i = 0; i < ATTR_COUNT; i++) {
        if (compat_type_lookup(cls, attr_name(st, (schema_attr_id)i))
            != s->attrs[i]) {
            return 0;
        }
    }
    return 1;
}

/* Whether no attribute of the class (or its metaclass) has changed since
   the schema recorded them, without looking at the argument lists.  With
   no version tag to go by, the attributes are compared one by one. */
static int
schema_current(module_state *st, SchemaObject *s, PyObject *cls)
{
    unsigned int tag, meta_tag;
    if (s->cls_id != (void *)cls || s->stale || !PyType_Check(cls)) {
        return 0;
    }
    tag = compat_type_version((PyTypeObject *)cls, st->str_arguments);
    meta_tag = compat_type_version(Py_TYPE(cls), st->str_arguments);
    if (tag != 0 && tag == s->cls_tag && meta_tag != 0
        && meta_tag == s->meta_tag && Py_TYPE(cls) == s->meta) {
        return 1;
    }
    if (!attrs_unchanged(st, s, (PyTypeObject *)cls)) {
        return 0;
    }
    /* Something else changed: remember the tags that hold now. */
    s->cls_tag = tag;
    s->meta_tag = meta_tag;
    return 1;
}

/* Whether the schema may be used for cls right now: its attributes and
   both argument lists are as compiled. */
static int
schema_valid(module_state *st, SchemaObject *s, PyObject *cls)
{
    if (!schema_current(st, s, cls)) {
        return 0;
    }
    return s->mode == SCHEMA_STOCK
           || (arglist_matches(s->arguments, s->attrs[ATTR_ARGUMENTS])
               && arglist_matches(s->response, s->attrs[ATTR_RESPONSE]));
}

/* The frozenset of the arguments' Python names, as Command.makeArguments
   collects them for its allowedNames. */
static PyObject *
allowed_names(const arglist *al)
{
    PyObject *set = PyFrozenSet_New(NULL);
    Py_ssize_t i;
    if (set == NULL) {
        return NULL;
    }
    for (i = 0; i < al->n; i++) {
        if (PySet_Add(set, al->entries[i].pyname) < 0) {
            Py_DECREF(set);
            return NULL;
        }
    }
    return set;
}

/* The class's attribute values must be plain (not descriptors) for
   `cls.NAME` to be the raw attribute. */
static int
values_plain(SchemaObject *s)
{
    int i;
    for (i = 0; i < ATTR_COUNT; i++) {
        if (attr_is_value[i]
            && (s->attrs[i] == NULL || Py_TYPE(s->attrs[i])->tp_descr_get != NULL)) {
            return 0;
        }
    }
    return 1;
}

static unsigned int
stock_flags(module_state *st, SchemaObject *s)
{
    unsigned int flags = 0;
    if (s->attrs[ATTR_MAKE_ARGUMENTS] == st->command_makeArguments) {
        flags |= STOCK_MAKE_ARGUMENTS;
    }
    if (s->attrs[ATTR_MAKE_RESPONSE] == st->command_makeResponse) {
        flags |= STOCK_MAKE_RESPONSE;
    }
    if (s->attrs[ATTR_PARSE_ARGUMENTS] == st->command_parseArguments) {
        flags |= STOCK_PARSE_ARGUMENTS;
    }
    if (s->attrs[ATTR_PARSE_RESPONSE] == st->command_parseResponse) {
        flags |= STOCK_PARSE_RESPONSE;
    }
    if (s->meta != NULL && s->meta->tp_call == PyType_Type.tp_call
        && s->attrs[ATTR_INIT] == st->command___init__
        && s->attrs[ATTR_NEW] == st->command___new__) {
        flags |= STOCK_CONSTRUCTION;
    }
    if (s->attrs[ATTR_DO_COMMAND] == st->command__doCommand) {
        flags |= STOCK_DO_COMMAND;
    }
    return flags;
}

/* Compile a schema for cls (anything: what is not a class, or an odd
   class, gets a SCHEMA_STOCK schema).  New reference, or NULL with an
   exception. */
static SchemaObject *
schema_compile(module_state *st, PyObject *cls)
{
    SchemaObject *s;
    arglist *arguments = NULL, *response = NULL;
    PyObject *allowed = NULL;
    compile_status rc;
    int i, plain = PyType_Check(cls);

    s = PyObject_GC_New(SchemaObject, st->SchemaType);
    if (s == NULL) {
        return NULL;
    }
    s->cls_id = cls;
    s->cls_ref = NULL;
    s->meta = NULL;
    s->cls_tag = s->meta_tag = 0;
    s->mode = SCHEMA_STOCK;
    s->stale = 0;
    s->stock = 0;
    for (i = 0; i < ATTR_COUNT; i++) {
        s->attrs[i] = NULL;
    }
    s->arguments = s->response = NULL;
    s->allowed = NULL;
    PyObject_GC_Track(s);
    if (!plain) {
        return s;
    }
    /* Tags first: a change while compiling leaves them out of date, and
       the next use compiles again. */
    s->cls_tag = compat_type_version((PyTypeObject *)cls, st->str_arguments);
    s->meta_tag = compat_type_version(Py_TYPE(cls), st->str_arguments);
    s->meta = (PyTypeObject *)Py_NewRef(Py_TYPE(cls));
    for (i = 0; i < ATTR_COUNT; i++) {
        PyObject *v = compat_type_lookup((PyTypeObject *)cls,
                                         attr_name(st, (schema_attr_id)i));
        s->attrs[i] = attr_is_value[i] ? Py_XNewRef(v) : v;
    }
    s->stock = stock_flags(st, s);
    if (!meta_is_plain(st, s->meta) || !values_plain(s)) {
        return s;
    }
    rc = arglist_compile(st, s->attrs[ATTR_ARGUMENTS], 0, &arguments);
    if (rc == COMPILE_OK) {
        rc = arglist_compile(st, s->attrs[ATTR_RESPONSE], 0, &response);
    }
    if (rc == COMPILE_OK && (allowed = allowed_names(arguments)) == NULL) {
        rc = COMPILE_ERROR;
    }
    if (rc != COMPILE_OK) {
        arglist_free(arguments);
        arglist_free(response);
        if (rc == COMPILE_ERROR) {
            Py_DECREF(s);
            return NULL;
        }
        return s;
    }
    s->arguments = arguments;
    s->response = response;
    s->allowed = allowed;
    s->mode = SCHEMA_COMPILED;
    return s;
}

/* The weak reference's callback: drop the class's entry, unless a newer
   schema with another reference took its place. */
static PyObject *
schema_forget(PyObject *key, PyTypeObject *defining_class,
              PyObject *const *args, Py_ssize_t nargs,
              PyObject *Py_UNUSED(kwnames))
{
    module_state *st = state_from_class(defining_class);
    PyObject *entry;
    if (nargs != 1 || st == NULL || st->schema_cache == NULL) {
        Py_RETURN_NONE;
    }
    entry = PyDict_GetItemWithError(st->schema_cache, key);
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (((SchemaObject *)entry)->cls_ref == args[0]
        && PyDict_DelItem(st->schema_cache, key) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef schema_forget_def = {
    "_forget_schema", (PyCFunction)(void (*)(void))schema_forget,
    METH_METHOD | METH_FASTCALL | METH_KEYWORDS, NULL};

/* Put a fresh schema into the cache under `key`, with a weak reference
   to the class (the old schema's, if any): 0, or -1 with an exception.
   A class that takes no weak references is simply not cached. */
static int
schema_cache_put(module_state *st, PyObject *key, SchemaObject *s,
                 PyObject *cls, SchemaObject *old)
{
    PyObject *callback;
    if (old != NULL && old->cls_ref != NULL
        && compat_weakref_refers_to(old->cls_ref, cls)) {
        s->cls_ref = Py_NewRef(old->cls_ref);
    }
    else {
        callback = PyCMethod_New(&schema_forget_def, key, NULL, st->SchemaType);
        if (callback == NULL) {
            return -1;
        }
        s->cls_ref = PyWeakref_NewRef(cls, callback);
        Py_DECREF(callback);
        if (s->cls_ref == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
    }
    return PyDict_SetItem(st->schema_cache, key, (PyObject *)s);
}

/*
 * The schema for a Command class, valid as the class is now: compiled on
 * first use, cached, compiled again when the class has changed.  New
 * reference, or NULL with an exception.  `cls` may be anything; what is
 * not a class gets an uncached SCHEMA_STOCK schema.
 */
static PyObject *
command_schema(module_state *st, PyObject *cls)
{
    PyObject *key, *found;
    SchemaObject *s;
    if (!PyType_Check(cls)) {
        return (PyObject *)schema_compile(st, cls);
    }
    if ((key = PyLong_FromVoidPtr(cls)) == NULL) {
        return NULL;
    }
    found = PyDict_GetItemWithError(st->schema_cache, key);
    if (found != NULL && schema_valid(st, (SchemaObject *)found, cls)) {
        Py_DECREF(key);
        return Py_NewRef(found);
    }
    if (found == NULL && PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    /* Held: compiling runs code that may replace the entry. */
    Py_XINCREF(found);
    s = schema_compile(st, cls);
    if (s != NULL
        && schema_cache_put(st, key, s, cls, (SchemaObject *)found) < 0) {
        Py_CLEAR(s);
    }
    Py_XDECREF(found);
    Py_DECREF(key);
    return (PyObject *)s;
}

/* The schema to use for cls now: `schema` if given and still valid, else
   command_schema's.  New reference. */
static inline SchemaObject *
schema_for_use(module_state *st, PyObject *schema, PyObject *cls)
{
    if (schema != NULL && Py_IS_TYPE(schema, st->SchemaType)
        && schema_valid(st, (SchemaObject *)schema, cls)) {
        return (SchemaObject *)Py_NewRef(schema);
    }
    return (SchemaObject *)command_schema(st, cls);
}

/* ==== reading a schema ================================================== */

/*
 * What `cls.NAME` gives now, for a recorded attribute: the recorded value
 * while the class is unchanged, else looked up.  New reference, or NULL
 * with an exception (AttributeError as getattr raises it).
 */
static inline PyObject *
schema_attr(module_state *st, PyObject *schema, PyObject *cls,
            schema_attr_id which)
{
    SchemaObject *s = (SchemaObject *)schema;
    if (s != NULL && attr_is_value[which] && s->mode == SCHEMA_COMPILED
        && schema_current(st, s, cls)) {
        return Py_NewRef(s->attrs[which]);
    }
    return PyObject_GetAttr(cls, attr_name(st, which));
}

/* Which Command methods of the class are Command's own (stock_methods),
   as of the last validation. */
static inline unsigned int
schema_stock(PyObject *schema)
{
    return ((SchemaObject *)schema)->stock;
}

/* Whether making this schema's response runs no argument's own code: then
   doing it again has no effect beyond its result. */
static inline int
schema_response_all_stock(PyObject *schema)
{
    SchemaObject *s = (SchemaObject *)schema;
    return s->mode == SCHEMA_COMPILED && arglist_all_stock(s->response);
}

/* Whether the operations on this schema's class run in C (not the
   stock functions called whole). */
static inline int
schema_coded_in_c(PyObject *schema)
{
    return ((SchemaObject *)schema)->mode == SCHEMA_COMPILED;
}

/* `if cls.requiresAnswer:` as _doCommand evaluates it: 1, 0, -1. */
static inline int
schema_requires_answer(module_state *st, PyObject *schema, PyObject *cls)
{
    PyObject *v = schema_attr(st, schema, cls, ATTR_REQUIRES_ANSWER);
    int t;
    if (v == NULL) {
        return -1;
    }
    t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* ==== the schema as Python sees it (for tests) ========================== */

/* ((wire name, Python name, argument, kind), ...) of one list; ListOf's
   kind names its element's, AmpList's nests its subargs'. */
static PyObject *
describe_arglist(const arglist *al)
{
    PyObject *t, *kind, *row;
    Py_ssize_t i;
    if (al == NULL) {
        Py_RETURN_NONE;
    }
    if ((t = PyTuple_New(al->n)) == NULL) {
        return NULL;
    }
    for (i = 0; i < al->n; i++) {
        const arg_entry *e = &al->entries[i];
        if (e->kind == KIND_LISTOF) {
            kind = PyUnicode_FromFormat("ListOf(%s)", kind_names[e->elem_kind]);
        }
        else if (e->kind == KIND_AMPLIST) {
            PyObject *sub = describe_arglist(e->sub);
            kind = sub ? Py_BuildValue("(sN)", "AmpList", sub) : NULL;
        }
        else {
            kind = PyUnicode_FromString(kind_names[e->kind]);
        }
        row = kind ? Py_BuildValue("(OOON)", e->name, e->pyname, e->arg, kind)
                   : NULL;
        if (row == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, row);
    }
    return t;
}

static PyObject *
Schema_get_arguments(SchemaObject *self, void *Py_UNUSED(closure))
{
    return describe_arglist(self->arguments);
}

static PyObject *
Schema_get_response(SchemaObject *self, void *Py_UNUSED(closure))
{
    return describe_arglist(self->response);
}

static PyObject *
Schema_get_codedInC(SchemaObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->mode == SCHEMA_COMPILED);
}

static PyObject *
Schema_get_stockMethods(SchemaObject *self, void *Py_UNUSED(closure))
{
    static const struct { unsigned int flag; const char *name; } names[] = {
        {STOCK_MAKE_ARGUMENTS, "makeArguments"},
        {STOCK_MAKE_RESPONSE, "makeResponse"},
        {STOCK_PARSE_ARGUMENTS, "parseArguments"},
        {STOCK_PARSE_RESPONSE, "parseResponse"},
        {STOCK_CONSTRUCTION, "construction"},
        {STOCK_DO_COMMAND, "_doCommand"},
    };
    PyObject *set = PyFrozenSet_New(NULL), *name;
    size_t i;
    if (set == NULL) {
        return NULL;
    }
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(self->stock & names[i].flag)) {
            continue;
        }
        name = PyUnicode_FromString(names[i].name);
        if (name == NULL || PySet_Add(set, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(set);
            return NULL;
        }
        Py_DECREF(name);
    }
    return set;
}

/* A recorded value attribute, None when the schema has none. */
static PyObject *
Schema_get_attr(SchemaObject *self, void *closure)
{
    PyObject *v = self->attrs[(schema_attr_id)(Py_intptr_t)closure];
    return Py_NewRef(v != NULL ? v : Py_None);
}

#define SCHEMA_VALUE_GETTER(index, name)                                \
    {#name, (getter)Schema_get_attr, NULL,                              \
     "The class's " #name " when compiled (None: not recorded).",       \
     (void *)(Py_intptr_t)ATTR_##index}

static PyGetSetDef Schema_getset[] = {
    SCHEMA_VALUE_GETTER(COMMAND_NAME, commandName),
    SCHEMA_VALUE_GETTER(REQUIRES_ANSWER, requiresAnswer),
    SCHEMA_VALUE_GETTER(ERRORS, errors),
    SCHEMA_VALUE_GETTER(FATAL_ERRORS, fatalErrors),
    SCHEMA_VALUE_GETTER(REVERSE_ERRORS, reverseErrors),
    SCHEMA_VALUE_GETTER(COMMAND_TYPE, commandType),
    SCHEMA_VALUE_GETTER(RESPONSE_TYPE, responseType),
    {"arguments", (getter)Schema_get_arguments, NULL,
     "((wire name, Python name, argument, kind), ...) compiled, or None.",
     NULL},
    {"response", (getter)Schema_get_response, NULL,
     "The response list, as arguments.", NULL},
    {"codedInC", (getter)Schema_get_codedInC, NULL,
     "False when every operation is left to stock's code.", NULL},
    {"stockMethods", (getter)Schema_get_stockMethods, NULL,
     "Which of Command's methods the class has as Command's own.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};
#undef SCHEMA_VALUE_GETTER

static PyType_Slot Schema_slots[] = {
    {Py_tp_doc, (void *)"A Command class's compiled schema (private)."},
    {Py_tp_dealloc, Schema_dealloc},
    {Py_tp_traverse, Schema_traverse},
    {Py_tp_clear, Schema_clear},
    {Py_tp_getset, Schema_getset},
    {0, NULL}
};

static PyType_Spec Schema_spec = {
    .name = "ampcore._ampcore.CommandSchema",
    .basicsize = sizeof(SchemaObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Schema_slots,
};

static const char *const commandSchema_params[] = {"cls"};
static const arg_spec commandSchema_spec = {"_commandSchema",
                                            commandSchema_params, 1, 1, 0};

PyDoc_STRVAR(commandSchema_doc,
"_commandSchema($module, cls)\n--\n\n"
"The class's compiled schema, valid as the class is now (private, for\n"
"tests).");

static PyObject *
module_commandSchema(PyObject *module, PyObject *const *args,
                     Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *cls;
    if (bind_args(&commandSchema_spec, args, nargs, kwnames, &cls, NULL,
                  NULL) < 0) {
        return NULL;
    }
    return command_schema(get_state(module), cls);
}

/* ==== module init ======================================================= */

/* Capture the originals (called once, by the exec slot, after
   state_init): 0, or -1 with an exception. */
static int
schema_init(module_state *st)
{
    int k;
    Py_ssize_t i;
    if ((st->schema_cache = PyDict_New()) == NULL) {
        return -1;
    }
    for (k = 0; k < STOCK_CLASS_COUNT; k++) {
        stock_class_state *sc = &st->stock[k];
        if ((sc->names = stock_checked_names(st, (stock_class)k)) == NULL) {
            return -1;
        }
        sc->names_count = PyTuple_GET_SIZE(sc->names);
        sc->originals = PyMem_Calloc((size_t)sc->names_count, sizeof(PyObject *));
        if (sc->originals == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (i = 0; i < sc->names_count; i++) {
            sc->originals[i] = Py_XNewRef(
                compat_type_lookup(sc->cls, PyTuple_GET_ITEM(sc->names, i)));
        }
        sc->tag = 0;
        sc->stock = 0;
    }
#define X(name)                                                         \
    st->command_##name = Py_XNewRef(                                    \
        compat_type_lookup((PyTypeObject *)st->Command, st->str_##name)); \
    if (st->command_##name == NULL) {                                   \
        PyErr_SetString(PyExc_TypeError, "Command has no " #name);      \
        return -1;                                                      \
    }
    if (!PyType_Check(st->Command)) {
        PyErr_SetString(PyExc_TypeError, "amp.Command is not a class");
        return -1;
    }
    AMPCORE_COMMAND_METHODS(X)
#undef X
    if ((st->stock_makeArguments = PyObject_GetAttr(st->command_makeArguments,
                                                    st->str___func__)) == NULL
        || (st->stock_makeResponse = PyObject_GetAttr(st->command_makeResponse,
                                                      st->str___func__)) == NULL
        || (st->stock_parseArguments = PyObject_GetAttr(
                st->command_parseArguments, st->str___func__)) == NULL
        || (st->stock_parseResponse = PyObject_GetAttr(
                st->command_parseResponse, st->str___func__)) == NULL) {
        return -1;
    }
    return 0;
}

#endif /* AMPCORE_SCHEMA_H */
