#ifndef VMSESSIOND_CMALLOC_SHIM_H
#define VMSESSIOND_CMALLOC_SHIM_H

// mallopt(3) and its parameters, which Swift's Glibc module leaves out (it does not include <malloc.h>).
#include <malloc.h>

#endif
