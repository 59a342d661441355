/* kernels._gather: many arrays copied into, or out of, one flat buffer in one call.

   gather(arrays, flat) -> elements written: each array's bytes into consecutive places of
   flat (kernels.pack); scatter(flat, outs) -> elements read: the inverse (kernels.unpack).
   Both are byte copies, so they take only what a byte copy gets right: arrays of exactly
   NumPy's ndarray type (flat's), of flat's dtype, C-contiguous, writable where written,
   flat 1-D and long enough, no array meeting the part of flat that is copied, and no
   dtype that holds references (object), has fields (NumPy leaves their padding alone) or
   has no bytes (V0: the count would be lost).
   Anything else returns NotImplemented before a byte moves, and the caller runs the
   NumPy twin (kernels._numpy.pack / unpack), which casts, follows strides and raises the
   errors. This saves NumPy's ~1-2 us per array when a fused call packs thousands of
   gradients. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RELEASE_GIL_FROM (64 << 10) /* bytes: below this the copies take less than the swap */

static PyObject *dtype_name, *hasobject_name, *names_name; /* interned at import */

static int meet(const Py_buffer *a, const char *lo, Py_ssize_t len) {
    const char *start = (const char *)a->buf;
    return a->len > 0 && len > 0 && start < lo + len && lo < start + a->len;
}

/* Whether an element is its bytes, all of them: not for references (object dtypes), and
   not for structured dtypes, whose padding NumPy's copies leave alone (they copy field by
   field). Any error on the way counts as no. */
static int plain_bytes(PyObject *dtype) {
    PyObject *references = PyObject_GetAttr(dtype, hasobject_name);
    PyObject *names = references == NULL ? NULL : PyObject_GetAttr(dtype, names_name);
    int plain = names == Py_None && PyObject_IsTrue(references) == 0;
    Py_XDECREF(references);
    Py_XDECREF(names);
    PyErr_Clear();
    return plain;
}

/* Whether flat takes writes, asked only when bytes will be written, as the twin writes:
   NumPy warns on the request where an array warns on write (np.broadcast_arrays). */
static int writable(PyObject *flat) {
    Py_buffer view;
    if (PyObject_GetBuffer(flat, &view, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        return 0;
    }
    PyBuffer_Release(&view);
    return 1;
}

/* Every item's buffer (C-contiguous; writable when `for_writing`) in views[0..n), or 0 with no
   buffer held where an item is not of flat's type and dtype or exports no such buffer. */
static int take_views(PyObject *items, PyObject *flat, PyObject *dtype, int for_writing,
                      Py_buffer *views, Py_ssize_t n) {
    int flags = PyBUF_C_CONTIGUOUS | (for_writing ? PyBUF_WRITABLE : 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i);
        int same = Py_TYPE(item) == Py_TYPE(flat);
        if (same) {
            PyObject *its = PyObject_GetAttr(item, dtype_name);
            same = its != NULL && (its == dtype || PyObject_RichCompareBool(its, dtype, Py_EQ) == 1);
            Py_XDECREF(its);
        }
        if (!same || PyObject_GetBuffer(item, &views[i], flags) < 0) {
            PyErr_Clear();
            while (i-- > 0)
                PyBuffer_Release(&views[i]);
            return 0;
        }
    }
    return 1;
}

/* gather (to_flat) or scatter: see the module comment. */
static PyObject *copy_many(PyObject *items_arg, PyObject *flat, int to_flat) {
    if (!PySequence_Check(items_arg)) /* (an iterator: the twin reads it) */
        return Py_NewRef(Py_NotImplemented);
    /* A tuple of its own: a list changed meanwhile (a finalizer run by the calls below)
       cannot pull items from under the loop. */
    PyObject *items = PySequence_Tuple(items_arg);
    if (items == NULL)
        return NULL;
    PyObject *result = NULL, *dtype = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(items), total = 0;
    Py_buffer flat_view, *views = PyMem_New(Py_buffer, n > 0 ? n : 1);
    int have_flat = 0, have_views = 0;
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    dtype = PyObject_GetAttr(flat, dtype_name);
    if (dtype == NULL)
        goto done;
    if (!plain_bytes(dtype)) {
        result = Py_NewRef(Py_NotImplemented);
        goto done;
    }
    have_flat = PyObject_GetBuffer(flat, &flat_view, PyBUF_C_CONTIGUOUS) == 0;
    have_views = have_flat && take_views(items, flat, dtype, !to_flat, views, n);
    if (!have_views) {
        PyErr_Clear();
        result = Py_NewRef(Py_NotImplemented);
        goto done;
    }
    int fits = flat_view.ndim == 1 && flat_view.itemsize > 0;
    for (Py_ssize_t i = 0; fits && i < n; i++) {
        fits = views[i].len <= flat_view.len - total; /* (no sum that could wrap) */
        total += fits ? views[i].len : 0;
    }
    for (Py_ssize_t i = 0; fits && i < n; i++)
        fits = !meet(&views[i], (const char *)flat_view.buf, total);
    if (!fits || (to_flat && total > 0 && !writable(flat))) {
        result = Py_NewRef(Py_NotImplemented);
        goto done;
    }
    /* The buffers held keep every array's memory alive and its size fixed meanwhile. */
    PyThreadState *saved = total >= RELEASE_GIL_FROM ? PyEval_SaveThread() : NULL;
    char *place = (char *)flat_view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (to_flat)
            memcpy(place, views[i].buf, (size_t)views[i].len);
        else
            memcpy(views[i].buf, place, (size_t)views[i].len);
        place += views[i].len;
    }
    if (saved != NULL)
        PyEval_RestoreThread(saved);
    result = PyLong_FromSsize_t(flat_view.itemsize > 0 ? total / flat_view.itemsize : 0);
done:
    if (have_views)
        for (Py_ssize_t i = 0; i < n; i++)
            PyBuffer_Release(&views[i]);
    if (have_flat)
        PyBuffer_Release(&flat_view);
    PyMem_Free(views);
    Py_XDECREF(dtype);
    Py_DECREF(items);
    return result;
}

static PyObject *gather(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "gather(arrays, flat) takes 2 arguments, got %zd",
                            nargs);
    return copy_many(args[0], args[1], 1);
}

static PyObject *scatter(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "scatter(flat, outs) takes 2 arguments, got %zd",
                            nargs);
    return copy_many(args[1], args[0], 0);
}

static PyMethodDef methods[] = {
    {"gather", (PyCFunction)(void (*)(void))gather, METH_FASTCALL,
     "gather(arrays, flat) -> elements written, or NotImplemented (see the module)"},
    {"scatter", (PyCFunction)(void (*)(void))scatter, METH_FASTCALL,
     "scatter(flat, outs) -> elements read, or NotImplemented (see the module)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "kernels._gather",
    "Many arrays copied into or out of one flat buffer (see gather, scatter).", -1, methods};

PyMODINIT_FUNC PyInit__gather(void) {
    dtype_name = PyUnicode_InternFromString("dtype");
    hasobject_name = PyUnicode_InternFromString("hasobject");
    names_name = PyUnicode_InternFromString("names");
    return dtype_name == NULL || hasobject_name == NULL || names_name == NULL
               ? NULL
               : PyModule_Create(&module);
}
