/*
 * One call compresses a whole batch of kdump pages, each page on its own.
 *
 * The kdump-compressed format compresses each page on its own. Called once
 * per page from Python, the call itself (argument parsing, a bytes object for
 * the page and one for its output, a fresh work area) costs as much as
 * compressing a typical kernel page. Here one call takes runs of consecutive
 * pages (read straight from the vmcore, not copied into pages) and returns
 * their stored forms back to back, with the size of each, and the whole batch
 * is compressed without the GIL, so compression threads run at once.
 *
 * A page whose stream would not be smaller is stored as it is, as every kdump
 * writer does (its descriptor then has no codec flag).
 *
 * Shared by _lzo.c (LZO1X-1, zlib) and _zstd.c, each a module of its own so
 * that a machine without one library's headers still builds the other.
 */
#ifndef CAPTURE_BATCH_H
#define CAPTURE_BATCH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    const char *call;  /* the library call, named when it fails */
    /* The most bytes one page of len bytes can take compressed. */
    Py_ssize_t (*bound)(Py_ssize_t len);
    /* The work state of one batch (NULL: out of memory), and its release;
     * open may be NULL for a codec that needs none. */
    void *(*open)(void);
    void (*close)(void *work);
    /* Compress len bytes at in into out (room bytes); 0, or -1 on failure. */
    int (*compress)(const unsigned char *in, Py_ssize_t len, unsigned char *out, Py_ssize_t room,
                    Py_ssize_t *size, void *work, int level);
} page_codec;

/* Compress each page of the runs into out; sizes[i] is the stored size of
 * the i-th page. Runs without the GIL: it touches only memory this call owns
 * or holds a buffer export of. */
static int
compress_into(const Py_buffer *runs, Py_ssize_t run_count, Py_ssize_t page_size,
              unsigned char *out, Py_ssize_t *stored, unsigned int *sizes, void *work,
              const page_codec *codec, int level)
{
    unsigned char *at = out;
    Py_ssize_t room = codec->bound(page_size);
    for (Py_ssize_t run = 0; run < run_count; run++) {
        const unsigned char *in = runs[run].buf, *end = in + runs[run].len;
        for (; in < end; in += page_size) {
            Py_ssize_t size = 0;
            if (codec->compress(in, page_size, at, room, &size, work, level) != 0)
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

/* The body of every batch call: runs exported, stored by the codec,
 * released; (data, sizes) or NULL with an exception set. */
static PyObject *
compress_batch(PyObject *runs, Py_ssize_t page_size, const page_codec *codec, int level)
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
    data = PyBytes_FromStringAndSize(NULL, bytes + codec->bound(page_size) - page_size);
    sizes = PyMem_RawMalloc(sizeof(*sizes) * (size_t)(count ? count : 1));
    if (codec->open != NULL)
        work = codec->open();
    if (data == NULL || sizes == NULL || (codec->open != NULL && work == NULL)) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    failed = compress_into(views, run_count, page_size, (unsigned char *)PyBytes_AS_STRING(data),
                           &stored, sizes, work, codec, level);
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_Format(PyExc_RuntimeError, "%s failed", codec->call);
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
    if (work != NULL)
        codec->close(work);
    Py_DECREF(sequence);
    return result;
}

#endif
