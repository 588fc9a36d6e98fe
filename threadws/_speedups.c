/*
 * threadws._speedups: WebSocket masking (RFC 6455 section 5.3) in C.
 *
 * Optional. setup.py builds it where a C compiler works; threadws._frames
 * imports it unless THREADWS_NO_SPEEDUPS is set, and otherwise uses its own
 * pure-Python functions, which tests/test_speedups.py holds to the same
 * answers byte for byte.
 *
 * Masking XORs the payload with a 4-byte key repeated; in every function here
 * the key's first byte applies to the first byte handled (callers rotate the
 * key for a later start, as threadws._frames.rotate does). The key is spread
 * over a 64-bit word once and the payload is XORed a word at a time. Loads and
 * stores go through memcpy, which compilers turn into single unaligned moves:
 * no assumption about a buffer's address or about aliasing, so no undefined
 * behaviour whatever slice of whatever object a caller hands in.
 *
 * The GIL stays held, even for large buffers: releasing it doesn't pay.
 * Unmasking 1 MiB takes about 20 us (bench/floors.py), some 2% of the CPU a
 * threadws server spends per 1 MiB message, so running it beside other threads
 * could save no more than that; and a thread that lets go of the GIL next to a
 * busy one must wait to get it back (1 MiB in place beside a Python loop on
 * another thread: 30-50 us a call holding the GIL, 60-70 us releasing it).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* The key, spread over a word: byte i of the word is key[i % 4]. */
static uint64_t
key_word(const unsigned char key[4])
{
    unsigned char bytes[8];
    uint64_t word;

    memcpy(bytes, key, 4);
    memcpy(bytes + 4, key, 4);
    memcpy(&word, bytes, 8);
    return word;
}

/* XOR n bytes from src with the key into dst, which is either src itself (in place) or apart from it. */
static void
xor_key(unsigned char *dst, const unsigned char *src, Py_ssize_t n, const unsigned char key[4])
{
    uint64_t k = key_word(key);
    Py_ssize_t i = 0;

    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k;
        memcpy(dst + i, &w, 8);
    }
    /* i is a multiple of 8 here, so byte i still takes key[i % 4]. */
    for (; i < n; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

/*
 * Get a contiguous buffer (a writable one if flags has PyBUF_WRITABLE) of obj, as
 * PyObject_GetBuffer does. Anything unfit, whether not bytes-like, read-only or not
 * contiguous, is one TypeError naming the type, as CPython's own "y*" and "w*"
 * arguments say. -1 with an exception set on failure; else the caller releases view.
 */
static int
get_buffer(PyObject *obj, Py_buffer *view, int flags)
{
    if (PyObject_GetBuffer(obj, view, flags) == 0) {
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_BufferError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "a %sbytes-like object is required, not %.200s",
                     (flags & PyBUF_WRITABLE) ? "writable, contiguous " : "contiguous ", Py_TYPE(obj)->tp_name);
    }
    return -1;
}

/* Copy the 4 bytes of a bytes-like masking key into key. -1 with an exception set on failure. */
static int
get_key(PyObject *obj, unsigned char key[4])
{
    Py_buffer view;

    if (get_buffer(obj, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view.len != 4) {
        PyErr_Format(PyExc_ValueError, "a masking key is 4 bytes, not %zd", view.len);
        PyBuffer_Release(&view);
        return -1;
    }
    memcpy(key, view.buf, 4);
    PyBuffer_Release(&view);
    return 0;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments but %zd were given", name,
                     expected, nargs);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(mask_doc,
"mask($module, data, key, /)\n"
"--\n"
"\n"
"Return *data* (any contiguous bytes-like object) XORed with the 4-byte\n"
"masking *key*, whose first byte applies to data's first byte, as a new\n"
"bytes object. Masking and unmasking are the same operation.\n"
"\n"
"Raises TypeError if an argument isn't a contiguous bytes-like object,\n"
"ValueError if *key* isn't 4 bytes long.");

static PyObject *
mask(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer data;
    PyObject *result;

    if (check_nargs("mask", nargs, 2) < 0 || get_key(args[1], key) < 0) {
        return NULL;
    }
    if (get_buffer(args[0], &data, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result != NULL) {
        xor_key((unsigned char *)PyBytes_AS_STRING(result), data.buf, data.len, key);
    }
    PyBuffer_Release(&data);
    return result;
}

PyDoc_STRVAR(mask_into_doc,
"mask_into($module, buf, start, stop, key, /)\n"
"--\n"
"\n"
"XOR ``buf[start:stop]`` in place with the 4-byte masking *key*, whose first\n"
"byte applies at *start*. *buf* is any writable contiguous bytes-like object\n"
"(a bytearray, a writable memoryview); 0 <= start <= stop <= len(buf).\n"
"\n"
"Raises TypeError if *buf* isn't writable and contiguous, ValueError if the\n"
"range is outside it or *key* isn't 4 bytes long; *buf* is unchanged then.");

static PyObject *
mask_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer buf;
    Py_ssize_t start, stop;

    if (check_nargs("mask_into", nargs, 4) < 0) {
        return NULL;
    }
    /* Out-of-range integers saturate (NULL: no OverflowError) and fail the range check below. */
    start = PyNumber_AsSsize_t(args[1], NULL);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    stop = PyNumber_AsSsize_t(args[2], NULL);
    if (stop == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (get_key(args[3], key) < 0) {
        return NULL;
    }
    if (get_buffer(args[0], &buf, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    if (start < 0 || start > stop || stop > buf.len) {
        PyErr_Format(PyExc_ValueError, "range %zd:%zd is not within a buffer of %zd bytes", start, stop,
                     buf.len);
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (stop > start) {  /* (an empty buffer's pointer may be NULL, and NULL + 0 is undefined) */
        unsigned char *p = (unsigned char *)buf.buf + start;
        xor_key(p, p, stop - start, key);
    }
    PyBuffer_Release(&buf);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(mask_after_doc,
"mask_after($module, head, data, key, /)\n"
"--\n"
"\n"
"Return ``bytes(head) + mask(data, key)`` built in one allocation: a frame's\n"
"header followed by its masked payload.\n"
"\n"
"Raises TypeError if an argument isn't a contiguous bytes-like object,\n"
"ValueError if *key* isn't 4 bytes long.");

static PyObject *
mask_after(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned char key[4];
    Py_buffer head, data;
    PyObject *result = NULL;
    unsigned char *out;

    if (check_nargs("mask_after", nargs, 3) < 0 || get_key(args[2], key) < 0) {
        return NULL;
    }
    if (get_buffer(args[0], &head, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (get_buffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&head);
        return NULL;
    }
    if (head.len > PY_SSIZE_T_MAX - data.len) {
        PyErr_NoMemory();
    }
    else {
        result = PyBytes_FromStringAndSize(NULL, head.len + data.len);
    }
    if (result != NULL) {
        out = (unsigned char *)PyBytes_AS_STRING(result);
        if (head.len > 0) {  /* memcpy from NULL is undefined even for 0 bytes */
            memcpy(out, head.buf, head.len);
        }
        xor_key(out + head.len, data.buf, data.len, key);
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&head);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"mask", (PyCFunction)(void (*)(void))mask, METH_FASTCALL, mask_doc},
    {"mask_into", (PyCFunction)(void (*)(void))mask_into, METH_FASTCALL, mask_into_doc},
    {"mask_after", (PyCFunction)(void (*)(void))mask_after, METH_FASTCALL, mask_after_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot speedups_slots[] = {
#ifdef Py_mod_multiple_interpreters
    /* No module state and no static objects: every interpreter may load it. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* Nothing here relies on the GIL: no shared state, and each call holds its buffers' exports. */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "threadws._speedups",
    .m_doc = "WebSocket masking (RFC 6455 section 5.3) in C; see threadws._frames, which wraps it.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
