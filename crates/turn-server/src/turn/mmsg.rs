//! `sendmmsg(2)`: several datagrams, each to its own destination, from one UDP socket in one
//! system call.
//!
//! # Why `unsafe` here
//! The workspace denies `unsafe_code`; this module is the one exception in floe's own code. No
//! maintained safe wrapper fits: `quinn-udp` batches receives but sends one destination per call
//! (GSO), `socket2` has no `sendmmsg`, and `nix`'s `sendmmsg` reports the number of datagrams
//! sent only through an iterator that reads uninitialised receive-side addresses. The unsafe
//! surface is one FFI call whose every pointer is derived from borrows that outlive it (see the
//! SAFETY comment); the function's signature is safe and takes only borrowed bytes and
//! addresses.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Most datagrams per call.
pub(super) const MAX: usize = 32;

/// Sends `msgs[i].1` to `msgs[i].0` for the first `min(msgs.len(), MAX)` messages, in order, with
/// one `sendmmsg`. Returns how many were sent; a datagram that fails stops the call there (the
/// error is returned when it is the first one).
#[cfg(target_os = "linux")]
pub(super) fn send_many(socket: &impl AsRawFd, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let n = msgs.len().min(MAX);
    if n == 0 {
        return Ok(0);
    }
    let addrs: [socket2::SockAddr; MAX] = std::array::from_fn(|i| {
        let to = msgs.get(i).map_or(msgs[0].0, |m| m.0);
        socket2::SockAddr::from(to)
    });
    let mut iovs = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX];
    // SAFETY: `mmsghdr` is a plain C struct of integers and pointers; all-zero is a valid value
    // (null pointers with zero lengths).
    let mut hdrs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        let bytes = msgs[i].1;
        iovs[i].iov_base = bytes.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = bytes.len();
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = addrs[i].as_ptr() as *mut libc::c_void;
        h.msg_namelen = addrs[i].len();
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
    }
    loop {
        // SAFETY: `hdrs[..n]` point into `addrs`, `iovs` and the caller's byte slices, all of
        // which are borrowed or owned by this frame and outlive the call; the kernel only reads
        // the names and payloads (`sendmmsg` writes nothing but `msg_len` in `hdrs`). `n <= MAX`
        // is the length of `hdrs`. The file descriptor is borrowed from a live socket.
        let r =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Elsewhere: one `sendto` per datagram.
#[cfg(not(target_os = "linux"))]
pub(super) fn send_many(socket: &impl AsRawFd, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let _ = (socket.as_raw_fd(), msgs);
    // The caller falls back to one send per datagram.
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
