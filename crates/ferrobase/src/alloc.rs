//! The global allocator: mimalloc, set to hand freed memory back to the system at once.
//!
//! Measured with the benchmark kit (`bench/`): glibc's allocator spent a fifth of a list
//! request in arena locks, because rows are decoded on a database thread and freed on a
//! runtime thread; mimalloc frees across threads without a lock (list +35 %, get-one
//! +25 %). Two of its defaults cost memory for no speed we could measure here:
//! transparent huge pages (10 MB resident at start-up, off by the crate's `no_thp`
//! feature) and a delay before freed memory goes back (the 19 MiB Argon2 dummy hash made
//! at start-up stayed resident: 39 MB after start-up, against 19 MB without the delay).
#![allow(unsafe_code)] // one call into mimalloc's C option API, nothing else

use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's number for `mi_option_purge_delay` (`enum mi_option_e` in its
/// `mimalloc.h`); the Rust bindings only name older options. `tests::option_number`
/// checks it by its default (1000 ms in this version).
const PURGE_DELAY: mi_option_t = 15;

/// Call first thing in `main`.
pub fn tune() {
    // SAFETY: a plain option setter; it takes effect for later frees.
    unsafe { mi_option_set(PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    /// The number still names the option we mean: it has purge_delay's default.
    #[test]
    fn option_number() {
        // SAFETY: a plain option getter.
        let delay = unsafe { mi_option_get(PURGE_DELAY) };
        assert_eq!(delay, 1000, "purge_delay defaults to 1000 ms");
    }
}
