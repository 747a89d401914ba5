#pragma once
// C ABI of libllmc_spm_shim.so (the only code that links libsentencepiece). All functions return
// 0 on success; on failure they write a message to err (size errcap).
#include <stddef.h>
#include <stdint.h>

extern "C" {
typedef void* (*llmc_spm_load_fn)(const char* path, char* err, size_t errcap);
typedef void (*llmc_spm_free_fn)(void* h);
typedef int (*llmc_spm_info_fn)(void* h, int* vocab, int* bos, int* eos, int* unk);
// Writes up to cap ids; *n receives the full count (call again with a larger buffer if > cap).
typedef int (*llmc_spm_encode_fn)(void* h, const char* text, size_t len, int32_t* ids, size_t cap, size_t* n,
                                  char* err, size_t errcap);
// Writes up to cap bytes; *n receives the full length.
typedef int (*llmc_spm_decode_fn)(void* h, const int32_t* ids, size_t n_ids, char* out, size_t cap, size_t* n,
                                  char* err, size_t errcap);
typedef int (*llmc_spm_is_control_fn)(void* h, int id);
}
