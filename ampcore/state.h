/* ampcore._ampcore: module state (one compilation unit: included by
   _ampcore.c only).  Everything the C code needs from Twisted is imported
   once per module object and kept here; nothing is global. */
#ifndef AMPCORE_STATE_H
#define AMPCORE_STATE_H

/* Objects taken from Twisted and ampcore's Python side: (field, module, name) */
#define AMPCORE_IMPORTS(X)                                              \
    X(AmpBoxObj, "twisted.protocols.amp", "AmpBox")                     \
    X(QuitBox, "twisted.protocols.amp", "QuitBox")                      \
    X(TooLong, "twisted.protocols.amp", "TooLong")                      \
    X(NoEmptyBoxes, "twisted.protocols.amp", "NoEmptyBoxes")            \
    X(RemoteAmpError, "twisted.protocols.amp", "RemoteAmpError")        \
    X(UnhandledCommand, "twisted.protocols.amp", "UnhandledCommand")    \
    X(ProtocolSwitched, "twisted.protocols.amp", "ProtocolSwitched")    \
    X(PROTOCOL_ERRORS, "twisted.protocols.amp", "PROTOCOL_ERRORS")      \
    X(stock_dispatchCommand_owner, "twisted.protocols.amp", "BoxDispatcher") \
    X(stock_Int16StringReceiver, "twisted.protocols.basic", "Int16StringReceiver") \
    X(stock_StatefulStringProtocol, "twisted.protocols.basic", "StatefulStringProtocol") \
    X(ConnectionLost, "twisted.internet.error", "ConnectionLost")       \
    X(Deferred, "twisted.internet.defer", "Deferred")                   \
    X(fail, "twisted.internet.defer", "fail")                           \
    X(maybeDeferred, "twisted.internet.defer", "maybeDeferred")         \
    X(Failure, "twisted.python.failure", "Failure")                     \
    X(legacy_log, "twisted.python", "log")                              \
    X(KeyTooLongError, "ampcore._errors", "KeyTooLongError")

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
    X(stringReceived) X(recvd) X(fromCoroutine)                         \
    X(value) X(check) X(_counter) X(failAllOutgoing)

/* Wire constants (amp-spec §1.1): field b_NAME holds b"VALUE". */
#define AMPCORE_BYTES(X)                                                \
    X(ASK, "_ask") X(ANSWER, "_answer") X(COMMAND, "_command")          \
    X(ERROR, "_error") X(ERROR_CODE, "_error_code")                     \
    X(ERROR_DESCRIPTION, "_error_description")                          \
    X(UNKNOWN_ERROR_CODE, "UNKNOWN") X(UNKNOWN_DESCRIPTION, "Unknown Error") \
    X(UNHANDLED_ERROR_CODE, "UNHANDLED") X(HEX_FORMAT, "%x")

typedef struct {
    PyTypeObject *AmpBox;          /* AmpBoxObj, as a type */
    PyTypeObject *BoxParserType;
    PyTypeObject *CoreType;
    PyTypeObject *DispatcherCoreType;
    PyTypeObject *ProtocolCoreType;
    PyObject *amp_module;          /* for _log, looked up at call time */
    PyObject *stock_dispatchCommand;
    PyObject *stock_stringReceived;
    PyObject *stock_int16_dataReceived;
    PyObject *stock_serialize;     /* AmpBox.serialize */
    PyObject *stock_sendTo;        /* AmpBox._sendTo */
    PyObject *counter_descr;       /* DispatcherCore's _counter getset */
    PyObject *unpack_pair;         /* k, v = item, as a function */
    PyObject *empty_tuple;
    PyObject *empty_bytes;
    PyObject *str_utf8;
    PyObject *str_replace;
    PyObject *msg_unhandled;       /* "while receiving response to command" */
#define X(field, module, name) PyObject *field;
    AMPCORE_IMPORTS(X)
#undef X
#define X(name) PyObject *str_##name;
    AMPCORE_NAMES(X)
#undef X
#define X(name, value) PyObject *b_##name;
    AMPCORE_BYTES(X)
#undef X
} module_state;

static struct PyModuleDef ampcore_module;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

static inline module_state *
state_from_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &ampcore_module);
    return module ? get_state(module) : NULL;
}

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

static int
state_init(module_state *st)
{
#define X(field, module, name)                                          \
    if ((st->field = import_attr(module, name)) == NULL) {              \
        return -1;                                                      \
    }
    AMPCORE_IMPORTS(X)
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
    if (!PyType_Check(st->AmpBoxObj)
        || !PyType_IsSubtype((PyTypeObject *)st->AmpBoxObj, &PyDict_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "twisted.protocols.amp.AmpBox is not a dict subclass");
        return -1;
    }
    Py_INCREF(st->AmpBoxObj);
    st->AmpBox = (PyTypeObject *)st->AmpBoxObj;
    if ((st->amp_module = PyImport_ImportModule("twisted.protocols.amp")) == NULL
        || (st->stock_dispatchCommand = PyObject_GetAttrString(
                st->stock_dispatchCommand_owner, "dispatchCommand")) == NULL
        || (st->stock_stringReceived = PyObject_GetAttrString(
                st->stock_StatefulStringProtocol, "stringReceived")) == NULL
        || (st->stock_int16_dataReceived = PyObject_GetAttrString(
                st->stock_Int16StringReceiver, "dataReceived")) == NULL
        || (st->stock_serialize = PyObject_GetAttrString(
                st->AmpBoxObj, "serialize")) == NULL
        || (st->stock_sendTo = PyObject_GetAttrString(
                st->AmpBoxObj, "_sendTo")) == NULL
        || (st->empty_tuple = PyTuple_New(0)) == NULL
        || (st->empty_bytes = PyBytes_FromStringAndSize(NULL, 0)) == NULL
        || (st->str_utf8 = PyUnicode_InternFromString("utf-8")) == NULL
        || (st->str_replace = PyUnicode_InternFromString("replace")) == NULL
        || (st->msg_unhandled = PyUnicode_InternFromString(
                "while receiving response to command")) == NULL) {
        return -1;
    }
    return 0;
}

static int
state_traverse(module_state *st, visitproc visit, void *arg)
{
    Py_VISIT(st->AmpBox);
    Py_VISIT(st->BoxParserType);
    Py_VISIT(st->CoreType);
    Py_VISIT(st->DispatcherCoreType);
    Py_VISIT(st->ProtocolCoreType);
    Py_VISIT(st->amp_module);
    Py_VISIT(st->stock_dispatchCommand);
    Py_VISIT(st->stock_stringReceived);
    Py_VISIT(st->stock_int16_dataReceived);
    Py_VISIT(st->stock_serialize);
    Py_VISIT(st->stock_sendTo);
    Py_VISIT(st->counter_descr);
    Py_VISIT(st->unpack_pair);
#define X(field, module, name) Py_VISIT(st->field);
    AMPCORE_IMPORTS(X)
#undef X
    return 0;
}

static void
state_clear(module_state *st)
{
    Py_CLEAR(st->AmpBox);
    Py_CLEAR(st->BoxParserType);
    Py_CLEAR(st->CoreType);
    Py_CLEAR(st->DispatcherCoreType);
    Py_CLEAR(st->ProtocolCoreType);
    Py_CLEAR(st->amp_module);
    Py_CLEAR(st->stock_dispatchCommand);
    Py_CLEAR(st->stock_stringReceived);
    Py_CLEAR(st->stock_int16_dataReceived);
    Py_CLEAR(st->stock_serialize);
    Py_CLEAR(st->stock_sendTo);
    Py_CLEAR(st->counter_descr);
    Py_CLEAR(st->unpack_pair);
    Py_CLEAR(st->empty_tuple);
    Py_CLEAR(st->empty_bytes);
    Py_CLEAR(st->str_utf8);
    Py_CLEAR(st->str_replace);
    Py_CLEAR(st->msg_unhandled);
#define X(field, module, name) Py_CLEAR(st->field);
    AMPCORE_IMPORTS(X)
#undef X
#define X(name) Py_CLEAR(st->str_##name);
    AMPCORE_NAMES(X)
#undef X
#define X(name, value) Py_CLEAR(st->b_##name);
    AMPCORE_BYTES(X)
#undef X
}

#endif /* AMPCORE_STATE_H */
