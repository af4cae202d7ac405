/* One write-ahead log frame built straight into the active segment's mapping (gateway/spool.py).
 *
 * In Python a frame cost a struct pack, three crc32 calls, a join into a new bytes object and a
 * slice assignment into the mapping: two copies and four allocations per record on the request
 * path. Here the header, the CRC and the key and value go into the mapping in one call with one
 * copy. The layout and CRC are `gateway.spool.encode`'s (tests/test_gateway_frames.py checks the
 * two byte for byte):
 *
 *     magic u16 | kind u8 | flags u8 | key length u16 | value length u32 | crc32 u32 | key | value
 *
 * big-endian; the CRC (zlib's crc32) covers the ten header bytes before it, the key and the value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define MAGIC 0x5454
#define HAS_KEY 1
#define HEAD_SIZE 10   /* the header before its CRC */
#define HEADER_SIZE 14

static void put_u16(unsigned char *at, uint32_t value) {
    at[0] = (unsigned char)(value >> 8);
    at[1] = (unsigned char)value;
}

static void put_u32(unsigned char *at, uint32_t value) {
    at[0] = (unsigned char)(value >> 24);
    at[1] = (unsigned char)(value >> 16);
    at[2] = (unsigned char)(value >> 8);
    at[3] = (unsigned char)value;
}

static PyObject *write_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "write_frame(buffer, offset, kind, flags, key, value)");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    long kind = PyLong_AsLong(args[2]);
    long flags = PyLong_AsLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (offset < 0 || kind < 0 || kind > 0xFF || flags < 0 || flags > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "write_frame: offset, kind or flags out of range");
        return NULL;
    }
    const char *key = "";
    Py_ssize_t key_length = 0;
    if (args[4] != Py_None) {
        if (PyBytes_AsStringAndSize(args[4], (char **)&key, &key_length) < 0) return NULL;
        flags |= HAS_KEY;
    }
    char *value;
    Py_ssize_t value_length;
    if (PyBytes_AsStringAndSize(args[5], &value, &value_length) < 0) return NULL;
    if (key_length > 0xFFFF || (unsigned long long)value_length > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "write_frame: key or value too long for a frame");
        return NULL;
    }
    Py_ssize_t size = HEADER_SIZE + key_length + value_length;

    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE) < 0) return NULL;
    if (offset > view.len - size) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "write_frame: the frame does not fit in the buffer");
        return NULL;
    }
    unsigned char *at = (unsigned char *)view.buf + offset;
    put_u16(at, MAGIC);
    at[2] = (unsigned char)kind;
    at[3] = (unsigned char)flags;
    put_u16(at + 4, (uint32_t)key_length);
    put_u32(at + 6, (uint32_t)value_length);
    uLong crc = crc32(0L, at, HEAD_SIZE);
    crc = crc32(crc, (const Bytef *)key, (uInt)key_length);
    crc = crc32(crc, (const Bytef *)value, (uInt)value_length);
    put_u32(at + HEAD_SIZE, (uint32_t)crc);
    memcpy(at + HEADER_SIZE, key, (size_t)key_length);
    memcpy(at + HEADER_SIZE + key_length, value, (size_t)value_length);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(size);
}

static PyMethodDef methods[] = {
    {"write_frame", (PyCFunction)(void (*)(void))write_frame, METH_FASTCALL,
     "write_frame(buffer, offset, kind, flags, key, value) -> int: the frame of (key, value) written "
     "into the writable `buffer` at `offset`; its length. ValueError if it does not fit."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_frames", "Write-ahead log frames built in place (gateway/spool.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__frames(void) { return PyModule_Create(&module_def); }
