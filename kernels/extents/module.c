/* kernels._extents: where arrays lie in memory, for many arrays at once.

   byte_extents(arrays) -> [(first byte, last byte + 1), ...], (0, 0) for an empty array,
   read through the buffer protocol (strides and item size only: any dtype NumPy exports,
   bfloat16 included). The reference is kernels._common.byte_extent; this saves its ~1 us
   of Python per array when a call checks thousands of outs (collectives.validation). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static PyObject *extent_of(PyObject *array) {
    Py_buffer view;
    if (PyObject_GetBuffer(array, &view, PyBUF_STRIDES) < 0)
        return NULL;
    Py_ssize_t count = 1;
    for (int d = 0; d < view.ndim; d++)
        count *= view.shape[d];
    uintptr_t low = 0, high = 0; /* addresses are unsigned, as __array_interface__ gives them */
    if (count > 0) {
        low = high = (uintptr_t)view.buf;
        for (int d = 0; d < view.ndim; d++) {
            Py_ssize_t step = view.strides[d] * (view.shape[d] - 1);
            if (step < 0)
                low -= (uintptr_t)(-step);
            else
                high += (uintptr_t)step;
        }
        high += (uintptr_t)view.itemsize;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(KK)", (unsigned long long)low, (unsigned long long)high);
}

static PyObject *byte_extents(PyObject *self, PyObject *arrays) {
    (void)self;
    if (!PySequence_Check(arrays))
        return PyErr_Format(PyExc_TypeError, "byte_extents needs a sequence of arrays, got %s",
                            Py_TYPE(arrays)->tp_name);
    /* A tuple of its own: a list the caller's objects change meanwhile (a finalizer run by
       the allocations below) cannot pull items from under the loop. */
    PyObject *seq = PySequence_Tuple(arrays);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject *result = PyList_New(n);
    for (Py_ssize_t i = 0; result != NULL && i < n; i++) {
        PyObject *extent = extent_of(PyTuple_GET_ITEM(seq, i));
        if (extent == NULL)
            Py_CLEAR(result);
        else
            PyList_SET_ITEM(result, i, extent);
    }
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"byte_extents", byte_extents, METH_O,
     "byte_extents(arrays) -> [(first byte, last byte + 1), ...]; (0, 0) for an empty array"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "kernels._extents",
                                    "Where arrays lie in memory (see byte_extents).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__extents(void) { return PyModule_Create(&module); }
