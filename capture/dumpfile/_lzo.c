/*
 * LZO1X-1 for kdump pages, a whole batch of pages per call.
 *
 * The kdump-compressed format compresses each page on its own. Called once
 * per page from Python, the call itself (argument parsing, a bytes object for
 * the page and one for its output, a fresh 128 KiB work area) costs as much
 * as compressing a typical kernel page. Here one call takes a buffer of
 * consecutive pages and returns their stored forms back to back, the way
 * zstandard's multi_compress_to_buffer does for zstd.
 *
 * The stream is the one makedumpfile writes (lzo1x_1_compress), so dumps stay
 * byte-identical; a page whose stream would not be smaller is stored as it
 * is, as every kdump writer does (its descriptor then has no codec flag).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <lzo/lzo1x.h>

/* The worst-case LZO1X output for an input of len bytes (lzo's own bound). */
static Py_ssize_t
worst_case(Py_ssize_t len)
{
    return len + len / 16 + 64 + 3;
}

/* Compress count pages of src into out; sizes[i] is the stored size of page i.
 * Runs without the GIL: it touches only memory this call owns or holds. */
static int
compress_into(const unsigned char *src, Py_ssize_t count, Py_ssize_t page_size,
              unsigned char *out, Py_ssize_t *stored, unsigned int *sizes, void *work)
{
    unsigned char *at = out;
    for (Py_ssize_t page = 0; page < count; page++) {
        const unsigned char *in = src + page * page_size;
        lzo_uint size = 0;
        if (lzo1x_1_compress(in, (lzo_uint)page_size, at, &size, work) != LZO_E_OK)
            return -1;
        if ((Py_ssize_t)size >= page_size) {
            memcpy(at, in, (size_t)page_size);
            size = (lzo_uint)page_size;
        }
        sizes[page] = (unsigned int)size;
        at += size;
    }
    *stored = at - out;
    return 0;
}

static PyObject *
size_list(const unsigned int *sizes, Py_ssize_t count)
{
    PyObject *list = PyList_New(count);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t page = 0; page < count; page++) {
        PyObject *size = PyLong_FromUnsignedLong(sizes[page]);
        if (size == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, page, size);
    }
    return list;
}

PyDoc_STRVAR(compress_pages_doc,
"compress_pages(pages, page_size, /) -> (data, sizes)\n\n"
"Compress each page_size bytes of pages on its own with LZO1X-1. data holds\n"
"the stored pages back to back: the LZO stream, or the page itself when the\n"
"stream would not be smaller; sizes lists each one's length.");

static PyObject *
compress_pages(PyObject *module, PyObject *args)
{
    Py_buffer pages;
    Py_ssize_t page_size, count, stored = 0;
    PyObject *result = NULL, *data = NULL, *size_objects;
    unsigned int *sizes = NULL;
    void *work = NULL;
    int failed;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*n:compress_pages", &pages, &page_size))
        return NULL;
    if (page_size <= 0 || page_size > (1 << 20) || pages.len % page_size != 0) {
        PyErr_Format(PyExc_ValueError,
                     "%zd bytes are not whole pages of %zd bytes", pages.len, page_size);
        goto done;
    }
    count = pages.len / page_size;
    /* No stored page exceeds page_size, but the last LZO stream may run over
     * before it is replaced by the page: leave room for that one. */
    data = PyBytes_FromStringAndSize(NULL, pages.len + worst_case(page_size) - page_size);
    sizes = PyMem_RawMalloc(sizeof(*sizes) * (size_t)(count ? count : 1));
    work = PyMem_RawMalloc(LZO1X_1_MEM_COMPRESS);
    if (data == NULL || sizes == NULL || work == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    failed = compress_into(pages.buf, count, page_size, (unsigned char *)PyBytes_AS_STRING(data),
                           &stored, sizes, work);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError, "lzo1x_1_compress failed");
        goto done;
    }
    if (_PyBytes_Resize(&data, stored) < 0)
        goto done;  /* data is NULL now */
    size_objects = size_list(sizes, count);
    if (size_objects != NULL) {
        result = PyTuple_Pack(2, data, size_objects);
        Py_DECREF(size_objects);
    }
done:
    Py_XDECREF(data);
    PyMem_RawFree(sizes);
    PyMem_RawFree(work);
    PyBuffer_Release(&pages);
    return result;
}

PyDoc_STRVAR(decompress_doc,
"decompress(stream, size, /) -> bytes\n\n"
"The data of one LZO1X stream of at most size bytes decompressed; ValueError\n"
"if the stream is corrupt or decompresses to more than size bytes.");

static PyObject *
decompress(PyObject *module, PyObject *args)
{
    Py_buffer stream;
    Py_ssize_t size;
    PyObject *data = NULL;
    lzo_uint length;
    int error;

    (void)module;
    if (!PyArg_ParseTuple(args, "y*n:decompress", &stream, &size))
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must not be negative");
        goto done;
    }
    data = PyBytes_FromStringAndSize(NULL, size);
    if (data == NULL)
        goto done;
    length = (lzo_uint)size;
    Py_BEGIN_ALLOW_THREADS
    error = lzo1x_decompress_safe(stream.buf, (lzo_uint)stream.len,
                                  (unsigned char *)PyBytes_AS_STRING(data), &length, NULL);
    Py_END_ALLOW_THREADS
    if (error != LZO_E_OK) {
        PyErr_Format(PyExc_ValueError, "corrupt LZO1X stream (lzo error %d)", error);
        Py_CLEAR(data);
        goto done;
    }
    if (_PyBytes_Resize(&data, (Py_ssize_t)length) < 0)
        data = NULL;
done:
    PyBuffer_Release(&stream);
    return data;
}

static PyMethodDef methods[] = {
    {"compress_pages", compress_pages, METH_VARARGS, compress_pages_doc},
    {"decompress", decompress, METH_VARARGS, decompress_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_lzo",
    .m_doc = "LZO1X-1 for kdump pages (liblzo2), a whole batch of pages per call.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__lzo(void)
{
    if (lzo_init() != LZO_E_OK) {
        PyErr_SetString(PyExc_ImportError, "liblzo2 failed to initialise (lzo_init)");
        return NULL;
    }
    return PyModule_Create(&module);
}
