//! The global allocator: mimalloc.
//!
//! Measured with the benchmark kit (`bench/`): glibc's allocator spent a fifth of a list
//! request in arena locks, because rows are decoded on a database thread and freed on a
//! runtime thread; mimalloc frees across threads without a lock (list +35 %, get-one
//! +25 %). It does not ask for transparent huge pages (the crate's `no_thp` feature):
//! on this machine (THP `madvise`) they held 10 MB more after start-up for no speed we
//! could measure; where THP is `always` the kernel may still use them. Freed memory goes
//! back after mimalloc's purge delay, but only when the allocator is next busy, so
//! start-up ends with [`release`]: 15 MB resident after start-up instead of 39 MB. (A
//! purge delay of 0 gave the same at start-up but spent 4 % of get-one returning and
//! re-faulting pages.)
#![allow(unsafe_code)] // one call into mimalloc's C API, nothing else

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands back to the system, at once instead of after mimalloc's purge delay, the memory
/// freed so far by the calling thread and whatever the arenas hold free: call on the
/// thread that ran start-up, when it is done (start-up's large buffers are freed there).
pub fn release() {
    // SAFETY: takes no pointers; safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
