// The platform-specific calls of the bindings: a symbol of the running process
// (the Python interpreter) by name, or of a shared library it has loaded.
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

// A symbol of the shared library at `path` if the process has already loaded
// it (never loads it), else nullptr; nullptr on Windows.
inline void* find_loaded_library_symbol(const char* path, const char* name) {
#if defined(_WIN32)
    (void)path;
    (void)name;
    return nullptr;
#else
    void* lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!lib) return nullptr;
    void* sym = dlsym(lib, name);
    dlclose(lib);  // drops the reference RTLD_NOLOAD took; the library stays loaded
    return sym;
#endif
}

}  // namespace fastrnn::python::platform
