/*
 * ampcore._ampcore: the module state.  Everything the C code needs from
 * Twisted, the interned names it calls and the heap types it creates are
 * held here, once per module object; nothing is global.
 */
#ifndef AMPCORE_STATE_H
#define AMPCORE_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

/* Objects taken from Twisted and ampcore's Python side: (field, module, name) */
#define AMPCORE_IMPORTS(X)                                              \
    X(QuitBox, "twisted.protocols.amp", "QuitBox")                      \
    X(TooLong, "twisted.protocols.amp", "TooLong")                      \
    X(NoEmptyBoxes, "twisted.protocols.amp", "NoEmptyBoxes")            \
    X(RemoteAmpError, "twisted.protocols.amp", "RemoteAmpError")        \
    X(UnhandledCommand, "twisted.protocols.amp", "UnhandledCommand")    \
    X(ProtocolSwitched, "twisted.protocols.amp", "ProtocolSwitched")    \
    X(PROTOCOL_ERRORS, "twisted.protocols.amp", "PROTOCOL_ERRORS")      \
    X(ConnectionLost, "twisted.internet.error", "ConnectionLost")       \
    X(Deferred, "twisted.internet.defer", "Deferred")                   \
    X(fail, "twisted.internet.defer", "fail")                           \
    X(Failure, "twisted.python.failure", "Failure")                     \
    X(legacy_log, "twisted.python", "log")                              \
    X(KeyTooLongError, "ampcore._errors", "KeyTooLongError")            \
    X(BoxTooLong, "ampcore._errors", "BoxTooLong")                      \
    X(Command, "twisted.protocols.amp", "Command")                      \
    X(InvalidSignature, "twisted.protocols.amp", "InvalidSignature")    \
    X(wire_name_to_identifier, "twisted.protocols.amp",                 \
      "_wireNameToPythonIdentifier")                                    \
    X(objects_to_strings, "twisted.protocols.amp", "_objectsToStrings") \
    X(strings_to_objects, "twisted.protocols.amp", "_stringsToObjects") \
    X(parseString, "twisted.protocols.amp", "parseString")              \
    X(struct_pack, "struct", "pack")                                    \
    X(BadLocalReturn, "twisted.protocols.amp", "BadLocalReturn")        \
    X(CommandLocator, "twisted.protocols.amp", "CommandLocator")        \
    X(SimpleStringLocator, "twisted.protocols.amp", "SimpleStringLocator") \
    X(UnknownRemoteError, "twisted.protocols.amp", "UnknownRemoteError") \
    X(nativeString, "twisted.python.compat", "nativeString")

/* Stock implementations a C shortcut may stand in for, compared by
   identity before each shortcut: (field, module, class, attribute) */
#define AMPCORE_STOCK(X)                                                \
    X(stock_dispatchCommand, "twisted.protocols.amp", "BoxDispatcher",  \
      "dispatchCommand")                                                \
    X(stock_serialize, "twisted.protocols.amp", "AmpBox", "serialize")  \
    X(stock_sendTo, "twisted.protocols.amp", "AmpBox", "_sendTo")       \
    X(stock_stringReceived, "twisted.protocols.basic",                  \
      "StatefulStringProtocol", "stringReceived")                       \
    X(stock_int16_dataReceived, "twisted.protocols.basic",              \
      "Int16StringReceiver", "dataReceived")                            \
    X(stock_locateResponder, "twisted.protocols.amp", "AMP",            \
      "locateResponder")                                                \
    X(stock_command_locateResponder, "twisted.protocols.amp",           \
      "CommandLocator", "locateResponder")                              \
    X(stock_string_locateResponder, "twisted.protocols.amp",            \
      "SimpleStringLocator", "locateResponder")                         \
    X(stock_wrapWithSerialization, "twisted.protocols.amp",             \
      "CommandLocator", "_wrapWithSerialization")                       \
    X(stock_callRemote, "twisted.protocols.amp", "BoxDispatcher",       \
      "callRemote")                                                     \
    X(dict_contains, "builtins", "dict", "__contains__")                \
    X(dict_getitem, "builtins", "dict", "__getitem__")

/* Interned attribute and method names: field str_NAME holds "NAME". */
#define AMPCORE_NAMES(X)                                                \
    X(items) X(join) X(lengthLimitExceeded) X(ampBoxReceived)           \
    X(boxReceiver) X(boxSender) X(_outstandingRequests)                 \
    X(_failAllReason) X(_nextTag) X(_sendBoxCommand) X(_sendTo)         \
    X(sendBox) X(serialize) X(unhandledError) X(addErrback)             \
    X(addCallback) X(addCallbacks) X(callback) X(errback) X(pop)        \
    X(_answerReceived) X(_errorReceived) X(_commandReceived)            \
    X(dispatchCommand) X(locator) X(locateResponder) X(_safeEmit)       \
    X(transport) X(write) X(_locked) X(_startingTLSBuffer) X(append)    \
    X(innerProtocol) X(dataReceived) X(_justStartedTLS) X(paused)       \
    X(errorCode) X(description) X(fatal) X(failure) X(err) X(_log)      \
    X(stringReceived) X(fromCoroutine)                                  \
    X(value) X(check) X(_counter) X(failAllOutgoing)                    \
    X(commandName) X(arguments) X(response) X(requiresAnswer) X(errors) \
    X(fatalErrors) X(reverseErrors) X(commandType) X(responseType)      \
    X(makeArguments) X(makeResponse) X(parseArguments) X(parseResponse) \
    X(__init__) X(__new__) X(_doCommand) X(__func__)                    \
    X(toBox) X(fromBox) X(retrieve) X(toStringProto) X(fromStringProto) \
    X(toString) X(fromString) X(optional) X(elementType) X(subargs)     \
    X(copy) X(get) X(update) X(keys) X(__iter__) X(__setitem__)         \
    X(__getitem__) X(__delitem__) X(MAX_LENGTH) X(prefixLength)         \
    X(structFormat) X(_commandDispatch) X(_wrapWithSerialization)       \
    X(allErrors) X(trap) X(f) X(result) X(baseDispatchPrefix) X(upper)    \
    X(maxBoxSize) X(loseConnection) X(__contains__) X(__missing__)  \
    X(callbackKeywords)

/* Slots of the table of known keys (module_state.known_keys): a power of
   two. */
#define KNOWN_KEYS 128

/* Where a key of n >= 1 bytes goes in a direct-mapped table of keys
   (module_state.known_keys, box_reader.keys), before masking. */
static inline size_t
key_slot_hash(const unsigned char *p, size_t n)
{
    return n * 31u + p[0] * 7u + p[n - 1];
}

/* AMP's reserved keys and codes, as Twisted spells them
   (twisted.protocols.amp's ASK, ANSWER, COMMAND, ERROR, ERROR_CODE,
   ERROR_DESCRIPTION, UNKNOWN_ERROR_CODE, UNHANDLED_ERROR_CODE):
   field b_NAME holds b"VALUE". */
#define AMPCORE_BYTES(X)                                                \
    X(ASK, "_ask") X(ANSWER, "_answer") X(COMMAND, "_command")          \
    X(ERROR, "_error") X(ERROR_CODE, "_error_code")                     \
    X(ERROR_DESCRIPTION, "_error_description")                          \
    X(UNKNOWN_ERROR_CODE, "UNKNOWN") X(UNKNOWN_DESCRIPTION, "Unknown Error") \
    X(UNHANDLED_ERROR_CODE, "UNHANDLED") X(HEX_FORMAT, "%x")             \
    X(TRUE, "True") X(FALSE, "False") X(ONE, "1") X(ZERO, "0")

/* Twisted classes the Command coder (schema.h, arguments.h) stands in
   for.  Before each shortcut, the class's attributes are checked against
   what they were at import: (index, module, class).  The first seven are
   the argument kinds coded in C. */
#define AMPCORE_STOCK_CLASSES(X)                                        \
    X(INTEGER, "twisted.protocols.amp", "Integer")                      \
    X(STRING, "twisted.protocols.amp", "String")                        \
    X(UNICODE, "twisted.protocols.amp", "Unicode")                      \
    X(BOOLEAN, "twisted.protocols.amp", "Boolean")                      \
    X(FLOAT, "twisted.protocols.amp", "Float")                          \
    X(LISTOF, "twisted.protocols.amp", "ListOf")                        \
    X(AMPLIST, "twisted.protocols.amp", "AmpList")                      \
    X(AMPBOX, "twisted.protocols.amp", "AmpBox")                        \
    X(INT16, "twisted.protocols.basic", "Int16StringReceiver")

typedef enum {
#define X(index, module, name) STOCK_##index,
    AMPCORE_STOCK_CLASSES(X)
#undef X
    STOCK_CLASS_COUNT
} stock_class;

/* One stock class and the outcome of its last check (schema.h). */
typedef struct {
    PyTypeObject *cls;
    PyObject *names;             /* tuple: the attribute names checked */
    Py_ssize_t names_count;
    PyObject **originals;        /* what each resolved to at import (NULL:
                                    nothing), owned, names_count of them */
    unsigned int tag;            /* the class's version tag then, 0: none */
    int stock;                   /* whether everything was as imported */
} stock_class_state;

/* Command's methods as Command itself has them (raw class attributes),
   compared by identity with what a Command subclass resolves:
   field command_NAME. */
#define AMPCORE_COMMAND_METHODS(X)                                      \
    X(makeArguments) X(makeResponse) X(parseArguments) X(parseResponse) \
    X(__init__) X(__new__) X(_doCommand)

typedef struct {
    /* The heap types, created by the module's exec slot. */
    PyTypeObject *BoxParserType;
    PyTypeObject *CoreType;
    PyTypeObject *DispatcherCoreType;
    PyTypeObject *ProtocolCoreType;
    PyTypeObject *SchemaType;
    PyObject *counter_descr;       /* DispatcherCore's _counter getset */
    PyObject *core_sendBoxCommand; /* DispatcherCore's _sendBoxCommand */
    /* From Twisted. */
    PyTypeObject *AmpBox;          /* twisted.protocols.amp.AmpBox */
    PyObject *amp_module;          /* for amp._log, looked up at call time */
    /* Helpers. */
    PyObject *unpack_pair;         /* `k, v = item` as a function */
    PyObject *empty_tuple;
    PyObject *empty_bytes;
    PyObject *msg_unhandled;       /* "while receiving response to command" */
    PyObject *kw_callbackKeywords; /* ("callbackKeywords",), for calls */
    /* Keys the module looks boxes up by: AMP's reserved keys and the wire
       names of compiled Command schemas (state_know_key).  A received key
       with the same bytes is made this very object (reader.h), so those
       lookups match by identity, without comparing bytes. */
    PyObject *known_keys[KNOWN_KEYS];
    unsigned char known_key_fixed[KNOWN_KEYS]; /* a reserved key: kept */
    /* Command coding (schema.h, arguments.h). */
    PyObject *schema_cache;        /* {id(command class): CommandSchema} */
    stock_class_state stock[STOCK_CLASS_COUNT];
#define X(name) PyObject *command_##name;
    AMPCORE_COMMAND_METHODS(X)
#undef X
    /* The functions behind Command's four coding classmethods, called
       for what the C code leaves to stock. */
    PyObject *stock_makeArguments, *stock_makeResponse;
    PyObject *stock_parseArguments, *stock_parseResponse;
#define X(field, module, name) PyObject *field;
    AMPCORE_IMPORTS(X)
#undef X
#define X(field, module, cls, attr) PyObject *field;
    AMPCORE_STOCK(X)
#undef X
#define X(name) PyObject *str_##name;
    AMPCORE_NAMES(X)
#undef X
#define X(name, value) PyObject *b_##name;
    AMPCORE_BYTES(X)
#undef X
} module_state;

/* Defined with the module, in _ampcore.c. */
static struct PyModuleDef ampcore_module;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* The state of the module that defined `type` or one of its bases. */
static inline module_state *
state_from_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &ampcore_module);
    return module ? get_state(module) : NULL;
}

/* The state of the module that defined a METH_METHOD method's class. */
static inline module_state *
state_from_class(PyTypeObject *defining_class)
{
    return (module_state *)PyType_GetModuleState(defining_class);
}

/* getattr(import_module(module_name), attr), or NULL with an exception. */
static PyObject *
import_attr(const char *module_name, const char *attr)
{
    PyObject *module = PyImport_ImportModule(module_name);
    PyObject *value;
    if (module == NULL) {
        return NULL;
    }
    value = PyObject_GetAttrString(module, attr);
    Py_DECREF(module);
    return value;
}

/* Remember `key` (exact bytes) as a known key, unless its length is not
   that of an AMP key or its slot holds a reserved key; `fixed`: it is one,
   never replaced. */
static void
state_know_key(module_state *st, PyObject *key, int fixed)
{
    Py_ssize_t n = PyBytes_GET_SIZE(key);
    size_t slot;
    if (n < 1 || n > 255) {
        return;
    }
    slot = key_slot_hash((const unsigned char *)PyBytes_AS_STRING(key),
                         (size_t)n) & (KNOWN_KEYS - 1);
    if (st->known_keys[slot] == key || st->known_key_fixed[slot]) {
        return;
    }
    Py_XSETREF(st->known_keys[slot], Py_NewRef(key));
    st->known_key_fixed[slot] = (unsigned char)fixed;
}

/* The known key with bytes p[:n] (n >= 1), or NULL: borrowed. */
static inline PyObject *
state_known_key(module_state *st, const unsigned char *p, size_t n)
{
    PyObject *key = st->known_keys[key_slot_hash(p, n) & (KNOWN_KEYS - 1)];
    if (key != NULL && (size_t)PyBytes_GET_SIZE(key) == n
        && memcmp(PyBytes_AS_STRING(key), p, n) == 0) {
        return key;
    }
    return NULL;
}

/* Make *slot, our b"_ask" (say), Twisted's own amp.ASK when that is the
   same bytes, so that Twisted's Python code finds received keys by
   identity too; then know it as a reserved key.  Only a speed-up: without
   such a constant, ours is kept.  0, or -1 with an exception set. */
static int
adopt_reserved_key(module_state *st, PyObject **slot, const char *name)
{
    PyObject *theirs = import_attr("twisted.protocols.amp", name);
    if (theirs == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
    }
    else if (PyBytes_CheckExact(theirs)
             && PyBytes_GET_SIZE(theirs) == PyBytes_GET_SIZE(*slot)
             && memcmp(PyBytes_AS_STRING(theirs), PyBytes_AS_STRING(*slot),
                       (size_t)PyBytes_GET_SIZE(theirs)) == 0) {
        Py_SETREF(*slot, theirs);
    }
    else {
        Py_DECREF(theirs);
    }
    state_know_key(st, *slot, 1);
    return 0;
}

/* Fill everything but the types (see the module's exec slot): 0, or -1
   with an exception set; state_clear releases what was taken either way. */
static int
state_init(module_state *st)
{
    PyObject *cls;
#define X(field, module, name)                                          \
    if ((st->field = import_attr(module, name)) == NULL) {              \
        return -1;                                                      \
    }
    AMPCORE_IMPORTS(X)
#undef X
#define X(field, module, clsname, attr)                                 \
    if ((cls = import_attr(module, clsname)) == NULL) {                 \
        return -1;                                                      \
    }                                                                   \
    st->field = PyObject_GetAttrString(cls, attr);                      \
    Py_DECREF(cls);                                                     \
    if (st->field == NULL) {                                            \
        return -1;                                                      \
    }
    AMPCORE_STOCK(X)
#undef X
#define X(name)                                                         \
    if ((st->str_##name = PyUnicode_InternFromString(#name)) == NULL) { \
        return -1;                                                      \
    }
    AMPCORE_NAMES(X)
#undef X
#define X(name, value)                                                  \
    if ((st->b_##name = PyBytes_FromString(value)) == NULL) {           \
        return -1;                                                      \
    }
    AMPCORE_BYTES(X)
#undef X
    if (adopt_reserved_key(st, &st->b_ASK, "ASK") < 0
        || adopt_reserved_key(st, &st->b_ANSWER, "ANSWER") < 0
        || adopt_reserved_key(st, &st->b_COMMAND, "COMMAND") < 0
        || adopt_reserved_key(st, &st->b_ERROR, "ERROR") < 0
        || adopt_reserved_key(st, &st->b_ERROR_CODE, "ERROR_CODE") < 0
        || adopt_reserved_key(st, &st->b_ERROR_DESCRIPTION,
                              "ERROR_DESCRIPTION") < 0) {
        return -1;
    }
    if ((cls = import_attr("twisted.protocols.amp", "AmpBox")) == NULL) {
        return -1;
    }
    if (!PyType_Check(cls)
        || !PyType_IsSubtype((PyTypeObject *)cls, &PyDict_Type)) {
        Py_DECREF(cls);
        PyErr_SetString(PyExc_TypeError,
                        "twisted.protocols.amp.AmpBox is not a dict subclass");
        return -1;
    }
    st->AmpBox = (PyTypeObject *)cls;
#define X(index, module, name)                                          \
    if ((cls = import_attr(module, name)) == NULL) {                    \
        return -1;                                                      \
    }                                                                   \
    st->stock[STOCK_##index].cls = (PyTypeObject *)cls;                 \
    if (!PyType_Check(cls)) {                                           \
        PyErr_SetString(PyExc_TypeError, module "." name " is not a class"); \
        return -1;                                                      \
    }
    AMPCORE_STOCK_CLASSES(X)
#undef X
    if ((st->amp_module = PyImport_ImportModule("twisted.protocols.amp")) == NULL
        || (st->empty_tuple = PyTuple_New(0)) == NULL
        || (st->empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL
        || (st->msg_unhandled = PyUnicode_InternFromString(
                "while receiving response to command")) == NULL
        || (st->kw_callbackKeywords = PyTuple_Pack(1, st->str_callbackKeywords)) == NULL) {
        return -1;
    }
    return 0;
}

/* Release what one stock_class_state holds. */
static void
stock_class_clear(stock_class_state *sc)
{
    Py_ssize_t i;
    if (sc->originals != NULL) {
        for (i = 0; i < sc->names_count; i++) {
            Py_CLEAR(sc->originals[i]);
        }
        PyMem_Free(sc->originals);
        sc->originals = NULL;
    }
    Py_CLEAR(sc->names);
    Py_CLEAR(sc->cls);
    sc->names_count = 0;
    sc->tag = 0;
    sc->stock = 0;
}

static int
state_traverse(module_state *st, visitproc visit, void *arg)
{
    Py_ssize_t i, j;
    Py_VISIT(st->BoxParserType);
    Py_VISIT(st->CoreType);
    Py_VISIT(st->DispatcherCoreType);
    Py_VISIT(st->ProtocolCoreType);
    Py_VISIT(st->counter_descr);
    Py_VISIT(st->core_sendBoxCommand);
    Py_VISIT(st->AmpBox);
    Py_VISIT(st->amp_module);
    Py_VISIT(st->unpack_pair);
#define X(field, module, name) Py_VISIT(st->field);
    AMPCORE_IMPORTS(X)
#undef X
#define X(field, module, cls, attr) Py_VISIT(st->field);
    AMPCORE_STOCK(X)
#undef X
    Py_VISIT(st->SchemaType);
    Py_VISIT(st->schema_cache);
    for (i = 0; i < STOCK_CLASS_COUNT; i++) {
        Py_VISIT(st->stock[i].cls);
        for (j = 0; st->stock[i].originals != NULL
                    && j < st->stock[i].names_count; j++) {
            Py_VISIT(st->stock[i].originals[j]);
        }
    }
#define X(name) Py_VISIT(st->command_##name);
    AMPCORE_COMMAND_METHODS(X)
#undef X
    Py_VISIT(st->stock_makeArguments);
    Py_VISIT(st->stock_makeResponse);
    Py_VISIT(st->stock_parseArguments);
    Py_VISIT(st->stock_parseResponse);
    return 0;
}

static void
state_clear(module_state *st)
{
    int i;
    if (st->schema_cache != NULL) {
        /* Emptied first: its schemas' weak references call back into it. */
        PyDict_Clear(st->schema_cache);
        Py_CLEAR(st->schema_cache);
    }
    Py_CLEAR(st->SchemaType);
    for (i = 0; i < STOCK_CLASS_COUNT; i++) {
        stock_class_clear(&st->stock[i]);
    }
#define X(name) Py_CLEAR(st->command_##name);
    AMPCORE_COMMAND_METHODS(X)
#undef X
    Py_CLEAR(st->stock_makeArguments);
    Py_CLEAR(st->stock_makeResponse);
    Py_CLEAR(st->stock_parseArguments);
    Py_CLEAR(st->stock_parseResponse);
    Py_CLEAR(st->BoxParserType);
    Py_CLEAR(st->CoreType);
    Py_CLEAR(st->DispatcherCoreType);
    Py_CLEAR(st->ProtocolCoreType);
    Py_CLEAR(st->counter_descr);
    Py_CLEAR(st->core_sendBoxCommand);
    Py_CLEAR(st->AmpBox);
    Py_CLEAR(st->amp_module);
    Py_CLEAR(st->unpack_pair);
    Py_CLEAR(st->empty_tuple);
    Py_CLEAR(st->empty_bytes);
    Py_CLEAR(st->msg_unhandled);
    Py_CLEAR(st->kw_callbackKeywords);
    for (i = 0; i < KNOWN_KEYS; i++) {
        Py_CLEAR(st->known_keys[i]);
        st->known_key_fixed[i] = 0;
    }
#define X(field, module, name) Py_CLEAR(st->field);
    AMPCORE_IMPORTS(X)
#undef X
#define X(field, module, cls, attr) Py_CLEAR(st->field);
    AMPCORE_STOCK(X)
#undef X
#define X(name) Py_CLEAR(st->str_##name);
    AMPCORE_NAMES(X)
#undef X
#define X(name, value) Py_CLEAR(st->b_##name);
    AMPCORE_BYTES(X)
#undef X
}

#endif /* AMPCORE_STATE_H */
