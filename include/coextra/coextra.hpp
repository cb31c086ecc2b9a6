// coextra.hpp: C++17 RAII layer over coextra.h (Slot<T>, Hook, Frame); header-only, no link step.
#pragma once

#include "coextra.h"

#include <exception>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#if defined(__GLIBCXX__)
#include <cxxabi.h> // abi::__forced_unwind
#endif

namespace coextra {

// Error convention: like the C API (and CPython), functions return 0 / a
// pointer on success and -1 / nullptr with a Python exception set; nothing
// here throws C++ exceptions across the interpreter.

// Set the Python exception that stands for the C++ exception being handled
// (call only inside a catch block), as pybind11 and nanobind translate at
// their boundaries: std::bad_alloc -> MemoryError, another std::exception ->
// RuntimeError(what()), anything else -> RuntimeError("unknown C++
// exception").  A Python exception already set is replaced.
inline void set_error_from_current_exception() noexcept {
    try {
        throw;
    } catch (const std::bad_alloc &) {
        PyErr_NoMemory();
    } catch (const std::exception &e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception");
    }
}

// Run fn() at a boundary C++ exceptions must not cross (into CPython's C
// frames): true if it returned, false if it threw, the exception then being
// the Python exception (set_error_from_current_exception).  glibc's forced
// unwinding (pthread_exit, which ends a daemon thread at interpreter exit)
// passes through: catching it without rethrowing aborts.
template <class Fn>
bool run_translating(Fn &&fn) {
    try {
        fn();
        return true;
#if defined(__GLIBCXX__)
    } catch (abi::__forced_unwind &) {
        throw;
#endif
    } catch (...) {
        set_error_from_current_exception();
        return false;
    }
}

inline int import() { return coextra_import(); }

// True when it is safe to call into coextra from a destructor: the
// interpreter is alive and this thread holds the GIL.  Objects with static
// storage are destroyed after Py_Finalize, when it is not: release them
// explicitly (e.g. in your module's m_free) or they simply let go.
inline bool can_call_python() noexcept { return Py_IsInitialized() && PyGILState_Check(); }

// A slot owning values of type T (allocated with new, freed with delete).
template <class T>
class Slot {
public:
    Slot() = default;
    Slot(const Slot &) = delete;
    Slot &operator=(const Slot &) = delete;
    Slot(Slot &&o) noexcept : h_(std::exchange(o.h_, coextra_slot{0, 0})) {}
    Slot &operator=(Slot &&o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, coextra_slot{0, 0});
        }
        return *this;
    }
    ~Slot() { reset(); }

    int reserve(const char *name) {
        if (ok()) {
            PyErr_SetString(PyExc_RuntimeError, "coextra::Slot: already reserved");
            return -1;
        }
        return coextra_slot_reserve(name, &Slot::free_value, nullptr, &h_);
    }
    int release() {
        if (!ok())
            return 0;
        int r = coextra_slot_release(h_);
        if (r == 0)
            h_ = coextra_slot{0, 0};
        return r;
    }

    bool ok() const noexcept { return h_.generation != 0; }
    coextra_slot handle() const noexcept { return h_; }

    T *get(PyObject *code) const noexcept { return static_cast<T *>(coextra_slot_get(code, h_)); }
    // Takes ownership of value (also on failure, when it is deleted).
    int set(PyObject *code, std::unique_ptr<T> value) {
        if (coextra_slot_set(code, h_, value.get()) < 0)
            return -1;
        value.release();
        return 0;
    }
    int clear(PyObject *code) { return coextra_slot_clear(code, h_); }
    // ABI 1.4: fn(PyObject *code, T *value) for every code object holding a
    // value, as coextra_slot_foreach calls it (over a snapshot of the code
    // objects; code and value borrowed, a value possibly freed by anything
    // that clears or replaces it, fn included).  fn returns 0 to go on,
    // anything else to stop, and foreach returns that, 0 after the last one,
    // or -1 with a Python exception.  A C++ exception thrown by fn stops the
    // walk and becomes that Python exception (set_error_from_current_exception).
    template <class F>
    int foreach(F &&fn) const {
        // fn may be a const lvalue: visit casts the pointer back to its own
        // (possibly const) type.
        void *arg = const_cast<void *>(static_cast<const void *>(&fn));
        return coextra_slot_foreach(h_, &Slot::visit<std::remove_reference_t<F>>, arg);
    }

private:
    static void free_value(void *v, void *) { delete static_cast<T *>(v); }
    template <class F>
    static int visit(PyObject *code, void *value, void *arg) {
        int r = -1;
        run_translating([&] { r = (*static_cast<F *>(arg))(code, static_cast<T *>(value)); });
        return r;
    }
    void reset() noexcept {
        if (ok() && can_call_python()) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            if (coextra_slot_release(h_) < 0)
                PyErr_Clear();
            PyErr_Restore(et, ev, tb);
        }
        h_ = coextra_slot{0, 0};
    }
    coextra_slot h_{0, 0};
};

// A view of the frame being evaluated, valid only inside the hook call.
class Frame {
public:
    explicit Frame(coextra_frame *f) noexcept : f_(f) {}
    PyCodeObject *code() const { return coextra_frame_code(f_); }
    PyObject *function() const { return coextra_frame_function(f_); }
    PyObject *globals() const { return coextra_frame_globals(f_); }
    bool is_resume() const { return coextra_frame_is_resume(f_) != 0; }
    PyFrameObject *object() const { return coextra_frame_object(f_); }
    // ABI 1.4: the parameters' values before the frame runs (a new tuple),
    // and whether the frame runs this function object.
    PyObject *arguments() const { return coextra_frame_arguments(f_); }
    int is_call_of(PyObject *function) const { return coextra_frame_is_call_of(f_, function); }
    // Continue down the chain: new reference or nullptr with an exception.
    PyObject *next(int throwflag) const { return coextra_eval_next(f_, throwflag); }
    // Finish without running (stolen result): the JIT path.
    PyObject *return_value(PyObject *result) const { return coextra_frame_return(f_, result); }
    coextra_frame *raw() const noexcept { return f_; }

private:
    coextra_frame *f_;
};

// A hook owning a C++ callable `PyObject *(Frame &, int throwflag)`.
// Removed on destruction (when it is safe to call into Python).
class Hook {
public:
    Hook() = default;
    Hook(const Hook &) = delete;
    Hook &operator=(const Hook &) = delete;
    Hook(Hook &&o) noexcept : h_(std::exchange(o.h_, nullptr)), fn_(std::move(o.fn_)) {}
    // Like destroying this Hook (its hook is removed), then moving o in.
    Hook &operator=(Hook &&o) noexcept {
        if (this != &o) {
            reset();
            h_ = std::exchange(o.h_, nullptr);
            fn_ = std::move(o.fn_);
        }
        return *this;
    }
    ~Hook() { reset(); }

    template <class F>
    int add(const char *name, int priority, F fn, coextra_slot only = coextra_slot{0, 0}) {
        if (h_ != nullptr) {
            PyErr_SetString(PyExc_RuntimeError, "coextra::Hook: already added");
            return -1;
        }
        auto holder = std::unique_ptr<Callable>(new (std::nothrow) Holder<F>(std::move(fn)));
        if (!holder) {
            PyErr_NoMemory();
            return -1;
        }
        coextra_hook_def def{name, priority, &Hook::trampoline, holder.get(), only};
        if (coextra_hook_add(&def, &h_) < 0)
            return -1;
        fn_ = std::move(holder);
        return 0;
    }
    int remove() {
        if (h_ == nullptr) {
            PyErr_SetString(PyExc_RuntimeError, "coextra::Hook: not added");
            return -1;
        }
        if (coextra_hook_remove(h_) < 0)
            return -1;
        h_ = nullptr;
        // fn_ stays until this Hook is destroyed or re-added: remove() may be
        // called from inside the callable itself, which is still running.
        return 0;
    }
    int set_active(bool active) { return coextra_hook_set_active(h_, active ? 1 : 0); }
    bool added() const noexcept { return h_ != nullptr; }
    coextra_hook *handle() const noexcept { return h_; }

private:
    void reset() noexcept {
        if (h_ != nullptr && can_call_python()) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            if (coextra_hook_remove(h_) < 0)
                PyErr_Clear();
            PyErr_Restore(et, ev, tb);
        } else if (h_ != nullptr) {
            fn_.release(); // the runtime may still call it: never free under it
        }
        h_ = nullptr;
        fn_.reset();
    }
    struct Callable {
        virtual ~Callable() = default;
        virtual PyObject *call(Frame &f, int throwflag) = 0;
    };
    template <class F>
    struct Holder final : Callable {
        explicit Holder(F f) : fn(std::move(f)) {}
        PyObject *call(Frame &f, int throwflag) override { return fn(f, throwflag); }
        F fn;
    };
    // A C++ exception must not unwind through CPython's C frames (the
    // evaluator's state, the dispatcher's pinned chain): it stops here,
    // becomes a Python exception, and the hook fails as the C contract says
    // a hook fails, returning NULL with the exception set, the frame
    // finished.  If the callable delegated before throwing, the frame is
    // finished (its result, if any, was the callable's to release).  If not,
    // coextra_frame_return(NULL) finishes it without running it; a generator
    // resumption cannot be skipped, so the exception is thrown into it
    // instead (as gen.throw() would), which runs its except/finally blocks.
    // Not noexcept: glibc's forced unwinding passes through (run_translating).
    static PyObject *trampoline(coextra_frame *frame, int throwflag, void *ctx) {
        Frame f(frame);
        PyObject *r = nullptr;
        if (run_translating([&] { r = static_cast<Callable *>(ctx)->call(f, throwflag); }))
            return r;
        if (reinterpret_cast<coextra_frame_head *>(frame)->consumed)
            return nullptr;
        if (coextra_frame_is_resume(frame))
            return coextra_eval_next(frame, 1);
        return coextra_frame_return(frame, nullptr);
    }

    coextra_hook *h_ = nullptr;
    std::unique_ptr<Callable> fn_;
};

} // namespace coextra
