/* Masks emails, card numbers, US SSNs and phone numbers in UTF-8 text: the two passes of
 * `gateway.redaction` whose cost follows the matches, compiled. Python spent 1-3 us per digit
 * group or `@` on them (the regex and the check of each match), so text made of digit groups
 * took 90-250 ms per MiB; these scans read each byte a bounded number of times and check each
 * candidate in place.
 *
 * The rules are exactly those of `gateway.redaction`'s regex passes (`_mask_emails`, and
 * `_NUMBERS` with `_number`), which stay as the reference: tests/test_gateway_bounds.py
 * compares both on random text.
 *
 * Emails: at each `@`, the domain is one or more labels of [A-Za-z0-9-] each followed by `.`,
 * then a top-level domain of 2 or more letters not followed by [A-Za-z0-9-] (as few labels as
 * needed for that, counting down from all of them); the local part is the run of
 * [A-Za-z0-9._%+-] before the `@`, at most 256 bytes back and not reaching into the previous
 * email. The whole address becomes one mask.
 *
 * Numbers: a candidate starts at a digit, `+` or `(` whose previous byte is not
 * [0-9A-Za-z_+.-]; from there, in this order:
 *   ssn   ddd-dd-dddd, not followed by a digit or `-`: masked when area, group and serial
 *         are valid;
 *   card  13-19 digits, each pair joined by at most one space or hyphen, the longest such run
 *         (up to 19) not followed by a digit or `.`: masked when it passes Luhn;
 *   phone a group of 2-4 digits (or `+cc`, optional separator, optional `(area)`, a group of
 *         2-4), then 1-4 groups of 2-4 digits each after one separator (ASCII whitespace, `.`
 *         or `-`), not followed by a word character: masked when it holds 10-15 digits.
 * A candidate that matches a shape but fails its check is left as it is, and the scan goes on
 * after it (as `re.sub` does). Bytes >= 0x80 are never digits, separators or word characters,
 * so UTF-8 text is scanned as its characters would be. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef Py_ssize_t Index;

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_word(unsigned char c) {
    return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}
static int is_label(unsigned char c) { return is_word(c) ? c != '_' : c == '-'; }
static int is_letter(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static int is_local(unsigned char c) { return is_word(c) || c == '.' || c == '%' || c == '+' || c == '-'; }
static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_phone_separator(unsigned char c) { return is_space(c) || c == '.' || c == '-'; }

typedef struct {
    const unsigned char *text;
    Index length;
} Text;

/* Digits from `at`, counted up to `cap` (enough to tell a 2-4 digit group from a longer run). */
static Index digits_from(const Text *t, Index at, Index cap) {
    Index count = 0;
    while (at + count < t->length && count < cap && is_digit(t->text[at + count])) count++;
    return count;
}

/* End of a whole group of `low`-`high` digits at `at` (a longer run is no group: what follows
 * a cut group is a digit, which no later part of a phone number accepts), or -1. */
static Index group_end(const Text *t, Index at, Index low, Index high) {
    Index count = digits_from(t, at, high + 1);
    return count >= low && count <= high ? at + count : -1;
}

/* The phone tail from `at`: 1-4 groups of 2-4 digits, each after one separator, then no word
 * character; with the regex's backtracking, one group fewer when a word character follows. */
static Index phone_tail(const Text *t, Index at) {
    Index ends[5];
    int groups = 0;
    Index cursor = at;
    while (groups < 4 && cursor + 1 < t->length && is_phone_separator(t->text[cursor])) {
        Index end = group_end(t, cursor + 1, 2, 4);
        if (end < 0) break;
        ends[++groups] = cursor = end;
    }
    if (groups == 0) return -1;
    if (cursor < t->length && is_word(t->text[cursor])) return groups >= 2 ? ends[groups - 1] : -1;
    return cursor;
}

static Index ssn_end(const Text *t, Index p) {
    const unsigned char *s = t->text + p;
    if (p + 11 > t->length) return -1;
    for (int i = 0; i < 11; i++) {
        int hyphen = i == 3 || i == 6;
        if (hyphen ? s[i] != '-' : !is_digit(s[i])) return -1;
    }
    if (p + 11 < t->length && (is_digit(s[11]) || s[11] == '-')) return -1;
    return p + 11;
}

static Index card_end(const Text *t, Index p) {
    Index ends[19];
    int count = 0;
    Index q = p + 1;
    while (count < 18) {
        if (q + 1 < t->length && (t->text[q] == ' ' || t->text[q] == '-') && is_digit(t->text[q + 1]))
            q += 2;
        else if (q < t->length && is_digit(t->text[q]))
            q += 1;
        else
            break;
        ends[++count] = q;
    }
    for (int m = count; m >= 12; m--) {
        Index x = ends[m];
        if (x >= t->length || !(is_digit(t->text[x]) || t->text[x] == '.')) return x;
    }
    return -1;
}

static Index optional_separator(const Text *t, Index at) {
    return at < t->length && is_phone_separator(t->text[at]) ? at + 1 : at;
}

/* `(area)` at `at`, then an optional separator and a group of 2-4 digits: the group's end. */
static Index area_then_group(const Text *t, Index at) {
    Index area = group_end(t, at + 1, 1, 4);
    if (area < 0 || area >= t->length || t->text[area] != ')') return -1;
    return group_end(t, optional_separator(t, area + 1), 2, 4);
}

static Index phone_end(const Text *t, Index p) {
    unsigned char c = t->text[p];
    if (is_digit(c)) {
        Index first = group_end(t, p, 2, 4);
        return first < 0 ? -1 : phone_tail(t, first);
    }
    if (c == '(') {
        Index group = area_then_group(t, p);
        return group < 0 ? -1 : phone_tail(t, group);
    }
    /* `+`: a country code of 1-3 digits, then the rest; or a code and a group in one run of
     * 3-7 digits (the regex tries the whole run as the code first, then shorter codes). */
    Index run = digits_from(t, p + 1, 8);
    if (run == 0) return -1;
    Index run_end = p + 1 + run;
    if (run <= 3) {
        Index next = optional_separator(t, run_end);
        Index group = next < t->length && t->text[next] == '(' ? area_then_group(t, next) : group_end(t, next, 2, 4);
        Index end = group < 0 ? -1 : phone_tail(t, group);
        if (end >= 0) return end;
    }
    return run >= 3 && run <= 7 ? phone_tail(t, run_end) : -1;
}

static int luhn_valid(const Text *t, Index start, Index end) {
    int total = 0, doubled = 0;
    for (Index i = end; i-- > start;) {
        if (!is_digit(t->text[i])) continue;
        int digit = t->text[i] - '0';
        if (doubled) digit = digit * 2 > 9 ? digit * 2 - 9 : digit * 2;
        total += digit;
        doubled = !doubled;
    }
    return total % 10 == 0;
}

static int ssn_valid(const unsigned char *s) {
    if (s[0] == '9' || !memcmp(s, "000", 3) || !memcmp(s, "666", 3)) return 0;
    return memcmp(s + 4, "00", 2) && memcmp(s + 7, "0000", 4);
}

static Index digit_count(const Text *t, Index start, Index end) {
    Index count = 0;
    for (Index i = start; i < end; i++) count += is_digit(t->text[i]);
    return count;
}

static int starts_candidate(const Text *t, Index p) {
    unsigned char c = t->text[p];
    if (!(is_digit(c) || c == '+' || c == '(')) return 0;
    if (p == 0) return 1;
    unsigned char before = t->text[p - 1];
    return !(is_word(before) || before == '+' || before == '.' || before == '-');
}

/* The candidate at `p`: its end (-1: none) and the mask to put in its place (NULL: kept). */
static Index candidate(const Text *t, Index p, const char **mask) {
    *mask = NULL;
    if (is_digit(t->text[p])) {
        Index end = ssn_end(t, p);
        if (end >= 0) {
            if (ssn_valid(t->text + p)) *mask = "[REDACTED:ssn]";
            return end;
        }
        end = card_end(t, p);
        if (end >= 0) {
            if (luhn_valid(t, p, end)) *mask = "[REDACTED:card]";
            return end;
        }
    }
    Index end = phone_end(t, p);
    if (end >= 0) {
        Index digits = digit_count(t, p, end);
        if (digits >= 10 && digits <= 15) *mask = "[REDACTED:phone]";
    }
    return end;
}

/* The masked copy of a text: the bytes between masks copied as they are. */
typedef struct {
    const Text *text;
    char *bytes;
    Index written, copied;
} Masked;

static void masked_put(Masked *m, Index start, Index end, const char *mask) {
    size_t mask_length = strlen(mask);
    memcpy(m->bytes + m->written, m->text->text + m->copied, start - m->copied);
    m->written += start - m->copied;
    memcpy(m->bytes + m->written, mask, mask_length);
    m->written += mask_length;
    m->copied = end;
}

static PyObject *masked_close(Masked *m) {
    masked_put(m, m->text->length, m->text->length, "");
    PyObject *result = PyBytes_FromStringAndSize(m->bytes, m->written);
    PyMem_Free(m->bytes);
    return result;
}

/* The text of `argument` (bytes) and its masked copy to fill; 0 with an exception set if not. */
static int masked_open(PyObject *argument, Text *t, Masked *m, const char *function) {
    if (!PyBytes_Check(argument)) {
        PyErr_Format(PyExc_TypeError, "%s() takes bytes, not %.100s", function, Py_TYPE(argument)->tp_name);
        return 0;
    }
    t->text = (const unsigned char *)PyBytes_AS_STRING(argument);
    t->length = PyBytes_GET_SIZE(argument);
    /* A mask (at most 16 bytes) replaces at least 6 (`a@b.cd`), so the copy is under 3x the text. */
    m->text = t;
    m->bytes = PyMem_Malloc(t->length * 4 + 64);
    m->written = m->copied = 0;
    if (m->bytes == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    return 1;
}

static PyObject *mask_numbers(PyObject *module, PyObject *argument) {
    (void)module;
    Text t;
    Masked m;
    if (!masked_open(argument, &t, &m, "mask_numbers")) return NULL;
    for (Index p = 0; p < t.length;) {
        const char *mask;
        Index end = starts_candidate(&t, p) ? candidate(&t, p, &mask) : -1;
        if (end < 0) {
            p++;
            continue;
        }
        if (mask != NULL) masked_put(&m, p, end, mask);
        p = end;
    }
    return masked_close(&m);
}

/* The end of the domain that starts at the `@` at `at`, or -1. */
static Index domain_end(const Text *t, Index at) {
    Index position = at + 1, labels = 0;
    for (;;) { /* count the labels: each a run of label bytes, then `.` */
        Index run = position;
        while (run < t->length && is_label(t->text[run])) run++;
        if (run == position || run >= t->length || t->text[run] != '.') break;
        position = run + 1;
        labels++;
    }
    /* From the last label back to the first, the first place a top-level domain fits. */
    for (Index after = position; labels > 0; labels--) {
        Index end = after;
        while (end < t->length && is_letter(t->text[end])) end++;
        if (end - after >= 2 && !(end < t->length && is_label(t->text[end]))) return end;
        do after--; while (after > at + 1 && t->text[after - 1] != '.'); /* the previous label's start */
    }
    return -1;
}

static PyObject *mask_emails(PyObject *module, PyObject *argument) {
    (void)module;
    Text t;
    Masked m;
    if (!masked_open(argument, &t, &m, "mask_emails")) return NULL;
    const unsigned char *at_byte;
    for (Index from = 0; from < t.length && (at_byte = memchr(t.text + from, '@', t.length - from)) != NULL;) {
        Index at = at_byte - t.text, end = domain_end(&t, at);
        if (end < 0) {
            from = at + 1;
            continue;
        }
        Index low = at - 256 > m.copied ? at - 256 : m.copied, local = at;
        while (local > low && is_local(t.text[local - 1])) local--;
        if (local < at) masked_put(&m, local, end, "[REDACTED:email]");
        from = end;
    }
    return masked_close(&m);
}

static PyMethodDef methods[] = {
    {"mask_numbers", mask_numbers, METH_O,
     "mask_numbers(text: bytes) -> bytes: UTF-8 text with card numbers, SSNs and phone numbers masked."},
    {"mask_emails", mask_emails, METH_O, "mask_emails(text: bytes) -> bytes: UTF-8 text with email addresses masked."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gateway._redaction", NULL, -1, methods};

PyMODINIT_FUNC PyInit__redaction(void) { return PyModule_Create(&module); }
