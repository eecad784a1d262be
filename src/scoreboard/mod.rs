//! A shared-memory scoreboard per pool: workers write what they are doing,
//! the master reads it for `/status` and `/metrics` (SPEC §8) and for its
//! own checks (the GIL watchdog's heartbeat against `deadlock-timeout`).
//!
//! The master creates one region per pool (a memfd, as `auth::nonce` does),
//! sized at creation for a number of worker slots and of threads per
//! worker. It gives each worker a slot index ([`Scoreboard::claim`]) and
//! the region's descriptor; the worker maps it ([`WorkerSlot::open`]) and
//! writes only atomics, so the writer side costs a few relaxed or release
//! stores per request: no syscall, no allocation, no lock.
//!
//! **The master never trusts the region.** A tenant's application runs in
//! the worker and can write anything anywhere in it. Every reader function
//! here clamps numbers ([`MAX_COUNTER`]), checks string lengths against
//! their fields, decodes text lossily with control characters escaped, and
//! gives up on a seqlock that never settles after [`SEQLOCK_TRIES`] reads
//! ("unavailable"). The geometry (slots, threads) the master uses is its own
//! copy, never the one in the header. The worst a tenant can do is show
//! wrong numbers for its own pool.
//!
//! What this module does not do: decide anything (deadlock, scaling),
//! format anything (see `status`), or know which process holds a slot
//! (the master keeps pid ↔ slot).
//!
//! Layout (all words are native-endian `u64`, used only through atomics):
//!
//! ```text
//! offset 0                       Header (128 bytes): magic, slots, threads, queued,
//!                                per-listener taken counts, watcher lease, backlog stamp
//! 128 + s × stride               WorkerBlock (512 bytes) of slot s
//! 128 + s × stride + 512 + t×384 ThreadBlock of thread t of slot s
//! stride = 512 + threads × 384
//! ```

#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Mutex;

/// How often a worker's watchdog stamps its heartbeat. A stamp this old
/// or younger proves nothing is wrong: the master allows for it before it
/// judges a GIL held past `--deadlock-timeout`.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The largest region the master will create: a pool is sized from its
/// configuration, and a mistake (a million threads) should fail to start
/// rather than map gigabytes.
pub const MAX_REGION_BYTES: usize = 64 << 20;

/// Every count the reader returns is at most this: 2^53, the largest
/// integer a JSON consumer (JavaScript, jq) reads exactly. A scribbled
/// counter shows as this, never as a wrapped or negative number.
pub const MAX_COUNTER: u64 = 1 << 53;

/// Reads of a thread record whose sequence number keeps changing (or stays
/// odd) before the reader reports it as unavailable: a writer holds it for
/// a few hundred nanoseconds, so more than a handful means a dead or
/// malicious writer, and the master must never spin on it.
pub const SEQLOCK_TRIES: usize = 8;

/// The request id kept per thread, in bytes (longer ones are truncated).
pub const REQUEST_ID_BYTES: usize = 40;
/// The request method kept per thread, in bytes.
pub const METHOD_BYTES: usize = 16;
/// The request URI kept per thread, in bytes: enough to tell requests apart
/// on a status page without holding whole query strings.
pub const URI_BYTES: usize = 256;

/// Upper bounds of the histogram buckets, in microseconds (the last bucket,
/// `+Inf`, is implicit): 0.5 ms … 10 s, Prometheus' defaults with 0.5 ms
/// in front for fast applications.
pub const BUCKET_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
/// Buckets per histogram, `+Inf` included.
pub const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// Listeners per pool whose waiting connections are dated
/// (`net::backlog`); connections on further listeners are dated from
/// when a worker takes them.
pub const BACKLOG_LISTENERS: usize = 8;

const MAGIC: u64 = u64::from_be_bytes(*b"WFPMSB01");
const ID_WORDS: usize = REQUEST_ID_BYTES.div_ceil(8);
const METHOD_WORDS: usize = METHOD_BYTES.div_ceil(8);
const URI_WORDS: usize = URI_BYTES.div_ceil(8);

#[repr(C, align(64))]
struct Header {
    magic: AtomicU64,
    slots: AtomicU64,
    threads: AtomicU64,
    /// Requests of the whole pool waiting for a thread inside its workers;
    /// as a signed count, so a stray decrement reads as 0, not 2^64.
    queued: AtomicU64,
    /// Per listener (the first [`BACKLOG_LISTENERS`]), connections the
    /// pool's workers have taken off its listen queue: served or refused.
    /// With the queue's length, it dates the waiting connections
    /// (`net::backlog`).
    taken: [AtomicU64; BACKLOG_LISTENERS],
    /// Which worker watches the listen queues now, and until when: slot + 1
    /// in the top 16 bits, the lease's end in milliseconds of the host's
    /// monotonic clock below.
    watcher: AtomicU64,
    /// When the watcher last saw a connection waiting in a listen queue
    /// (monotonic milliseconds), 0 when none waited at its last look.
    backlog_seen_ms: AtomicU64,
    _reserved: [AtomicU64; 2],
}

/// One histogram: per-bucket counts (not cumulative: the writer adds to
/// one bucket) and the sum in microseconds. The count is the sum of the
/// buckets, so a reader never sees a count that disagrees with them.
#[repr(C)]
struct HistWords {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

#[repr(C, align(64))]
struct WorkerBlock {
    state: AtomicU64,
    accepted: AtomicU64,
    requests: AtomicU64,
    heartbeat_ms: AtomicU64,
    slow: AtomicU64,
    queue_timeouts: AtomicU64,
    queue_full: AtomicU64,
    last_cpu_us: AtomicU64,
    /// An `i64` stored as its bits.
    last_rss_delta: AtomicU64,
    rss_bytes: AtomicU64,
    /// This worker's share of `Header::queued`, taken back from the pool
    /// count when the worker is reaped with requests still waiting.
    queued: AtomicU64,
    _reserved: [AtomicU64; 5],
    duration: HistWords,
    queue: HistWords,
    gil_wait: HistWords,
}

#[repr(C, align(64))]
struct ThreadBlock {
    /// Seqlock: odd while the thread rewrites the record.
    seq: AtomicU64,
    /// 0 when the thread serves no request.
    started_ms: AtomicU64,
    /// `id_len | method_len << 8 | uri_len << 16`.
    lens: AtomicU64,
    request_id: [AtomicU64; ID_WORDS],
    method: [AtomicU64; METHOD_WORDS],
    uri: [AtomicU64; URI_WORDS],
}

const HEADER_BYTES: usize = std::mem::size_of::<Header>();
const WORKER_BYTES: usize = std::mem::size_of::<WorkerBlock>();
const THREAD_BYTES: usize = std::mem::size_of::<ThreadBlock>();
// The layout the module doc describes; a field added must keep it.
const _: () = assert!(HEADER_BYTES == 128 && WORKER_BYTES == 512 && THREAD_BYTES == 384);

/// The region's size for `slots` workers of `threads` threads each, or
/// None when it would pass [`MAX_REGION_BYTES`].
pub fn region_bytes(slots: usize, threads: usize) -> Option<usize> {
    let stride = THREAD_BYTES
        .checked_mul(threads)?
        .checked_add(WORKER_BYTES)?;
    let total = stride.checked_mul(slots)?.checked_add(HEADER_BYTES)?;
    (slots > 0 && total <= MAX_REGION_BYTES).then_some(total)
}

/// A shared mapping of a whole region.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomics (the block
// structs hold nothing else), from any thread of either process.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: &impl AsFd, len: usize) -> io::Result<Mapping> {
        let size = std::num::NonZeroUsize::new(len).ok_or(io::ErrorKind::InvalidInput)?;
        // SAFETY: a fresh shared mapping of a file at least `len` bytes
        // long (checked by both callers); the pointer stays valid until
        // munmap in Drop.
        let base = unsafe {
            nix::sys::mman::mmap(
                None,
                size,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                fd,
                0,
            )?
        }
        .cast::<u8>();
        Ok(Mapping { base, len })
    }

    /// A block of type `T` at `offset`.
    ///
    /// Callers pass offsets computed from the geometry checked against
    /// `len` at open; the bounds check here makes a mistake a panic-free
    /// None rather than a read outside the mapping.
    fn at<T>(&self, offset: usize) -> Option<&T> {
        let end = offset.checked_add(std::mem::size_of::<T>())?;
        if end > self.len || offset % std::mem::align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: in bounds and aligned (page-aligned base, offset checked
        // above); T is made of AtomicU64 only, for which every bit pattern
        // is valid and which may be shared with other processes (the same
        // reasoning as AtomicU64::from_ptr in auth::nonce).
        Some(unsafe { &*self.base.as_ptr().add(offset).cast::<T>() })
    }

    fn header(&self) -> Option<&Header> {
        self.at(0)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        let _ = unsafe { nix::sys::mman::munmap(self.base.cast(), self.len) };
    }
}

/// Where slot `slot`'s blocks start, for a region of `threads` threads per
/// worker.
fn worker_offset(slot: usize, threads: usize) -> Option<usize> {
    let stride = THREAD_BYTES
        .checked_mul(threads)?
        .checked_add(WORKER_BYTES)?;
    stride.checked_mul(slot)?.checked_add(HEADER_BYTES)
}

fn thread_offset(slot: usize, threads: usize, thread: usize) -> Option<usize> {
    worker_offset(slot, threads)?
        .checked_add(WORKER_BYTES)?
        .checked_add(THREAD_BYTES.checked_mul(thread)?)
}

/// What a worker is doing, as it says.
///
/// Transitions the worker writes: `Starting` (a cleared slot) → `Idle`
/// once the application is loaded → `Retiring` when it stops taking new
/// requests. `Idle` and `Busy` are told apart by the reader from the thread
/// records (a thread serving a request makes the worker busy), so the
/// worker never writes `Busy` on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Starting,
    Idle,
    Busy,
    Retiring,
    /// A value no worker writes: the region was scribbled on.
    Unknown,
}

impl WorkerState {
    fn word(self) -> u64 {
        match self {
            WorkerState::Starting => 0,
            WorkerState::Idle => 1,
            WorkerState::Busy => 2,
            WorkerState::Retiring => 3,
            WorkerState::Unknown => 0xff,
        }
    }

    fn from_word(word: u64) -> WorkerState {
        match word {
            0 => WorkerState::Starting,
            1 => WorkerState::Idle,
            2 => WorkerState::Busy,
            3 => WorkerState::Retiring,
            _ => WorkerState::Unknown,
        }
    }

    /// The name `/status` shows.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Retiring => "retiring",
            WorkerState::Unknown => "unknown",
        }
    }
}

// ------------------------------------------------------------------ writer

/// A worker's view of its pool's region: its own slot to write, and the
/// pool-wide queue count. Cheap to share between threads (`Arc`).
pub struct WorkerSlot {
    map: Mapping,
    slot: usize,
    threads: usize,
    /// This slot's block and the header, checked in bounds at open.
    block: NonNull<WorkerBlock>,
    header: NonNull<Header>,
}

// SAFETY: the pointers point into `map`, which is Send + Sync and lives as
// long as the WorkerSlot; everything behind them is atomic.
unsafe impl Send for WorkerSlot {}
unsafe impl Sync for WorkerSlot {}

/// One Python thread's record of the request it serves now.
pub struct ThreadSlot<'a> {
    block: &'a ThreadBlock,
}

impl WorkerSlot {
    /// Maps the region the master made (see [`Scoreboard::create`]) and
    /// takes slot `slot`. The descriptor is consumed and closed: the
    /// mapping is all the worker keeps, and the mapping is not inherited by
    /// processes the application forks (`MADV_DONTFORK`), so no child can
    /// write into a slot after this worker is gone and the slot reused.
    pub fn open(fd: OwnedFd, slot: usize) -> io::Result<WorkerSlot> {
        let size = nix::sys::stat::fstat(fd.as_fd())?.st_size;
        let size = usize::try_from(size).map_err(|_| io::Error::other("negative file size"))?;
        if size < HEADER_BYTES {
            return Err(io::Error::other(format!(
                "the scoreboard (fd {}) has {size} bytes, too few for its header",
                fd.as_raw_fd()
            )));
        }
        let map = Mapping::map(&fd, size)?;
        drop(fd);
        // SAFETY: the whole mapping just made, advised once; on failure the
        // worker still works (a forked child could write into the slot,
        // which only garbles this pool's numbers).
        let _ = unsafe {
            nix::sys::mman::madvise(
                map.base.cast(),
                map.len,
                nix::sys::mman::MmapAdvise::MADV_DONTFORK,
            )
        };
        let header = map.header().ok_or(io::ErrorKind::InvalidData)?;
        let magic = header.magic.load(Ordering::Relaxed);
        let slots = usize::try_from(header.slots.load(Ordering::Relaxed)).unwrap_or(0);
        let threads = usize::try_from(header.threads.load(Ordering::Relaxed)).unwrap_or(0);
        if magic != MAGIC || region_bytes(slots, threads) != Some(size) {
            return Err(io::Error::other(
                "the scoreboard's header does not match its size",
            ));
        }
        if slot >= slots {
            return Err(io::Error::other(format!(
                "scoreboard slot {slot} is beyond its {slots} slots"
            )));
        }
        let block = worker_offset(slot, threads)
            .and_then(|o| map.at::<WorkerBlock>(o))
            .map(NonNull::from)
            .ok_or(io::ErrorKind::InvalidData)?;
        let header = NonNull::from(header);
        Ok(WorkerSlot {
            map,
            slot,
            threads,
            block,
            header,
        })
    }

    /// Threads per worker the region has records for.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn block(&self) -> &WorkerBlock {
        // SAFETY: made by Mapping::at at open (in bounds, aligned), and the
        // mapping lives as long as self.
        unsafe { self.block.as_ref() }
    }

    fn header(&self) -> &Header {
        // SAFETY: as for `block`.
        unsafe { self.header.as_ref() }
    }

    pub fn set_state(&self, state: WorkerState) {
        self.block().state.store(state.word(), Ordering::Relaxed);
    }

    /// One connection accepted.
    pub fn accepted(&self) {
        self.block().accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// One request handed to the application (counted when it starts, so
    /// that a request stuck forever is counted too).
    pub fn request(&self) {
        self.block().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The GIL watchdog's stamp, in milliseconds since the epoch.
    pub fn heartbeat(&self, now_unix_ms: u64) {
        self.block()
            .heartbeat_ms
            .store(now_unix_ms, Ordering::Relaxed);
    }

    /// One request passed `slow-log-timeout`.
    pub fn slow_request(&self) {
        self.block().slow.fetch_add(1, Ordering::Relaxed);
    }

    /// One request refused with 503 after waiting `queue-timeout`.
    pub fn queue_timeout(&self) {
        self.block().queue_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// One request refused with 503 because `max-queue` were waiting.
    pub fn queue_full(&self) {
        self.block().queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// A finished request's timings, in microseconds: whole duration, time
    /// it waited for a thread, time its thread waited for the GIL.
    pub fn record(&self, duration_us: u64, queue_us: u64, gil_wait_us: u64) {
        let b = self.block();
        add_to(&b.duration, duration_us);
        add_to(&b.queue, queue_us);
        add_to(&b.gil_wait, gil_wait_us);
    }

    /// The CPU time and RSS change of the request that just finished.
    pub fn last_request(&self, cpu_us: u64, rss_delta_bytes: i64) {
        let b = self.block();
        b.last_cpu_us.store(cpu_us, Ordering::Relaxed);
        b.last_rss_delta
            .store(rss_delta_bytes as u64, Ordering::Relaxed);
    }

    /// The worker's resident memory, as it last sampled it.
    pub fn rss(&self, bytes: u64) {
        self.block().rss_bytes.store(bytes, Ordering::Relaxed);
    }

    /// How many requests wait for a thread in this worker now (a request
    /// on a kept connection, a multiplexed one); the pool's count moves by
    /// the change.
    pub fn set_queued(&self, n: u64) {
        let before = signed(&self.block().queued).max(0);
        self.block().queued.store(n, Ordering::Relaxed);
        let change = (n as i64).wrapping_sub(before);
        if change != 0 {
            self.header()
                .queued
                .fetch_add(change as u64, Ordering::AcqRel);
        }
    }

    /// Requests of the whole pool waiting for a thread inside its workers
    /// (the sum of every worker's [`WorkerSlot::set_queued`]).
    pub fn pool_queued(&self) -> u64 {
        signed(&self.header().queued).max(0) as u64
    }

    /// One connection taken off listener `listener`'s queue (served or
    /// refused); returns how many the pool had taken before it.
    pub fn taken_from(&self, listener: usize) -> Option<u64> {
        let word = self.header().taken.get(listener)?;
        Some(word.fetch_add(1, Ordering::AcqRel))
    }

    /// How many connections the pool has taken off listener `listener`.
    pub fn taken(&self, listener: usize) -> Option<u64> {
        Some(self.header().taken.get(listener)?.load(Ordering::Acquire))
    }

    /// Takes or renews the pool's watcher lease until `now_ms + lease_ms`
    /// (the host's monotonic clock); true while this worker holds it. A lease its holder
    /// stopped renewing (a dead or stuck worker) passes to the next asker.
    pub fn watch(&self, now_ms: u64, lease_ms: u64) -> bool {
        let word = &self.header().watcher;
        let me = self.slot as u64 + 1;
        let current = word.load(Ordering::Acquire);
        let (holder, until) = (current >> LEASE_SHIFT, current & LEASE_MS_MASK);
        if holder != me && until >= now_ms {
            return false;
        }
        let mine = (me << LEASE_SHIFT) | (now_ms.saturating_add(lease_ms) & LEASE_MS_MASK);
        word.compare_exchange(current, mine, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Gives the watcher lease up, if this worker holds it (retiring).
    pub fn stop_watching(&self) {
        let word = &self.header().watcher;
        let current = word.load(Ordering::Acquire);
        if current >> LEASE_SHIFT == self.slot as u64 + 1 {
            let _ = word.compare_exchange(current, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// The watcher's look at the listen queues: `Some(now)` when a
    /// connection waited, None when none did.
    pub fn saw_backlog(&self, at_ms: Option<u64>) {
        self.header()
            .backlog_seen_ms
            .store(at_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// When the watcher last saw connections waiting in a listen queue
    /// (None: none at its last look).
    pub fn backlog_seen(&self) -> Option<u64> {
        match self.header().backlog_seen_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// The record of thread `index` (0-based), or None beyond the threads
    /// the region was made for (a reload that raised `threads`: those
    /// threads go unreported rather than write elsewhere).
    pub fn thread(&self, index: usize) -> Option<ThreadSlot<'_>> {
        if index >= self.threads {
            return None;
        }
        let block = self
            .map
            .at(thread_offset(self.slot, self.threads, index)?)?;
        Some(ThreadSlot { block })
    }
}

/// Takes `n` from a signed count without going below zero, so that a
/// stray decrement does not make the next `max-queue` check count one
/// short. A bounded number of compare-and-swap tries: under a storm of
/// writes from another process the count may stay off by `n`, but no caller
/// (the master least of all) ever spins on a word someone else controls.
const LEASE_SHIFT: u32 = 48;
const LEASE_MS_MASK: u64 = (1 << LEASE_SHIFT) - 1;

fn sub_floor_zero(word: &AtomicU64, n: i64) {
    let mut current = word.load(Ordering::Relaxed);
    for _ in 0..SEQLOCK_TRIES {
        let next = (current as i64).saturating_sub(n).max(0) as u64;
        match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    BUCKET_BOUNDS_US
        .iter()
        .position(|&bound| us <= bound)
        .unwrap_or(BUCKETS - 1)
}

fn add_to(h: &HistWords, us: u64) {
    h.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    h.sum_us.fetch_add(us, Ordering::Relaxed);
}

/// Stores `bytes` (at most `words.len() * 8` of them) into `words`.
fn store_text(words: &[AtomicU64], bytes: &[u8]) {
    for (word, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut raw = [0u8; 8];
        raw[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_le_bytes(raw), Ordering::Relaxed);
    }
}

impl ThreadSlot<'_> {
    /// The thread starts serving a request. Longer fields are truncated to
    /// [`REQUEST_ID_BYTES`], [`METHOD_BYTES`], [`URI_BYTES`].
    pub fn begin(&self, request_id: &[u8], method: &[u8], uri: &[u8], started_unix_ms: u64) {
        let id = &request_id[..request_id.len().min(REQUEST_ID_BYTES)];
        let method = &method[..method.len().min(METHOD_BYTES)];
        let uri = &uri[..uri.len().min(URI_BYTES)];
        self.write(|b| {
            store_text(&b.request_id, id);
            store_text(&b.method, method);
            store_text(&b.uri, uri);
            let lens = id.len() as u64 | (method.len() as u64) << 8 | (uri.len() as u64) << 16;
            b.lens.store(lens, Ordering::Relaxed);
            // 0 means idle: a clock at the epoch still shows as busy.
            b.started_ms
                .store(started_unix_ms.max(1), Ordering::Relaxed);
        });
    }

    /// The thread finished its request.
    pub fn end(&self) {
        self.write(|b| {
            b.started_ms.store(0, Ordering::Relaxed);
            b.lens.store(0, Ordering::Relaxed);
        });
    }

    /// The writer half of the seqlock (one writer: this thread).
    fn write(&self, fill: impl FnOnce(&ThreadBlock)) {
        let b = self.block;
        let seq = b.seq.load(Ordering::Relaxed) | 1;
        b.seq.store(seq, Ordering::Relaxed);
        // Orders the odd sequence number before the field stores, for a
        // reader that sees any of them (the reader's Acquire fence pairs).
        fence(Ordering::Release);
        fill(b);
        b.seq.store(seq.wrapping_add(1), Ordering::Release);
    }
}

// ------------------------------------------------------------------ reader

/// A histogram as read: per-bucket counts (not cumulative; bucket `i`
/// holds values ≤ `BUCKET_BOUNDS_US[i]` and above the bound before it, the
/// last one everything above 10 s) and the sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Histogram {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
            .min(MAX_COUNTER)
    }

    /// Cumulative counts, as Prometheus' `le` buckets want them.
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut out = [0u64; BUCKETS];
        let mut total = 0u64;
        for (o, &b) in out.iter_mut().zip(&self.buckets) {
            total = total.saturating_add(b).min(MAX_COUNTER);
            *o = total;
        }
        out
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b).min(MAX_COUNTER);
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us).min(MAX_COUNTER);
    }

    fn read(words: &HistWords) -> Histogram {
        let mut h = Histogram::default();
        for (out, word) in h.buckets.iter_mut().zip(&words.buckets) {
            *out = counter(word);
        }
        h.sum_us = counter(&words.sum_us);
        h
    }
}

/// The monotonic counters of a worker, or of a whole pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub accepted: u64,
    pub requests: u64,
    pub slow_requests: u64,
    pub queue_timeouts: u64,
    pub queue_full: u64,
    pub duration: Histogram,
    pub queue: Histogram,
    pub gil_wait: Histogram,
}

impl Counters {
    fn read(b: &WorkerBlock) -> Counters {
        Counters {
            accepted: counter(&b.accepted),
            requests: counter(&b.requests),
            slow_requests: counter(&b.slow),
            queue_timeouts: counter(&b.queue_timeouts),
            queue_full: counter(&b.queue_full),
            duration: Histogram::read(&b.duration),
            queue: Histogram::read(&b.queue),
            gil_wait: Histogram::read(&b.gil_wait),
        }
    }

    /// Adds `other` in, saturating at [`MAX_COUNTER`].
    pub fn add(&mut self, other: &Counters) {
        let sum = |a: &mut u64, b: u64| *a = a.saturating_add(b).min(MAX_COUNTER);
        sum(&mut self.accepted, other.accepted);
        sum(&mut self.requests, other.requests);
        sum(&mut self.slow_requests, other.slow_requests);
        sum(&mut self.queue_timeouts, other.queue_timeouts);
        sum(&mut self.queue_full, other.queue_full);
        self.duration.add(&other.duration);
        self.queue.add(&other.queue);
        self.gil_wait.add(&other.gil_wait);
    }
}

/// A request a thread is serving, as read (strings checked and escaped).
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentRequest {
    pub thread: usize,
    pub request_id: String,
    pub method: String,
    pub uri: String,
    pub started_unix_ms: u64,
    /// How long it has run, by the reader's clock; 0 if it claims to have
    /// started in the future.
    pub seconds: f64,
}

/// What one thread's record says.
#[derive(Debug, Clone, PartialEq)]
pub enum ThreadActivity {
    Idle,
    Busy(CurrentRequest),
    /// The record never settled within [`SEQLOCK_TRIES`] reads.
    Unavailable,
}

/// A snapshot of one worker slot, in plain owned data.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// As the worker wrote it, with `Idle`/`Busy` decided by its threads.
    pub state: WorkerState,
    pub counters: Counters,
    /// The GIL watchdog's last stamp (ms since the epoch), if any.
    pub heartbeat_unix_ms: Option<u64>,
    /// CPU time of the last finished request, in microseconds.
    pub last_request_cpu_us: u64,
    /// RSS change over the last finished request, in bytes.
    pub last_request_rss_delta: i64,
    /// As the worker last sampled it; None if it never did.
    pub rss_bytes: Option<u64>,
    /// This worker's requests waiting for a thread.
    pub queued: u64,
    /// One entry per thread record.
    pub threads: Vec<ThreadActivity>,
}

impl WorkerStats {
    /// Threads serving a request (an unavailable record counts as busy:
    /// someone is writing it).
    pub fn busy_threads(&self) -> usize {
        self.threads
            .iter()
            .filter(|t| !matches!(t, ThreadActivity::Idle))
            .count()
    }
}

fn counter(word: &AtomicU64) -> u64 {
    word.load(Ordering::Relaxed).min(MAX_COUNTER)
}

/// A signed word clamped to ±[`MAX_COUNTER`].
fn signed(word: &AtomicU64) -> i64 {
    let max = MAX_COUNTER as i64;
    (word.load(Ordering::Relaxed) as i64).clamp(-max, max)
}

/// Reads up to `len` bytes of text stored in `words`.
fn load_text(words: &[AtomicU64], len: usize) -> Vec<u8> {
    let len = len.min(words.len() * 8);
    let mut out = Vec::with_capacity(len);
    for word in words.iter().take(len.div_ceil(8)) {
        out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text from the region made safe to show anywhere: invalid UTF-8 replaced,
/// control characters (which could move a terminal's cursor or forge
/// lines) and bidirectional overrides (which could reorder what an operator
/// reads) escaped as `\xNN` / `\u{NNNN}`.
pub fn clean_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = c as u32;
        let bidi = matches!(code, 0x202A..=0x202E | 0x2066..=0x2069 | 0x200E | 0x200F);
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() && code < 0x100 {
            out.push_str(&format!("\\x{code:02x}"));
        } else if c.is_control() || bidi || code == 0x2028 || code == 0x2029 {
            out.push_str(&format!("\\u{{{code:04x}}}"));
        } else {
            out.push(c);
        }
    }
    out
}

fn read_thread(b: &ThreadBlock, thread: usize, now_unix_ms: u64) -> ThreadActivity {
    for _ in 0..SEQLOCK_TRIES {
        let before = b.seq.load(Ordering::Acquire);
        if before & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let started = b.started_ms.load(Ordering::Relaxed);
        let lens = b.lens.load(Ordering::Relaxed);
        let id = load_text(&b.request_id, (lens & 0xff) as usize);
        let method = load_text(&b.method, (lens >> 8 & 0xff) as usize);
        let uri = load_text(&b.uri, (lens >> 16 & 0xffff) as usize);
        // Orders the field loads before the second sequence load (pairs
        // with the writer's Release fence).
        fence(Ordering::Acquire);
        if b.seq.load(Ordering::Relaxed) != before {
            std::hint::spin_loop();
            continue;
        }
        if started == 0 {
            return ThreadActivity::Idle;
        }
        let started = started.min(now_unix_ms);
        return ThreadActivity::Busy(CurrentRequest {
            thread,
            request_id: clean_text(&id),
            method: clean_text(&method),
            uri: clean_text(&uri),
            started_unix_ms: started,
            seconds: (now_unix_ms - started) as f64 / 1000.0,
        });
    }
    ThreadActivity::Unavailable
}

// ------------------------------------------------------------------ master

struct Book {
    claimed: Vec<bool>,
    /// Counters of the workers already reaped, so that pool totals (and
    /// Prometheus counters) never go down when a worker dies.
    retired: Counters,
}

/// The master's handle on a pool's region: creates it, hands out slots,
/// reads them, and folds a reaped worker's counters into the pool totals.
/// Shareable (`Arc`) between the master's loop and the status server.
pub struct Scoreboard {
    fd: OwnedFd,
    map: Mapping,
    /// The master's own geometry: the header's copy is the workers' to
    /// read and anyone's to scribble on.
    slots: usize,
    threads: usize,
    book: Mutex<Book>,
}

impl Scoreboard {
    /// Creates a region for `slots` workers of `threads` threads each.
    /// Size it for every worker that can be alive at once: during a reload
    /// or a recycle old and new workers overlap, so twice the largest
    /// process count of the pool is a safe choice.
    pub fn create(slots: usize, threads: usize) -> io::Result<Scoreboard> {
        let size = region_bytes(slots, threads).ok_or_else(|| {
            io::Error::other(format!(
                "a scoreboard for {slots} workers of {threads} threads would pass {MAX_REGION_BYTES} bytes"
            ))
        })?;
        let fd = nix::sys::memfd::memfd_create(
            c"wsgi-fpm-scoreboard",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&fd, size as libc::off_t)?;
        let map = Mapping::map(&fd, size)?;
        let header = map.header().ok_or(io::ErrorKind::InvalidData)?;
        header.slots.store(slots as u64, Ordering::Relaxed);
        header.threads.store(threads as u64, Ordering::Relaxed);
        header.magic.store(MAGIC, Ordering::Release);
        Ok(Scoreboard {
            fd,
            map,
            slots,
            threads,
            book: Mutex::new(Book {
                claimed: vec![false; slots],
                retired: Counters::default(),
            }),
        })
    }

    /// The descriptor to pass to workers (as `auth::nonce`'s is passed).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic elsewhere while holding the book leaves plain numbers
        // behind: still good to read.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker_block(&self, slot: usize) -> Option<&WorkerBlock> {
        if slot >= self.slots {
            return None;
        }
        self.map.at(worker_offset(slot, self.threads)?)
    }

    fn thread_block(&self, slot: usize, thread: usize) -> Option<&ThreadBlock> {
        if slot >= self.slots || thread >= self.threads {
            return None;
        }
        self.map.at(thread_offset(slot, self.threads, thread)?)
    }

    /// A free slot, cleared, now reserved for a new worker; None when all
    /// are taken (the worker then runs without a slot and shows no
    /// counters).
    pub fn claim(&self) -> Option<usize> {
        let mut book = self.book();
        let slot = book.claimed.iter().position(|c| !c)?;
        self.clear(slot);
        book.claimed[slot] = true;
        Some(slot)
    }

    /// Whether `slot` is held by a worker.
    pub fn is_claimed(&self, slot: usize) -> bool {
        self.book().claimed.get(slot).copied().unwrap_or(false)
    }

    /// Zeroes a slot and gives back its share of the pool queue.
    fn clear(&self, slot: usize) {
        let Some(block) = self.worker_block(slot) else {
            return;
        };
        let leftover = signed(&block.queued);
        if leftover > 0 {
            if let Some(header) = self.map.header() {
                sub_floor_zero(&header.queued, leftover);
            }
        }
        // The block structs are all AtomicU64: zero them word by word.
        let words = (WORKER_BYTES + self.threads * THREAD_BYTES) / 8;
        if let Some(offset) = worker_offset(slot, self.threads) {
            for i in 0..words {
                if let Some(w) = self.map.at::<AtomicU64>(offset + i * 8) {
                    w.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads slot `slot`; `now_unix_ms` is the master's clock, for how long
    /// current requests have run. None for a slot out of range.
    pub fn read(&self, slot: usize, now_unix_ms: u64) -> Option<WorkerStats> {
        let b = self.worker_block(slot)?;
        let threads: Vec<ThreadActivity> = (0..self.threads)
            .map(|t| match self.thread_block(slot, t) {
                Some(tb) => read_thread(tb, t, now_unix_ms),
                None => ThreadActivity::Unavailable,
            })
            .collect();
        let busy = threads.iter().any(|t| !matches!(t, ThreadActivity::Idle));
        let state = match WorkerState::from_word(b.state.load(Ordering::Relaxed)) {
            WorkerState::Idle | WorkerState::Busy if busy => WorkerState::Busy,
            WorkerState::Idle | WorkerState::Busy => WorkerState::Idle,
            other => other,
        };
        let heartbeat = counter(&b.heartbeat_ms);
        let rss = b.rss_bytes.load(Ordering::Relaxed).min(MAX_COUNTER);
        Some(WorkerStats {
            state,
            counters: Counters::read(b),
            heartbeat_unix_ms: (heartbeat != 0).then_some(heartbeat),
            last_request_cpu_us: counter(&b.last_cpu_us),
            last_request_rss_delta: signed(&b.last_rss_delta),
            rss_bytes: (rss != 0).then_some(rss),
            queued: signed(&b.queued).max(0) as u64,
            threads,
        })
    }

    /// The GIL watchdog's last stamp in `slot` (ms since the epoch): what
    /// the master compares with `deadlock-timeout`, without reading the
    /// whole slot.
    pub fn heartbeat_ms(&self, slot: usize) -> Option<u64> {
        let v = counter(&self.worker_block(slot)?.heartbeat_ms);
        (v != 0).then_some(v)
    }

    /// The worker in `slot` was reaped: folds its counters into the pool's
    /// retired totals, clears the slot and frees it. Returns what it read.
    pub fn take(&self, slot: usize, now_unix_ms: u64) -> Option<WorkerStats> {
        let mut book = self.book();
        if !book.claimed.get(slot).copied().unwrap_or(false) {
            return None;
        }
        let stats = self.read(slot, now_unix_ms)?;
        book.retired.add(&stats.counters);
        self.clear(slot);
        book.claimed[slot] = false;
        Some(stats)
    }

    /// Clears and frees `slot` without counting what it held (a worker that
    /// never started serving).
    pub fn reset(&self, slot: usize) {
        let mut book = self.book();
        if slot < self.slots {
            self.clear(slot);
            book.claimed[slot] = false;
        }
    }

    /// The pool's counters: the reaped workers' plus every claimed slot's.
    pub fn totals(&self) -> Counters {
        let book = self.book();
        let mut total = book.retired;
        for (slot, _) in book.claimed.iter().enumerate().filter(|(_, c)| **c) {
            if let Some(b) = self.worker_block(slot) {
                total.add(&Counters::read(b));
            }
        }
        total
    }

    /// Requests of the pool waiting for a thread now.
    pub fn queued(&self) -> u64 {
        self.map
            .header()
            .map(|h| signed(&h.queued).max(0) as u64)
            .unwrap_or(0)
    }
}
