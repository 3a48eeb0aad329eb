/*
 * zstd for kdump pages, a whole batch of pages per call (_batch.h says why).
 *
 * Each page is one frame, as ZSTD_compressCCtx makes it at the given level:
 * the frame makedumpfile writes, and the one zstandard's
 * ZstdCompressor(level).compress makes (same parameters: the content size in
 * the header, no checksum, no dictionary). zstandard's batch call returns a
 * Python object per frame, which a worker thread then copies out holding the
 * GIL; here the frames come back as one buffer, made without it.
 */
#include "_batch.h"
#include <zstd.h>

static Py_ssize_t
zstd_bound(Py_ssize_t len)
{
    return (Py_ssize_t)ZSTD_compressBound((size_t)len);
}

static void *
zstd_open(void)
{
    return ZSTD_createCCtx();
}

static void
zstd_close(void *work)
{
    ZSTD_freeCCtx(work);
}

static int
zstd_one(const unsigned char *in, Py_ssize_t len, unsigned char *out, Py_ssize_t room,
         Py_ssize_t *size, void *work, int level)
{
    size_t length = ZSTD_compressCCtx(work, out, (size_t)room, in, (size_t)len, level);
    if (ZSTD_isError(length))
        return -1;
    *size = (Py_ssize_t)length;
    return 0;
}

static const page_codec zstd_codec = {
    "ZSTD_compressCCtx", zstd_bound, zstd_open, zstd_close, zstd_one,
};

PyDoc_STRVAR(compress_pages_doc,
"compress_pages(runs, page_size, level, /) -> (data, sizes)\n\n"
"Compress each page_size bytes of each run (a buffer of whole pages) into a\n"
"zstd frame of its own at level. data holds the stored pages back to back:\n"
"the frame, or the page itself when the frame would not be smaller; sizes\n"
"lists each one's length.");

static PyObject *
compress_pages(PyObject *module, PyObject *args)
{
    PyObject *runs;
    Py_ssize_t page_size;
    int level;

    (void)module;
    if (!PyArg_ParseTuple(args, "Oni:compress_pages", &runs, &page_size, &level))
        return NULL;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
        PyErr_Format(PyExc_ValueError, "bad zstd level %d", level);
        return NULL;
    }
    return compress_batch(runs, page_size, &zstd_codec, level);
}

static PyMethodDef methods[] = {
    {"compress_pages", compress_pages, METH_VARARGS, compress_pages_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_zstd",
    .m_doc = "zstd (libzstd) for kdump pages, a whole batch of pages per call.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__zstd(void)
{
    return PyModule_Create(&module);
}
