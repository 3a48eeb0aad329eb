/*
 * LZO1X-1 for kdump pages, a whole batch of pages per call.
 *
 * The kdump-compressed format compresses each page on its own. Called once
 * per page from Python, the call itself (argument parsing, a bytes object for
 * the page and one for its output, a fresh 128 KiB work area) costs as much
 * as compressing a typical kernel page. Here one call takes runs of
 * consecutive pages (read straight from the vmcore, not copied into pages)
 * and returns their stored forms back to back, the way zstandard's
 * multi_compress_to_buffer does for zstd.
 *
 * The stream is the one makedumpfile writes (lzo1x_1_compress), so dumps stay
 * byte-identical; a page whose stream would not be smaller is stored as it
 * is, as every kdump writer does (its descriptor then has no codec flag).
 *
 * zlib gets the same batch call (zlib_compress_pages, compress2 as
 * makedumpfile calls it, the stream Python's zlib.compress makes): with
 * --num-threads, a worker then compresses a whole batch without the GIL,
 * where one zlib.compress call per page took and gave it back 256 times.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <lzo/lzo1x.h>
#include <zlib.h>

/* Compresses one page into out (room for worst_case bytes); 0 or -1. */
typedef int (*compress_one)(const unsigned char *in, Py_ssize_t len, unsigned char *out,
                            Py_ssize_t *size, void *work, int level);

/* The worst-case output of either codec for an input of len bytes (lzo's
 * own bound is the larger of the two). */
static Py_ssize_t
worst_case(Py_ssize_t len)
{
    Py_ssize_t lzo = len + len / 16 + 64 + 3, zlib = (Py_ssize_t)compressBound((uLong)len);
    return lzo > zlib ? lzo : zlib;
}

static int
lzo_one(const unsigned char *in, Py_ssize_t len, unsigned char *out, Py_ssize_t *size,
        void *work, int level)
{
    lzo_uint length = 0;
    (void)level;
    if (lzo1x_1_compress(in, (lzo_uint)len, out, &length, work) != LZO_E_OK)
        return -1;
    *size = (Py_ssize_t)length;
    return 0;
}

static int
zlib_one(const unsigned char *in, Py_ssize_t len, unsigned char *out, Py_ssize_t *size,
         void *work, int level)
{
    uLongf length = (uLongf)worst_case(len);
    (void)work;
    if (compress2(out, &length, in, (uLong)len, level) != Z_OK)
        return -1;
    *size = (Py_ssize_t)length;
    return 0;
}

/* Compress each page of the runs into out; sizes[i] is the stored size of
 * the i-th page. Runs without the GIL: it touches only memory this call owns
 * or holds a buffer export of. */
static int
compress_into(const Py_buffer *runs, Py_ssize_t run_count, Py_ssize_t page_size,
              unsigned char *out, Py_ssize_t *stored, unsigned int *sizes, void *work,
              compress_one compress, int level)
{
    unsigned char *at = out;
    for (Py_ssize_t run = 0; run < run_count; run++) {
        const unsigned char *in = runs[run].buf, *end = in + runs[run].len;
        for (; in < end; in += page_size) {
            Py_ssize_t size = 0;
            if (compress(in, page_size, at, &size, work, level) != 0)
                return -1;
            if (size >= page_size) {
                memcpy(at, in, (size_t)page_size);
                size = page_size;
            }
            *sizes++ = (unsigned int)size;
            at += size;
        }
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

/* Export the buffer of every run into views, counting them in *exported
 * (the caller releases those) and their bytes in *bytes; -1 on error. */
static int
export_runs(PyObject *sequence, Py_ssize_t page_size, Py_buffer *views,
            Py_ssize_t *exported, Py_ssize_t *bytes)
{
    Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    *exported = *bytes = 0;
    while (*exported < count) {
        Py_buffer *view = &views[*exported];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(sequence, *exported), view,
                               PyBUF_C_CONTIGUOUS) < 0)
            return -1;
        if (view->len % page_size != 0) {
            PyErr_Format(PyExc_ValueError, "%zd bytes are not whole pages of %zd bytes",
                         view->len, page_size);
            PyBuffer_Release(view);
            return -1;
        }
        *bytes += view->len;
        ++*exported;
    }
    return 0;
}

PyDoc_STRVAR(compress_pages_doc,
"compress_pages(runs, page_size, /) -> (data, sizes)\n\n"
"Compress each page_size bytes of each run (a buffer of whole pages) on its\n"
"own with LZO1X-1. data holds the stored pages back to back: the LZO stream,\n"
"or the page itself when the stream would not be smaller; sizes lists each\n"
"one's length.");

/* The body of both batch calls: runs exported, stored by compress, released. */
static PyObject *
compress_batch(PyObject *runs, Py_ssize_t page_size, compress_one compress, int level)
{
    PyObject *sequence, *result = NULL, *data = NULL, *size_objects;
    Py_ssize_t run_count, exported = 0, bytes, count, stored = 0;
    Py_buffer *views = NULL;
    unsigned int *sizes = NULL;
    void *work = NULL;
    int failed;

    if (page_size <= 0 || page_size > (1 << 20)) {
        PyErr_Format(PyExc_ValueError, "bad page size %zd", page_size);
        return NULL;
    }
    sequence = PySequence_Fast(runs, "runs must be a sequence of buffers");
    if (sequence == NULL)
        return NULL;
    run_count = PySequence_Fast_GET_SIZE(sequence);
    views = PyMem_Calloc((size_t)(run_count ? run_count : 1), sizeof(*views));
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (export_runs(sequence, page_size, views, &exported, &bytes) < 0)
        goto done;
    count = bytes / page_size;
    /* No stored page exceeds page_size, but the last stream may run over
     * before it is replaced by the page: leave room for that one. */
    data = PyBytes_FromStringAndSize(NULL, bytes + worst_case(page_size) - page_size);
    sizes = PyMem_RawMalloc(sizeof(*sizes) * (size_t)(count ? count : 1));
    work = PyMem_RawMalloc(LZO1X_1_MEM_COMPRESS);
    if (data == NULL || sizes == NULL || work == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    failed = compress_into(views, run_count, page_size, (unsigned char *)PyBytes_AS_STRING(data),
                           &stored, sizes, work, compress, level);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_SetString(PyExc_RuntimeError,
                        compress == lzo_one ? "lzo1x_1_compress failed" : "compress2 failed");
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
    for (Py_ssize_t run = 0; run < exported; run++)
        PyBuffer_Release(&views[run]);
    Py_XDECREF(data);
    PyMem_Free(views);
    PyMem_RawFree(sizes);
    PyMem_RawFree(work);
    Py_DECREF(sequence);
    return result;
}

static PyObject *
compress_pages(PyObject *module, PyObject *args)
{
    PyObject *runs;
    Py_ssize_t page_size;

    (void)module;
    if (!PyArg_ParseTuple(args, "On:compress_pages", &runs, &page_size))
        return NULL;
    return compress_batch(runs, page_size, lzo_one, 0);
}

PyDoc_STRVAR(zlib_compress_pages_doc,
"zlib_compress_pages(runs, page_size, level, /) -> (data, sizes)\n\n"
"compress_pages with zlib (compress2 at level, the stream zlib.compress makes).");

static PyObject *
zlib_compress_pages(PyObject *module, PyObject *args)
{
    PyObject *runs;
    Py_ssize_t page_size;
    int level;

    (void)module;
    if (!PyArg_ParseTuple(args, "Oni:zlib_compress_pages", &runs, &page_size, &level))
        return NULL;
    if (level < 0 || level > 9) {
        PyErr_Format(PyExc_ValueError, "bad zlib level %d", level);
        return NULL;
    }
    return compress_batch(runs, page_size, zlib_one, level);
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
    {"zlib_compress_pages", zlib_compress_pages, METH_VARARGS, zlib_compress_pages_doc},
    {"decompress", decompress, METH_VARARGS, decompress_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_lzo",
    .m_doc = "LZO1X-1 (liblzo2) and zlib for kdump pages, a whole batch of pages per call.",
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
