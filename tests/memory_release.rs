//! `memory::release_free_memory` gives freed heap memory back to the kernel. A test binary of
//! its own: other tests allocating at the same time would move the process's RSS.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use std::thread;

use aft_serve::memory::release_free_memory;

/// Resident anonymous memory of this process, in KiB.
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

// The test binary's allocator is glibc's malloc (as for libtorch in the server), which keeps
// freed chunks that are not at the top of their heap: a thread allocates 64 MiB in 16 KiB chunks
// (below the mmap threshold, so from its arena) and one more that stays allocated above them,
// then frees the chunks. Without a release, those pages stay resident.
#[test]
fn release_returns_memory_freed_below_a_live_allocation() {
    const CHUNKS: usize = 4096;
    const CHUNK: usize = 16 * 1024;
    let pin = thread::spawn(|| {
        // Non-zero contents: every page is written, hence resident.
        let chunks: Vec<Vec<u8>> = (0..CHUNKS)
            .map(|i| vec![(i % 255) as u8 + 1; CHUNK])
            .collect();
        let pin = vec![1u8; CHUNK];
        drop(chunks);
        pin
    })
    .join()
    .expect("allocating thread");
    let freed_kib = (CHUNKS * CHUNK / 1024) as u64;
    let before = rss_anon_kib();
    release_free_memory();
    let after = rss_anon_kib();
    drop(std::hint::black_box(pin));
    assert!(
        before.saturating_sub(after) >= freed_kib / 2,
        "RssAnon {before} -> {after} KiB after releasing; {freed_kib} KiB had been freed"
    );
}
