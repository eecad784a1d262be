//! Digest nonces that expire and cannot be replayed, shared by every worker
//! of a pool.
//!
//! The master creates one small shared-memory file per pool (a memfd) and
//! every worker maps it: 32 bytes of secret, a slot counter, and a table of
//! slots. A nonce is `issued-at (8) | slot (4) | tag (4) | MAC (16)`,
//! base64url: the MAC (HMAC-SHA-256 under the secret) makes it unforgeable
//! and its time makes it expire without any state. Replays need state: the
//! slot holds `tag << 32 | highest nonce count seen`, updated by
//! compare-and-swap, so a nonce count is accepted once, by whichever worker
//! sees it first. A slot is reused after [`SLOTS`] more nonces; the nonce it
//! held then reads as stale, and the client retries with a fresh one.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Nonces live at once per pool; 8 bytes each.
pub const SLOTS: usize = 16384;
const SECRET: usize = 32;
const COUNTER_AT: usize = 32;
const SLOTS_AT: usize = 64;
const SIZE: usize = SLOTS_AT + SLOTS * 8;
const RAW_LEN: usize = 8 + 4 + 4 + 16;

/// What a nonce (with its count) is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Genuine but expired (or its slot was reused): ask again with
    /// `stale=true`.
    Stale,
    /// Genuine, but this nonce count was already used.
    Replayed,
    /// Not a nonce this pool issued.
    Forged,
}

/// Creates a pool's shared nonce file, with a fresh secret.
pub fn create() -> io::Result<OwnedFd> {
    let fd =
        nix::sys::memfd::memfd_create(c"wsgi-fpm-nonces", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&fd, SIZE as libc::off_t)?;
    let mut secret = [0u8; SECRET];
    getrandom::fill(&mut secret).map_err(|e| io::Error::other(e.to_string()))?;
    let written = nix::sys::uio::pwrite(&fd, &secret, 0)?;
    if written != SECRET {
        return Err(io::Error::other("short write to the nonce file"));
    }
    Ok(fd)
}

/// A worker's mapping of its pool's nonce file.
pub struct NonceStore {
    base: NonNull<u8>,
    secret: [u8; SECRET],
}

// SAFETY: the mapping is only accessed through atomics (slots, counter) and
// the secret copied out at open; nothing else aliases it in this process.
unsafe impl Send for NonceStore {}
unsafe impl Sync for NonceStore {}

impl NonceStore {
    /// Maps the file the master made (see [`create`]).
    pub fn open(fd: &impl AsFd) -> io::Result<NonceStore> {
        let len = nix::sys::stat::fstat(fd.as_fd())?.st_size;
        if usize::try_from(len).ok() != Some(SIZE) {
            return Err(io::Error::other(format!(
                "the nonce file (fd {}) has {len} bytes, not {SIZE}",
                fd.as_fd().as_raw_fd()
            )));
        }
        // SAFETY: a fresh shared mapping of a file of SIZE bytes; the
        // pointer stays valid until munmap in Drop.
        let base = unsafe {
            nix::sys::mman::mmap(
                None,
                std::num::NonZeroUsize::new(SIZE).ok_or(io::ErrorKind::InvalidInput)?,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                fd,
                0,
            )?
        }
        .cast::<u8>();
        let mut secret = [0u8; SECRET];
        // SAFETY: the first SECRET bytes are in the mapping, written once by
        // the master before any worker started.
        unsafe { std::ptr::copy_nonoverlapping(base.as_ptr(), secret.as_mut_ptr(), SECRET) };
        Ok(NonceStore { base, secret })
    }

    fn atomic(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= SIZE);
        // SAFETY: offset is 8-aligned inside the mapping (page-aligned base),
        // and every access to these words, in every process, is atomic.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast::<u64>()) }
    }

    fn slot(&self, index: u32) -> &AtomicU64 {
        self.atomic(SLOTS_AT + (index as usize % SLOTS) * 8)
    }

    fn mac(&self, data: &[u8]) -> [u8; 16] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any size");
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// A new nonce, issued at `now` (seconds since the epoch).
    pub fn issue(&self, now: u64) -> String {
        let index = (self.atomic(COUNTER_AT).fetch_add(1, Ordering::Relaxed) % SLOTS as u64) as u32;
        let mut tag = [0u8; 4];
        // No randomness left is no reason to fail a challenge: the MAC still
        // guards the nonce, the tag only tells reuses of a slot apart.
        if getrandom::fill(&mut tag).is_err() {
            tag = (now as u32 ^ index).to_be_bytes();
        }
        let tag = u32::from_be_bytes(tag);
        self.slot(index)
            .store(u64::from(tag) << 32, Ordering::Release);
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&now.to_be_bytes());
        raw[8..12].copy_from_slice(&index.to_be_bytes());
        raw[12..16].copy_from_slice(&tag.to_be_bytes());
        let mac = self.mac(&raw[..16]);
        raw[16..].copy_from_slice(&mac);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks `nonce` used with count `nc` at `now`; a valid use is
    /// recorded, so the same count is refused next time.
    pub fn check(&self, nonce: &str, nc: u32, now: u64, lifetime: u64) -> NonceCheck {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceCheck::Forged;
        };
        if raw.len() != RAW_LEN {
            return NonceCheck::Forged;
        }
        let mac = self.mac(&raw[..16]);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&mac[..], &raw[16..])) {
            return NonceCheck::Forged;
        }
        let field =
            |r: std::ops::Range<usize>| raw[r].iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
        let (issued, index, tag) = (field(0..8), field(8..12) as u32, field(12..16));
        if now.saturating_sub(issued) > lifetime || issued > now + 60 {
            return NonceCheck::Stale;
        }
        let slot = self.slot(index);
        let mut current = slot.load(Ordering::Acquire);
        loop {
            if current >> 32 != tag {
                return NonceCheck::Stale;
            }
            if u64::from(nc) <= current & 0xffff_ffff {
                return NonceCheck::Replayed;
            }
            match slot.compare_exchange_weak(
                current,
                tag << 32 | u64::from(nc),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return NonceCheck::Valid,
                Err(seen) => current = seen,
            }
        }
    }
}

impl Drop for NonceStore {
    fn drop(&mut self) {
        // SAFETY: the mapping made in open, unmapped once.
        let _ = unsafe { nix::sys::mman::munmap(self.base.cast(), SIZE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (OwnedFd, NonceStore) {
        let fd = create().unwrap();
        let s = NonceStore::open(&fd).unwrap();
        (fd, s)
    }

    #[test]
    fn a_nonce_is_valid_once_per_count_and_counts_must_rise() {
        let (_fd, s) = store();
        let n = s.issue(1000);
        assert_eq!(s.check(&n, 1, 1001, 300), NonceCheck::Valid);
        assert_eq!(s.check(&n, 1, 1001, 300), NonceCheck::Replayed);
        assert_eq!(s.check(&n, 3, 1001, 300), NonceCheck::Valid);
        assert_eq!(s.check(&n, 2, 1001, 300), NonceCheck::Replayed);
        assert_eq!(s.check(&n, 0, 1001, 300), NonceCheck::Replayed);
    }

    #[test]
    fn a_nonce_expires_after_its_lifetime() {
        let (_fd, s) = store();
        let n = s.issue(1000);
        assert_eq!(s.check(&n, 1, 1301, 300), NonceCheck::Stale);
        assert_eq!(s.check(&n, 1, 1300, 300), NonceCheck::Valid);
    }

    #[test]
    fn another_mapping_of_the_same_file_sees_the_same_nonces() {
        // What two workers of one pool do: map the file the master made.
        let (fd, a) = store();
        let b = NonceStore::open(&fd).unwrap();
        let n = a.issue(50);
        assert_eq!(b.check(&n, 1, 50, 300), NonceCheck::Valid);
        assert_eq!(a.check(&n, 1, 50, 300), NonceCheck::Replayed);
    }

    #[test]
    fn another_pool_rejects_the_nonce_and_tampering_is_detected() {
        let (_fd, a) = store();
        let (_fd2, other) = store();
        let n = a.issue(50);
        assert_eq!(other.check(&n, 1, 50, 300), NonceCheck::Forged);
        // Move the issue time forward by one second: the MAC breaks.
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&n)
            .unwrap();
        raw[7] ^= 1;
        let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(a.check(&tampered, 1, 50, 300), NonceCheck::Forged);
        assert_eq!(a.check("short", 1, 50, 300), NonceCheck::Forged);
        assert_eq!(a.check("!!!", 1, 50, 300), NonceCheck::Forged);
    }

    #[test]
    fn a_reused_slot_makes_the_old_nonce_stale() {
        let (_fd, s) = store();
        let first = s.issue(10);
        for _ in 0..SLOTS {
            s.issue(10);
        }
        assert_eq!(s.check(&first, 1, 10, 300), NonceCheck::Stale);
    }

    #[test]
    fn a_file_of_the_wrong_size_is_refused() {
        let f = tempfile::tempfile().unwrap();
        assert!(NonceStore::open(&f).is_err());
    }
}
