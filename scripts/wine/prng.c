/* wine 8.0 lacks bcryptprimitives.dll, which Rust's std on Windows calls for randomness
   (ProcessPrng). This stand-in, for the wine test only, answers from RtlGenRandom. */
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) { return RtlGenRandom(data, (ULONG)len); }
