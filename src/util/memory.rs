//! Giving memory back to the OS after a load.
//!
//! mimalloc keeps each thread's freed pages in that thread's heap for reuse
//! and hands them back only when the same thread collects. Every thread
//! that allocates under load (the workers, the log thread, the analytics
//! collector, the tokenizer helper) calls [`collect`] once when its load
//! ends, so RSS comes back near idle when traffic stops (docs/benchmarks.md,
//! "Memory after the load").

/// Frees this thread's unused mimalloc pages and purges freed arena memory.
/// A few hundred microseconds at most; call it when a burst of work ends,
/// not per request.
pub fn collect() {
    // SAFETY: mi_collect only walks and frees the calling thread's own
    // mimalloc heap (and purges freed arena pages); it takes no pointers
    // from us. Under `--features system-alloc` nothing was allocated by
    // mimalloc and the call finds nothing to do.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Drops this process's resident pages of `data`, a read-only part of the
/// binary (the tokenizer's vocabulary), once nothing reads it for a while.
/// A later read faults the same bytes back in from the file.
pub fn release_static(data: &'static [u8]) {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    #[allow(unsafe_code)]
    let page = match usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) {
        Ok(p) if p.is_power_of_two() => p,
        _ => return,
    };
    // Only whole pages inside `data`: a page it shares with other
    // constants stays.
    let start = (data.as_ptr() as usize).next_multiple_of(page);
    let end = (data.as_ptr() as usize + data.len()) & !(page - 1);
    if end <= start {
        return;
    }
    // SAFETY: [start, end) lies inside `data`, a 'static shared borrow of
    // read-only memory mapped from the executable, which is never written.
    // MADV_DONTNEED on a private read-only file mapping only drops this
    // process's page-table entries: every later read, on any thread, sees
    // the file's bytes, which are `data`'s bytes. Nothing is invalidated.
    #[allow(unsafe_code)]
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static DATA: [u8; 5 * 4096 + 100] = {
        let mut d = [0u8; 5 * 4096 + 100];
        let mut i = 0;
        while i < d.len() {
            d[i] = (i % 251) as u8;
            i += 1;
        }
        d
    };

    #[test]
    fn released_static_bytes_read_back_the_same() {
        // Read through black_box: the compiler could otherwise fold reads
        // of a constant static and never touch the pages.
        let data: &'static [u8] = std::hint::black_box(&DATA);
        let before: u64 = data.iter().map(|&b| u64::from(b)).sum();
        release_static(data);
        release_static(&data[1..3]);
        assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert_eq!(data.iter().map(|&b| u64::from(b)).sum::<u64>(), before);
        collect();
    }
}
