// The one platform-specific call of the bindings: a symbol of the running
// process (the Python interpreter) by name, or nullptr.
#pragma once

#if !defined(_WIN32)
#include <dlfcn.h>
#endif

namespace fastrnn::python::platform {

// On Windows the interpreter's symbols live in a versioned DLL; nullptr there
// (the callers treat every symbol as optional).
inline void* find_symbol(const char* name) {
#if defined(_WIN32)
    (void)name;
    return nullptr;
#else
    return dlsym(RTLD_DEFAULT, name);
#endif
}

}  // namespace fastrnn::python::platform
