//! Gives freed heap memory back to the operating system, periodically, so that an idle server
//! does not keep the peak of the last burst (a connection flood, a load peak) resident.
//!
//! Neither allocator in the process does this by itself once it goes idle:
//! - mimalloc (the Rust side, the global allocator in `main.rs`) frees pages with a delay and
//!   carries the delayed purges out only from inside later allocation calls, so pages freed just
//!   before the process goes quiet stay resident;
//! - glibc's malloc (libtorch's tensors, the system allocator of tests and tools) keeps freed
//!   chunks in its per-thread arenas and returns only the top of the main heap.
//!
//! [`release_free_memory`] asks both (`mi_collect`, `malloc_trim(0)`); [`spawn`] does it from a
//! thread of its own every interval. Memory in use is untouched, and freed memory that is
//! reused after a release costs one page fault per page, hence an interval of seconds.
//! Measured in docs/DEPLOY.md ("Connections and memory under hostile load").

use std::io;
use std::thread::{self, JoinHandle};
use std::time::Duration;

// Links mimalloc's C library (which defines mi_collect) into every binary of this crate, also
// those that keep the system allocator.
use mimalloc as _;

extern "C" {
    /// mimalloc (linked through the `mimalloc` crate): collect the calling thread's heap and
    /// purge every arena page whose purge delay has passed, whichever thread freed it.
    fn mi_collect(force: bool);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    /// glibc: give the free memory of every malloc arena back to the kernel (`pad` bytes kept
    /// at the top of the main heap). Returns 1 when memory was released.
    fn malloc_trim(pad: usize) -> i32;
}

/// Returns the memory both allocators hold free to the operating system.
pub fn release_free_memory() {
    // SAFETY: both take no pointers and may be called from any thread at any time: mi_collect
    // synchronises with the threads that own the pages, malloc_trim locks each arena in turn.
    unsafe {
        mi_collect(false);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        malloc_trim(0);
    }
}

/// Starts a thread that calls [`release_free_memory`] every `interval`, for the life of the
/// process. `None` (nothing started) for a zero interval, which turns releasing off.
pub fn spawn(interval: Duration) -> io::Result<Option<JoinHandle<()>>> {
    if interval.is_zero() {
        return Ok(None);
    }
    thread::Builder::new()
        .name("aft-memory-release".into())
        .spawn(move || loop {
            thread::sleep(interval);
            release_free_memory();
        })
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_interval_starts_nothing() {
        assert!(spawn(Duration::ZERO).expect("spawn").is_none());
    }
}
