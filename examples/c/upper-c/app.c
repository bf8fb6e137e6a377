// upper-c: an xcs operator in C (wit-bindgen c, clang, wasm-tools).
//
// Build: ./build.sh. The bindings (gen/) come from wit/world.wit: the
// exports below are the world's `metadata` and `invoke`. What they return
// is freed by the bindings after the host has read it, so every string is
// a heap copy (`upper_c_string_dup*`).

#include <stdlib.h>

#include "gen/upper_c.h"

void exports_upper_c_metadata(upper_c_metadata_t *ret) {
    upper_c_string_dup(&ret->name, "upper-c");
    upper_c_string_dup(&ret->version, "0.1.0");
    upper_c_string_dup(&ret->description, "Upper-cases an ASCII text.");
    // The result depends only on the input: the host may cache it.
    ret->deterministic = true;
}

// `true` and `ret` for `ok`; `false` and `err` for an operator error.
bool exports_upper_c_invoke(upper_c_string_t *text, upper_c_string_t *ret, upper_c_error_t *err) {
    if (text->len == 0) {
        upper_c_string_dup(&err->code, "empty");
        upper_c_string_dup(&err->message, "the text is empty");
        err->retryable = false;
        upper_c_string_free(text);
        return false;
    }
    // The argument is ours: upper-case it in place and return it.
    for (size_t i = 0; i < text->len; i++) {
        uint8_t c = text->ptr[i];
        if (c >= 'a' && c <= 'z') {
            text->ptr[i] = c - ('a' - 'A');
        }
    }
    *ret = *text;
    return true;
}
