/*
 * LZO1X-1 and zlib for kdump pages, a whole batch of pages per call
 * (_batch.h says why).
 *
 * The LZO stream is the one makedumpfile writes (lzo1x_1_compress), so dumps
 * stay byte-identical. zlib gets the same batch call (compress2 as
 * makedumpfile calls it, the stream Python's zlib.compress makes): with
 * --num-threads, a worker then compresses a whole batch without the GIL,
 * where one zlib.compress call per page took and gave it back 256 times.
 */
#include "_batch.h"
#include <lzo/lzo1x.h>
#include <zlib.h>

static Py_ssize_t
lzo_bound(Py_ssize_t len)
{
    return len + len / 16 + 64 + 3;
}

static void *
lzo_open(void)
{
    return PyMem_RawMalloc(LZO1X_1_MEM_COMPRESS);
}

static int
lzo_one(const unsigned char *in, Py_ssize_t len, unsigned char *out, Py_ssize_t room,
        Py_ssize_t *size, void *work, int level)
{
    lzo_uint length = 0;
    (void)room;  /* lzo writes at most lzo_bound(len) */
    (void)level;
    if (lzo1x_1_compress(in, (lzo_uint)len, out, &length, work) != LZO_E_OK)
        return -1;
    *size = (Py_ssize_t)length;
    return 0;
}

static const page_codec lzo_codec = {
    "lzo1x_1_compress", lzo_bound, lzo_open, PyMem_RawFree, lzo_one,
};

static Py_ssize_t
zlib_bound(Py_ssize_t len)
{
    return (Py_ssize_t)compressBound((uLong)len);
}

static int
zlib_one(const unsigned char *in, Py_ssize_t len, unsigned char *out, Py_ssize_t room,
         Py_ssize_t *size, void *work, int level)
{
    uLongf length = (uLongf)room;
    (void)work;
    if (compress2(out, &length, in, (uLong)len, level) != Z_OK)
        return -1;
    *size = (Py_ssize_t)length;
    return 0;
}

static const page_codec zlib_codec = {"compress2", zlib_bound, NULL, NULL, zlib_one};

PyDoc_STRVAR(compress_pages_doc,
"compress_pages(runs, page_size, /) -> (data, sizes)\n\n"
"Compress each page_size bytes of each run (a buffer of whole pages) on its\n"
"own with LZO1X-1. data holds the stored pages back to back: the LZO stream,\n"
"or the page itself when the stream would not be smaller; sizes lists each\n"
"one's length.");

static PyObject *
compress_pages(PyObject *module, PyObject *args)
{
    PyObject *runs;
    Py_ssize_t page_size;

    (void)module;
    if (!PyArg_ParseTuple(args, "On:compress_pages", &runs, &page_size))
        return NULL;
    return compress_batch(runs, page_size, &lzo_codec, 0);
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
    return compress_batch(runs, page_size, &zlib_codec, level);
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
