//! The open-files limit, which bounds the TCP/TLS connections the shell accepts: a process at its
//! limit can no longer open relay sockets (Allocate answers 508) nor accept anyone.

// getrlimit(2) has no safe wrapper among our dependencies; the one call is below.
#![allow(unsafe_code)]

/// The soft `RLIMIT_NOFILE` of this process, if it can be read and is finite.
pub(super) fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which points to `lim`, a valid
    // and exclusively borrowed local of that type.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// The TCP/TLS client connections to accept at once: the configured cap, but at most half the
/// open-files limit, so that relay sockets, listeners and the signalling server keep the other
/// half (at least 1).
pub(super) fn connection_budget(configured: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => configured
            .min(usize::try_from(n / 2).unwrap_or(usize::MAX))
            .max(1),
        None => configured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_at_most_half_the_open_files_limit() {
        assert_eq!(connection_budget(4096, Some(1024)), 512);
        assert_eq!(connection_budget(4096, Some(1_048_576)), 4096);
        assert_eq!(connection_budget(4096, None), 4096);
        assert_eq!(connection_budget(4096, Some(1)), 1);
        assert!(open_files_limit().is_none_or(|n| n > 0));
    }
}
