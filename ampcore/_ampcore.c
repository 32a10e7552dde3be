/*
 * ampcore._ampcore: the CPython binding over the pure-C wire codec
 * (codec.h, codec.c, which know nothing of Python).
 *
 * One compilation unit.  Each header has one job and compiles alone:
 *
 *   compat.h       private and version-dependent CPython API
 *   state.h        the module state: imports, interned names, types
 *   calls.h        calling out to Python, binding the arguments of calls in
 *   serialize.h    AmpBox.serialize in C, and ampcore.serialize()
 *   reader.h       the box reader: incremental box assembly
 *   boxparser.h    the BoxParser type, and ampcore.parse()
 *   schema.h       Command schemas: compiled per class, cached, revalidated
 *   arguments.h    Command argument coding: make/parse Arguments/Response
 *   core.h         the instance layout of the dispatcher and the protocol
 *   failure.h      Twisted Failures from raised exceptions; unhandledError
 *   responder.h    the responder side: call the responder, answer or fail
 *   client.h       the client side: send commands, callRemote, answers
 *   dispatcher.h   DispatcherCore: BoxDispatcher's methods
 *   protocol.h     ProtocolCore: BinaryBoxProtocol's dataReceived, sendBox
 *
 * This file is the module itself: multi-phase init (PEP 489), the method
 * table, and the exec slot that creates every heap type.  No global
 * mutable state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "compat.h"
#include "state.h"
#include "calls.h"
#include "serialize.h"
#include "reader.h"
#include "boxparser.h"
#include "schema.h"
#include "arguments.h"
#include "core.h"
#include "failure.h"
#include "responder.h"
#include "client.h"
#include "dispatcher.h"
#include "protocol.h"
#include "chunked.h"

static PyMethodDef ampcore_methods[] = {
    {"serialize", module_serialize, METH_O, serialize_doc},
    {"parse", (PyCFunction)(void (*)(void))module_parse,
     METH_FASTCALL | METH_KEYWORDS, parse_doc},
#define FASTCALL(name, cname, doc)                                      \
    {name, (PyCFunction)(void (*)(void))cname, METH_FASTCALL | METH_KEYWORDS, doc}
    FASTCALL("_commandSchema", module_commandSchema, commandSchema_doc),
    FASTCALL("_makeArguments", module_makeArguments, makeArguments_doc),
    FASTCALL("_makeResponse", module_makeResponse, makeResponse_doc),
    FASTCALL("_parseArguments", module_parseArguments, parseArguments_doc),
    FASTCALL("_parseResponse", module_parseResponse, parseResponse_doc),
    FASTCALL("_makeArgumentsFromKeywords", module_makeArgumentsFromKeywords,
             makeArgumentsFromKeywords_doc),
#undef FASTCALL
    {"_joinChunks", (PyCFunction)(void (*)(void))module_joinChunks,
     METH_FASTCALL, joinChunks_doc},
    {NULL, NULL, 0, NULL}
};

/* Create a heap type of this module, keep it in the state and add it to
   the module: 0, or -1 with an exception set. */
static int
add_type(PyObject *module, PyType_Spec *spec, PyTypeObject *base,
         PyTypeObject **slot)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec,
                                                     (PyObject *)base);
    if (*slot == NULL) {
        return -1;
    }
    return PyModule_AddType(module, *slot);
}

static int
ampcore_exec(PyObject *module)
{
    module_state *st = get_state(module);
    if (state_init(st) < 0 || serialize_init(st) < 0 || schema_init(st) < 0) {
        return -1;
    }
    if (add_type(module, &BoxParser_spec, NULL, &st->BoxParserType) < 0
        || add_type(module, &Core_spec, NULL, &st->CoreType) < 0
        || add_type(module, &Dispatcher_spec, st->CoreType,
                    &st->DispatcherCoreType) < 0
        || add_type(module, &Protocol_spec, st->CoreType,
                    &st->ProtocolCoreType) < 0
        || add_type(module, &Schema_spec, NULL, &st->SchemaType) < 0) {
        return -1;
    }
    /* _nextTag counts in C while _counter is still this descriptor. */
    st->counter_descr = PyDict_GetItemWithError(
        st->DispatcherCoreType->tp_dict, st->str__counter);
    if (st->counter_descr == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError, "DispatcherCore has no _counter");
        }
        return -1;
    }
    Py_INCREF(st->counter_descr);
    /* callRemote codes in C while _sendBoxCommand is still this one. */
    st->core_sendBoxCommand = PyDict_GetItemWithError(
        st->DispatcherCoreType->tp_dict, st->str__sendBoxCommand);
    if (st->core_sendBoxCommand == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError,
                            "DispatcherCore has no _sendBoxCommand");
        }
        return -1;
    }
    Py_INCREF(st->core_sendBoxCommand);
    return 0;
}

static int
ampcore_traverse(PyObject *module, visitproc visit, void *arg)
{
    return state_traverse(get_state(module), visit, arg);
}

static int
ampcore_clear(PyObject *module)
{
    state_clear(get_state(module));
    return 0;
}

static void
ampcore_free(void *module)
{
    ampcore_clear((PyObject *)module);
}

static PyModuleDef_Slot ampcore_slots[] = {
    {Py_mod_exec, ampcore_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL}
};

static struct PyModuleDef ampcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "ampcore._ampcore",
    .m_doc = "C core of ampcore: AMP box parsing and serialization, the "
             "cores of its BoxDispatcher and BinaryBoxProtocol, and Command "
             "argument coding.",
    .m_size = sizeof(module_state),
    .m_methods = ampcore_methods,
    .m_slots = ampcore_slots,
    .m_traverse = ampcore_traverse,
    .m_clear = ampcore_clear,
    .m_free = ampcore_free,
};

PyMODINIT_FUNC
PyInit__ampcore(void)
{
    return PyModuleDef_Init(&ampcore_module);
}
