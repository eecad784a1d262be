//! Where a worker's Python threads take work: one epoll instance holding
//! the pool's listening sockets, the connections waiting for their next
//! request, and a wake-up for requests handed over by the I/O thread. The
//! thread that takes a piece of work serves it itself, with no hand-off.
//!
//! - One free thread at a time waits here (the leader); while requests run,
//!   only when the GIL is left idle or the last request is old. The other
//!   free threads wait in `net::gate`, which says why and when. A thread
//!   that finishes a request looks here for the next one itself, without
//!   waiting and with the GIL it holds ([`Hub::poll`]).
//! - A worker accepts a connection only when a thread of it is free to take
//!   it: the leader, or a thread just done with a request. The listeners
//!   are registered `EPOLLEXCLUSIVE`, so the kernel wakes a waiting
//!   worker's leader rather than every worker, and none in a worker with
//!   no leader: connections wait in the listen queue for whoever is free
//!   first. While they do, the listen queues and the connections already
//!   held take turns (`net::turns`), so a new connection does not wait
//!   behind a round of every ready kept connection.
//! - Reading a request head happens here, without the GIL. A connection
//!   whose head is incomplete is parked (`EPOLLONESHOT`) until more bytes
//!   come: a stalled client holds no thread (SPEC §2).
//! - Kept FastCGI connections are parked the same way between requests.
//! - A thread done with a request polls for several events at once; ready
//!   connections beyond the one it takes wait in a list for the next free
//!   thread, which looks there before it waits ([`Hub::hold_ready`]).
//! - The I/O thread closes parked connections past their deadline
//!   ([`Hub::sweep`]): the head deadline (`--header-timeout`) and the idle
//!   deadline of kept connections (`--keepalive-timeout`).
//!
//! Python is never touched here; [`Hub::wait`] blocks and must be called
//! with the GIL released; [`Hub::poll`] never blocks or sleeps, as it runs
//! with the GIL held.

use crate::config::model::Protocol;
use crate::exchange::{Peer, Request};
use crate::net::direct::{ConnSettings, DirectConn, Fill, Step};
use crate::net::gate::{self, Gate, Next, PythonThreads, Seen};
use crate::net::sys;
use crate::net::turns::Turns;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, error, warn};

/// A listening socket served from the hub.
#[derive(Debug)]
pub struct HubListener {
    pub fd: OwnedFd,
    pub protocol: Protocol,
    pub tcp: bool,
}

/// What a free thread gets from [`Hub::wait`].
#[derive(Debug)]
pub enum Work {
    /// A connection with a complete request head: serve it directly.
    Conn(Ready),
    /// A request the I/O thread read (multiplexed FastCGI, the HTTP
    /// listener), with its channel exchange.
    Request(Box<Request>),
    /// The worker is stopping.
    Stop,
}

/// A connection and the request it has to serve now.
#[derive(Debug)]
pub struct Ready {
    pub conn: Box<DirectConn>,
    pub head: crate::proto::RequestHead,
    pub meta: crate::exchange::RequestMeta,
}

/// What the Python threads hand to the I/O thread.
#[derive(Debug)]
pub enum IoTask {
    /// Several FastCGI requests at once on this connection.
    Multiplex(Box<DirectConn>),
    /// Close after reading what the front end still sends, for a while.
    Linger(Box<DirectConn>),
}

/// At most this many events per [`Hub::poll`].
const POLL_EVENTS: usize = 4;

/// How long the leader waits in `epoll_wait` before it looks at whether
/// the worker stops.
const LEADER_WAIT: Duration = Duration::from_secs(1);

/// Runs its closure if dropped while unwinding (forgotten otherwise).
struct Unwinding<F: FnMut()>(F);

impl<F: FnMut()> Drop for Unwinding<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Tag bits of an epoll event's data word.
const TAG_WAKE: u64 = 1 << 62;
const TAG_LISTENER: u64 = 2 << 62;
const TAG_PARKED: u64 = 3 << 62;
const TAG_MASK: u64 = 3 << 62;

/// The one-shot event a parked connection's next bytes (or its peer's
/// hang-up) bring, for the key of its slot in the parked table.
fn parked_event(key: u64) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT,
        TAG_PARKED | key,
    )
}

/// Why a connection is parked, and until when.
#[derive(Debug)]
struct Parked {
    conn: Box<DirectConn>,
    deadline: Instant,
    /// Between requests (true) or in the middle of a head (false).
    idle: bool,
    since: Instant,
    /// When the I/O thread first saw bytes waiting on it while every
    /// thread was busy ([`Hub::look_at_waiting`]).
    waiting: Option<SystemTime>,
}

/// A retiring worker closes a kept connection once the front end has left
/// it idle this long: front ends reuse their most recently used
/// connections first (nginx's keepalive cache is a stack), so one idle
/// this long has dropped out of use, and closing it races with nothing.
pub const RETIRE_IDLE: Duration = Duration::from_secs(1);

/// Parked connections by slot; a slot's generation changes on each reuse,
/// so a stale event for a closed connection never reaches a new one.
#[derive(Debug, Default)]
struct ParkedTable {
    slots: Vec<(u32, Option<Parked>)>,
    free: Vec<u32>,
    count: usize,
}

impl ParkedTable {
    fn insert(&mut self, p: Parked) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.0 = slot.0.wrapping_add(1) & 0x3fff_ffff;
        slot.1 = Some(p);
        self.count += 1;
        (u64::from(slot.0) << 32) | u64::from(index)
    }

    /// Every parked connection with its key.
    fn entries(&self) -> impl Iterator<Item = (u64, &Parked)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, (generation, p))| {
                Some(((u64::from(*generation) << 32) | i as u64, p.as_ref()?))
            })
    }

    fn get(&self, key: u64) -> Option<&Parked> {
        let (generation, p) = self.slots.get((key & 0xffff_ffff) as usize)?;
        (*generation == ((key >> 32) & 0x3fff_ffff) as u32).then_some(p.as_ref()?)
    }

    fn take(&mut self, key: u64) -> Option<Parked> {
        let index = (key & 0xffff_ffff) as usize;
        let generation = ((key >> 32) & 0x3fff_ffff) as u32;
        let slot = self.slots.get_mut(index)?;
        if slot.0 != generation {
            return None;
        }
        let p = slot.1.take()?;
        self.free.push(index as u32);
        self.count -= 1;
        Some(p)
    }
}

/// Settings of the hub itself.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub conn: Arc<ConnSettings>,
    /// At most this many connections at once (`--max-connections`).
    pub max_connections: usize,
    /// TCP peers allowed to connect; empty means any (SPEC §4
    /// `--allowed-clients`: an open FastCGI port is remote code execution).
    pub allowed_clients: Vec<IpAddr>,
}

pub struct Hub {
    epoll: Epoll,
    wake: EventFd,
    listeners: Vec<HubListener>,
    /// Per listener: accepted sockets need TCP_NODELAY set (Linux copies
    /// it from a listener that has it, as the ones the master binds do).
    set_nodelay: Vec<bool>,
    settings: HubSettings,
    parked: Mutex<ParkedTable>,
    /// Which free thread waits here, and when another may (`net::gate`).
    gate: Mutex<Gate>,
    followers: Condvar,
    /// The Python threads, for the gate's looks.
    python_threads: Mutex<PythonThreads>,
    jobs: Mutex<VecDeque<Box<Request>>>,
    queued: AtomicUsize,
    /// Parked connections a poll found ready beyond the one it took
    /// (their one-shot events spent), for the next free thread: one
    /// `epoll_wait` serves several requests. Keys of the parked table; a
    /// key whose connection left the table meanwhile is skipped.
    held_ready: Mutex<VecDeque<u64>>,
    /// Its length, read without the lock on every look for work.
    held_ready_len: AtomicUsize,
    /// Open connections of this worker (parked, served, lingering).
    conns: Arc<AtomicUsize>,
    /// The listeners are in the epoll set.
    accepting: Mutex<bool>,
    /// The same, read without the lock on every wait.
    accepting_now: AtomicBool,
    /// The gate's count of running threads, read without its lock.
    running_now: AtomicUsize,
    /// Whether the listen queues or the held connections go next
    /// (`net::turns`), as [`Turns::to_bits`].
    turns: AtomicU8,
    /// No more accepting: retiring, recycling or stopping.
    closed: AtomicBool,
    /// Kept connections close after their answer.
    retiring: AtomicBool,
    stopping: AtomicBool,
    io: tokio::sync::mpsc::UnboundedSender<IoTask>,
    /// Counts accepted connections for `/status`.
    board: Option<Arc<crate::scoreboard::WorkerSlot>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub over `listeners` (non-blocking, close-on-exec); connections
    /// for the I/O thread go to `io`.
    pub fn new(
        listeners: Vec<HubListener>,
        settings: HubSettings,
        io: tokio::sync::mpsc::UnboundedSender<IoTask>,
        board: Option<Arc<crate::scoreboard::WorkerSlot>>,
    ) -> io::Result<Hub> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_SEMAPHORE,
        )?;
        epoll.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, TAG_WAKE))?;
        let set_nodelay = listeners
            .iter()
            .map(|l| {
                l.tcp
                    && !nix::sys::socket::getsockopt(&l.fd, nix::sys::socket::sockopt::TcpNoDelay)
                        .unwrap_or(false)
            })
            .collect();
        let hub = Hub {
            epoll,
            wake,
            set_nodelay,
            listeners,
            settings,
            parked: Mutex::new(ParkedTable::default()),
            gate: Mutex::new(Gate::new(Instant::now())),
            followers: Condvar::new(),
            python_threads: Mutex::new(PythonThreads::default()),
            jobs: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            held_ready: Mutex::new(VecDeque::new()),
            held_ready_len: AtomicUsize::new(0),
            conns: Arc::new(AtomicUsize::new(0)),
            accepting: Mutex::new(false),
            accepting_now: AtomicBool::new(false),
            running_now: AtomicUsize::new(0),
            turns: AtomicU8::new(0),
            closed: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            io,
            board,
        };
        hub.set_accepting(true);
        Ok(hub)
    }

    /// Adds or removes the listeners from the epoll set.
    fn set_accepting(&self, on: bool) {
        let Ok(mut accepting) = self.accepting.lock() else {
            return;
        };
        let on = on && !self.closed.load(Ordering::Acquire);
        if *accepting == on {
            return;
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let r = if on {
                // EPOLLEXCLUSIVE: a new connection wakes one waiting worker,
                // not all of them, and not one with no thread waiting.
                self.epoll.add(
                    &l.fd,
                    EpollEvent::new(
                        EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
                        TAG_LISTENER | i as u64,
                    ),
                )
            } else {
                self.epoll.delete(&l.fd)
            };
            if let Err(e) = r {
                error!(
                    "cannot {} a {} listener: {e}",
                    if on { "watch" } else { "unwatch" },
                    l.protocol
                );
            }
        }
        *accepting = on;
        self.accepting_now.store(on, Ordering::Release);
    }

    /// Requests run and no thread waits here: what arrives waits unseen,
    /// so the worker counts as saturated (`net::gate`).
    pub fn waiting_unseen(&self) -> bool {
        self.gate().waiting_unseen()
    }

    /// Another thread runs a request too: a finishing thread lets the GIL
    /// go before it looks for more, so that they take turns at request
    /// boundaries rather than at the interpreter's forced switches.
    pub fn others_running(&self) -> bool {
        self.running_now.load(Ordering::Relaxed) > 1
    }

    fn python_threads(&self) -> MutexGuard<'_, PythonThreads> {
        self.python_threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A Python thread that will wait here: whether it runs tells whether
    /// the GIL is idle (`net::gate`).
    pub fn register_thread(&self) {
        self.python_threads().add_this_thread();
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        // Plain counts and flags: a panic elsewhere leaves them usable.
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the next piece of work, and says when it came. Blocks:
    /// call without the GIL.
    pub fn wait(&self) -> (Work, Instant) {
        if !self.lead() {
            return (Work::Stop, Instant::now());
        }
        // A bug that unwinds the leader must not leave the worker with a
        // leader that will never come back.
        let resign = Unwinding(|| {
            self.gate().resign();
            self.followers.notify_one();
        });
        let work = self.wait_as_leader();
        std::mem::forget(resign);
        let now = Instant::now();
        let wake_one = {
            let mut gate = self.gate();
            let wake_one = if matches!(work, Work::Stop) {
                gate.resign();
                false
            } else {
                gate.took(now)
            };
            self.running_now.store(gate.running(), Ordering::Relaxed);
            wake_one
        };
        if wake_one {
            self.followers.notify_one();
        }
        (work, now)
    }

    /// Waits until this thread may wait in the hub (`net::gate`); false
    /// when the worker stops.
    fn lead(&self) -> bool {
        let mut look: Option<(Instant, Duration)> = None;
        let mut gate = self.gate();
        // Nothing runs and nobody leads (a worker between requests): lead
        // without reading the clock.
        if !self.stopping.load(Ordering::Acquire) && gate.lead_if_free() {
            return true;
        }
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            let mut now = Instant::now();
            let mut seen = Seen::Nothing;
            if let Some((since, before)) = look.take() {
                // Measured without the gate's lock: a thread finishing a
                // request takes it with the GIL held.
                drop(gate);
                seen = self.gil_seen(since, before, now);
                gate = self.gate();
                now = Instant::now();
            }
            match gate.next(now, seen) {
                Next::Lead => return true,
                Next::Look { measure, after } => {
                    if measure {
                        // The same: a woken follower that missed a
                        // wake-up here looks again within `after`.
                        drop(gate);
                        look = self.python_threads().cpu().map(|c| (Instant::now(), c));
                        gate = self.gate();
                    }
                    gate = self
                        .followers
                        .wait_timeout(gate, after)
                        .map_or_else(|e| e.into_inner().0, |(g, _)| g);
                    gate.woke(true);
                }
                Next::Sleep => {
                    gate = self
                        .followers
                        .wait(gate)
                        .unwrap_or_else(PoisonError::into_inner);
                    gate.woke(false);
                }
            }
        }
    }

    /// What the Python threads did with the GIL from `since` to `now`
    /// (they had used `before` of CPU time then).
    fn gil_seen(&self, since: Instant, before: Duration, now: Instant) -> Seen {
        let threads = self.python_threads();
        let Some(cpu) = threads.cpu() else {
            return Seen::Nothing;
        };
        let wall = now.saturating_duration_since(since);
        gate::gil_seen(since, wall, cpu.saturating_sub(before), || {
            threads.other_runnable()
        })
    }

    fn wait_as_leader(&self) -> Work {
        let mut events = [MaybeUninit::uninit(); 1];
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return Work::Stop;
            }
            if let Some(work) = self.take_first(true) {
                return work;
            }
            let data = match sys::epoll_wait(self.epoll.0.as_fd(), &mut events, LEADER_WAIT) {
                Ok(mut ready) => ready.next(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if let Some(work) = data.and_then(|data| self.take(data, true)) {
                return work;
            }
        }
    }

    /// The work an epoll event brings, if any; `back_off`: see
    /// [`Hub::accept`].
    fn take(&self, data: u64, back_off: bool) -> Option<Work> {
        match data & TAG_MASK {
            TAG_LISTENER => {
                let mut found = false;
                let work = self.accept((data & !TAG_MASK) as usize, back_off, &mut found);
                self.turned(|t| t.after_accept(found));
                work
            }
            TAG_PARKED => {
                let work = self.resume(data & !TAG_MASK);
                if work.is_some() {
                    self.held_served();
                }
                work
            }
            _ => None,
        }
    }

    /// Steps whose turn it is. Not one atomic update: two threads racing
    /// here change only whose turn is next, never what the epoll set holds.
    fn turned(&self, step: impl FnOnce(Turns) -> Turns) {
        let now = Turns::from_bits(self.turns.load(Ordering::Relaxed));
        let next = step(now);
        if next != now {
            self.turns.store(next.to_bits(), Ordering::Relaxed);
        }
    }

    /// Work came from a held connection: the listen queues go next, if an
    /// accept lately found them non-empty (`net::turns`).
    fn held_served(&self) {
        self.turned(Turns::after_held);
    }

    /// The listen queues' turn (`net::turns`): an accept on each listener
    /// in order, until one brings work, before the held connections are
    /// looked at again. (The I/O thread's queued requests, from a
    /// multiplexing front end or the HTTP listener, still come first.)
    fn backlog_in_turn(&self, back_off: bool) -> Option<Work> {
        if !Turns::from_bits(self.turns.load(Ordering::Relaxed)).backlog_first() {
            return None;
        }
        let mut found = false;
        let mut work = None;
        for index in 0..self.listeners.len() {
            // An accept may have reached --max-connections, or the worker
            // stopped accepting meanwhile.
            if !self.accepting_now.load(Ordering::Acquire) {
                break;
            }
            work = self.accept(index, back_off, &mut found);
            if work.is_some() {
                break;
            }
        }
        self.turned(|t| t.after_accept(found));
        work
    }

    /// The next piece of work if it is there now, without waiting, for a
    /// thread that has just finished a request: it serves it with the GIL
    /// it holds (`net::gate`). Never blocks or sleeps: the GIL may be held.
    /// None: the thread is free again and goes to [`Hub::wait`].
    pub fn poll(&self) -> Option<Work> {
        // A bug that unwinds here must not leave the thread counted as
        // running for good.
        let done = Unwinding(|| self.gate().done());
        let work = if self.stopping.load(Ordering::Acquire) {
            None
        } else {
            self.poll_once()
        };
        std::mem::forget(done);
        let mut gate = self.gate();
        match work {
            Some(_) => gate.took_more(Instant::now()),
            None => gate.done(),
        }
        self.running_now.store(gate.running(), Ordering::Relaxed);
        work
    }

    fn poll_once(&self) -> Option<Work> {
        // No back-off sleep here: the GIL may be held.
        if let Some(work) = self.take_first(false) {
            return Some(work);
        }
        // A few events at most, in one call: a flood of connections that
        // bring no work (refused, parked half-read) is the leader's to
        // drain, not the GIL holder's.
        let mut events = [MaybeUninit::uninit(); POLL_EVENTS];
        let mut ready: [u64; POLL_EVENTS] = [0; POLL_EVENTS];
        let found = match sys::epoll_wait(self.epoll.0.as_fd(), &mut events, Duration::ZERO) {
            Ok(data) => ready.iter_mut().zip(data).map(|(r, d)| *r = d).count(),
            Err(_) => return None,
        };
        let mut work = None;
        let mut rest = ready[..found].iter();
        for &data in rest.by_ref() {
            work = match data & TAG_MASK {
                // A job, or the worker stopping (then the leader sees it).
                TAG_WAKE => self.take_job().map(Work::Request),
                // No back-off sleep here: the GIL may be held.
                _ => self.take(data, false),
            };
            if work.is_some() {
                break;
            }
        }
        // Listeners and the wake-up are level-triggered: they come again,
        // but a ready listen queue goes before the connections held here
        // (`net::turns`). Parked connections are one-shot: held, or armed
        // again.
        let rest = rest.as_slice();
        if rest.iter().any(|d| d & TAG_MASK == TAG_LISTENER) {
            self.turned(Turns::listener_ready);
        }
        self.hold_ready(rest.iter().copied().filter(|d| d & TAG_MASK == TAG_PARKED));
        work
    }

    /// Keeps ready parked connections (their one-shot events spent) for the
    /// next free thread, or arms them again if a leader waits in the hub
    /// and would not look at them (`Gate::may_hold_ready`).
    fn hold_ready(&self, keys: impl Iterator<Item = u64>) {
        let mut keys = keys.peekable();
        if keys.peek().is_none() {
            return;
        }
        {
            // Under the gate's lock: a thread that leads after this sees
            // what is held before it waits (`Hub::take_first`).
            let gate = self.gate();
            if gate.may_hold_ready() {
                let mut held = self
                    .held_ready
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                held.extend(keys);
                self.held_ready_len.store(held.len(), Ordering::Release);
                return;
            }
        }
        let table = self.parked.lock().unwrap_or_else(PoisonError::into_inner);
        for data in keys {
            let key = data & !TAG_MASK;
            let Some(p) = table.get(key) else {
                continue;
            };
            if let Err(e) = self.epoll.modify(p.conn.fd(), &mut parked_event(key)) {
                error!("cannot watch a parked connection again: {e}");
            }
        }
    }

    /// The next held ready connection's work, if one brings any.
    fn take_held_ready(&self, back_off: bool) -> Option<Work> {
        while self.held_ready_len.load(Ordering::Acquire) > 0 {
            let data = {
                let mut held = self
                    .held_ready
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let data = held.pop_front();
                self.held_ready_len.store(held.len(), Ordering::Release);
                data?
            };
            if let Some(work) = self.take(data, back_off) {
                return Some(work);
            }
        }
        None
    }

    /// What a free thread takes before it looks at the epoll set: a
    /// request the I/O thread queued, then the listen queues if it is
    /// their turn (`net::turns`), then a connection an earlier poll found
    /// ready ([`Hub::hold_ready`]). `back_off`: see [`Hub::accept`].
    fn take_first(&self, back_off: bool) -> Option<Work> {
        if let Some(job) = self.take_job() {
            return Some(Work::Request(job));
        }
        self.maybe_resume_accepting();
        self.backlog_in_turn(back_off)
            .or_else(|| self.take_held_ready(back_off))
    }

    /// A request the I/O thread queued; taking one counts as work from a
    /// held connection (`net::turns`).
    fn take_job(&self) -> Option<Box<Request>> {
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        // The eventfd counts queued jobs (semaphore mode): whoever reads a
        // unit owns one job.
        self.wake.read().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let job = self.jobs.lock().ok()?.pop_front();
        if job.is_some() {
            self.held_served();
        }
        job
    }

    /// Queues a request for the next free thread (from the I/O thread).
    pub fn push(&self, request: Box<Request>) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.push_back(request);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.wake.write(1) {
            error!("cannot wake a thread for a queued request: {e}");
        }
    }

    fn maybe_resume_accepting(&self) {
        if self.closed.load(Ordering::Relaxed) || self.accepting_now.load(Ordering::Acquire) {
            return;
        }
        if self.conns.load(Ordering::Relaxed) < self.settings.max_connections {
            self.set_accepting(true);
        }
    }

    /// Accepts one connection from listener `index`, and the work it
    /// brings if its request head is there; `found` becomes true if the
    /// queue had one. `back_off`: sleep a little after a failure such as
    /// EMFILE (only without the GIL).
    fn accept(&self, index: usize, back_off: bool, found: &mut bool) -> Option<Work> {
        let listener = self.listeners.get(index)?;
        let (fd, peer) = match sys::accept(listener.fd.as_fd()) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                // It left the queue all the same: counted, or the
                // connections behind it would be dated too early.
                self.count_taken(index);
                *found = true;
                return None;
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("accept on a {} listener failed: {e}", listener.protocol);
                if back_off {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return None;
            }
        };
        *found = true;
        self.count_taken(index);
        let conn = self.admit(index, fd, peer)?;
        self.advance(conn)
    }

    /// Counts a connection taken off listener `index`'s queue, for the
    /// pool's dating of the ones still waiting (`net::backlog`); returns
    /// how many the pool had taken before.
    fn count_taken(&self, index: usize) -> Option<u64> {
        self.board.as_ref()?.taken_from(index)
    }

    /// A connection just accepted on listener `index` becomes this
    /// worker's, or is refused (`--allowed-clients`).
    fn admit(&self, index: usize, fd: OwnedFd, peer: Peer) -> Option<Box<DirectConn>> {
        let listener = self.listeners.get(index)?;
        if let Peer::Tcp(addr) = peer {
            if !allowed(&self.settings.allowed_clients, addr.ip()) {
                warn!(peer = %peer, proto = %listener.protocol, "refusing a connection from an address not in --allowed-clients");
                return None;
            }
            if self.set_nodelay.get(index).copied().unwrap_or(true) {
                let _ =
                    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::TcpNoDelay, &true);
            }
        }
        if let Some(board) = &self.board {
            board.accepted();
        }
        let open = self.conns.fetch_add(1, Ordering::AcqRel) + 1;
        if open >= self.settings.max_connections {
            warn!(
                "{open} connections open, the most --max-connections allows: accepting again once one closes"
            );
            self.set_accepting(false);
        }
        Some(DirectConn::new(
            fd,
            peer,
            listener.protocol,
            self.settings.conn.clone(),
            Some(self.conns.clone()),
        ))
    }

    /// Takes the connection at the head of listener `index`'s queue for
    /// the I/O thread to refuse or [`Hub::adopt`] (`net::backlog`,
    /// `net::overflow`), with how many the pool had taken before it.
    /// Connections from peers not in `--allowed-clients` are closed here.
    pub fn take_waiting(&self, index: usize) -> Option<(OwnedFd, Peer, u64)> {
        let listener = self.listeners.get(index)?;
        let (fd, peer) = sys::accept(listener.fd.as_fd()).ok()?;
        let before = self.count_taken(index).unwrap_or(0);
        if let Peer::Tcp(addr) = peer {
            if !allowed(&self.settings.allowed_clients, addr.ip()) {
                warn!(peer = %peer, proto = %listener.protocol, "refusing a connection from an address not in --allowed-clients");
                return None;
            }
        }
        Some((fd, peer, before))
    }

    /// Serves a connection taken by [`Hub::take_waiting`] after all: parked
    /// until a free thread takes it (its bytes are there, so at once).
    pub fn adopt(&self, fd: OwnedFd, peer: Peer, index: usize) {
        if let Some(conn) = self.admit(index, fd, peer) {
            self.park(conn, false);
        }
    }

    /// Whether a new connection's front end closed it while its request
    /// waited in a listen queue: looked at only while the pool's watcher
    /// has seen requests waiting there, as it costs a system call.
    fn gave_up_waiting(&self, conn: &DirectConn) -> bool {
        let Some(seen) = self.board.as_ref().and_then(|b| b.backlog_seen()) else {
            return false;
        };
        let now = crate::net::backlog::clock_ms();
        crate::net::backlog::backlog_recent(seen, now)
            && sys::peer_hung_up(conn.fd(), matches!(conn.peer, Peer::Tcp(_)))
    }

    fn resume(&self, key: u64) -> Option<Work> {
        let mut parked = self.parked.lock().ok()?.take(key)?;
        if let Some(at) = parked.waiting {
            parked.conn.waiting_since(at);
        }
        self.advance(parked.conn)
    }

    /// Reads until the connection has a complete request head (work for
    /// the caller), must wait for more bytes (parked), or is over.
    fn advance(&self, mut conn: Box<DirectConn>) -> Option<Work> {
        loop {
            match conn.next_request() {
                Step::Ready(..) if conn.served == 0 && self.gave_up_waiting(&conn) => {
                    debug!(peer = %conn.peer, proto = %conn.protocol, "the front end closed the connection while its request waited for a thread; not running it");
                    return None;
                }
                Step::Ready(head, meta) => return Some(Work::Conn(Ready { conn, head, meta })),
                Step::NeedMore => {}
                Step::Multiplexed => {
                    self.to_io(IoTask::Multiplex(conn));
                    return None;
                }
                Step::Close => return None,
            }
            match conn.fill() {
                Ok(Fill::Data) => continue,
                Ok(Fill::WouldBlock) => {
                    // Between requests of a kept connection: the idle
                    // deadline. A new connection, or a head half there: the
                    // head's.
                    let idle = conn.served > 0 && !conn.has_partial_head();
                    self.park(conn, idle);
                    return None;
                }
                Ok(Fill::Eof) => {
                    if conn.has_partial_head() {
                        warn!(peer = %conn.peer, proto = %conn.protocol, "connection closed before the request head was complete");
                    }
                    return None;
                }
                Err(e) => {
                    debug!(peer = %conn.peer, "read failed: {e}");
                    return None;
                }
            }
        }
    }

    fn to_io(&self, task: IoTask) {
        if let Err(e) = self.io.send(task) {
            debug!("the I/O thread is gone; closing a connection: {e:?}");
        }
    }

    /// Parks a connection until its next bytes (or its deadline).
    pub fn park(&self, mut conn: Box<DirectConn>, idle: bool) {
        let since = Instant::now();
        let deadline = conn.park_deadline(idle, since);
        let first = !conn.registered;
        conn.registered = true;
        // Armed under the table's lock: the sweeper cannot close it in
        // between, and no event can fire before it is in the table.
        let Ok(mut table) = self.parked.lock() else {
            return;
        };
        let key = table.insert(Parked {
            conn,
            deadline,
            idle,
            since,
            waiting: None,
        });
        let mut event = parked_event(key);
        let r = match table.get(key) {
            Some(p) if first => self.epoll.add(p.conn.fd(), event),
            Some(p) => self.epoll.modify(p.conn.fd(), &mut event),
            None => return,
        };
        if let Err(e) = r {
            error!("cannot watch a parked connection: {e}");
            table.take(key);
        }
    }

    /// Closes parked connections past their deadline; when `idle_too`,
    /// every idle kept connection as well (the end of a graceful stop);
    /// when retiring, kept connections idle for [`RETIRE_IDLE`].
    pub fn sweep(&self, idle_too: bool) {
        let now = Instant::now();
        let retiring = self.is_retiring();
        let expired: Vec<Parked> = match self.parked.lock() {
            Ok(mut t) => {
                let keys: Vec<u64> = t
                    .entries()
                    .filter_map(|(key, p)| {
                        let dropped_out = p.idle
                            && (idle_too
                                || (retiring
                                    && now.saturating_duration_since(p.since) >= RETIRE_IDLE));
                        (p.deadline <= now || dropped_out).then_some(key)
                    })
                    .collect();
                keys.into_iter().filter_map(|k| t.take(k)).collect()
            }
            Err(_) => return,
        };
        for p in expired {
            if !p.idle {
                warn!(peer = %p.conn.peer, proto = %p.conn.protocol, "closing a connection that sent no complete request head in time (--socket-timeout, --header-timeout)");
            }
            let _ = self.epoll.delete(p.conn.fd());
        }
    }

    /// While every thread is busy, the I/O thread looks at the parked
    /// connections (one `poll` over all of them): a request arriving on a
    /// kept connection waits there, unseen by the listen queues' watcher.
    /// Each gets the time it was first seen waiting (its queue time counts
    /// from then); a front end that closed one is closed and its request
    /// never started; what has waited `queue_timeout` (non-zero) is taken
    /// out for the caller to answer 503. Returns those and how many
    /// requests wait.
    pub fn look_at_waiting(&self, queue_timeout: Duration) -> (Vec<Box<DirectConn>>, usize) {
        use std::os::fd::AsRawFd;
        let now = SystemTime::now();
        let Ok(mut table) = self.parked.lock() else {
            return (Vec::new(), 0);
        };
        let keys: Vec<(u64, libc::pollfd, bool)> = table
            .entries()
            .map(|(key, p)| {
                let fd = libc::pollfd {
                    fd: p.conn.fd().as_raw_fd(),
                    events: libc::POLLIN | libc::POLLRDHUP,
                    revents: 0,
                };
                (key, fd, matches!(p.conn.peer, Peer::Tcp(_)))
            })
            .collect();
        let mut fds: Vec<libc::pollfd> = keys.iter().map(|k| k.1).collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds; the
        // descriptors belong to connections in the table, which the lock
        // keeps from being closed during the call. No waiting.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        let mut expired = Vec::new();
        let mut waiting = 0;
        if ready <= 0 {
            return (expired, 0);
        }
        for ((key, _, tcp), fd) in keys.iter().zip(&fds) {
            if sys::hung_up(fd.revents, *tcp) {
                if let Some(p) = table.take(*key) {
                    if !p.idle {
                        debug!(peer = %p.conn.peer, proto = %p.conn.protocol, "the front end closed the connection while its request waited for a thread; not running it");
                    }
                    let _ = self.epoll.delete(p.conn.fd());
                }
                continue;
            }
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            let Some(Some(p)) = table
                .slots
                .get_mut((key & 0xffff_ffff) as usize)
                .map(|(_, p)| p.as_mut())
            else {
                continue;
            };
            let since = *p.waiting.get_or_insert(now);
            let waited = now.duration_since(since).unwrap_or_default();
            if !queue_timeout.is_zero() && waited >= queue_timeout {
                expired.extend(self.unpark(&mut table, *key));
            } else {
                waiting += 1;
            }
        }
        (expired, waiting)
    }

    /// Takes out the `n` parked connections whose requests began waiting
    /// last (`--max-queue`: the newest are refused), for the caller to
    /// answer.
    pub fn take_newest_waiting(&self, n: usize) -> Vec<Box<DirectConn>> {
        let Ok(mut table) = self.parked.lock() else {
            return Vec::new();
        };
        let mut waiting: Vec<(SystemTime, u64)> = table
            .entries()
            .filter_map(|(key, p)| Some((p.waiting?, key)))
            .collect();
        waiting.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
        waiting
            .into_iter()
            .take(n)
            .filter_map(|(_, key)| self.unpark(&mut table, key))
            .collect()
    }

    /// Takes a connection out of the table and the epoll set for the I/O
    /// thread, its request dated from when it was seen waiting.
    fn unpark(&self, table: &mut ParkedTable, key: u64) -> Option<Box<DirectConn>> {
        let mut p = table.take(key)?;
        let _ = self.epoll.delete(p.conn.fd());
        p.conn.registered = false;
        if let Some(since) = p.waiting {
            p.conn.waiting_since(since);
        }
        Some(p.conn)
    }

    /// Requests waiting for a thread in the whole pool's workers.
    pub fn pool_waiting(&self) -> u64 {
        self.board.as_ref().map_or(0, |b| b.pool_queued())
    }

    /// Puts back a connection the I/O thread answered for
    /// ([`Hub::look_at_waiting`]), as [`Hub::after`] does for a thread:
    /// a next request already buffered goes to the I/O thread's driver
    /// (no thread is free to serve it, and no byte will wake one), else
    /// parked, closed or lingering.
    pub fn answered(&self, conn: Box<DirectConn>, next: crate::net::direct::After) {
        use crate::net::direct::After;
        match next {
            After::KeepAlive if conn.has_buffered_input() => {
                self.to_io(IoTask::Multiplex(conn));
            }
            After::KeepAlive => self.put_back(conn),
            After::Close => conn.close(),
            After::Linger => self.to_io(IoTask::Linger(conn)),
        }
    }

    /// Parks again a connection the I/O thread looked at and found no
    /// complete request on: idle between requests, else under the head's
    /// deadline.
    pub fn put_back(&self, conn: Box<DirectConn>) {
        let idle = !conn.has_partial_head();
        self.park(conn, idle);
    }

    /// Gives the I/O thread's driver a connection that multiplexes.
    pub fn hand_to_io(&self, conn: Box<DirectConn>) {
        self.to_io(IoTask::Multiplex(conn));
    }

    /// Requests handed to the threads that none has taken yet (multiplexed
    /// FastCGI, the HTTP listener's).
    pub fn jobs_waiting(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Tells `/status` how many requests wait for a thread in this worker.
    pub fn publish_waiting(&self, n: usize) {
        if let Some(board) = &self.board {
            board.set_queued(n as u64);
        }
    }

    /// Connections parked now.
    pub fn parked(&self) -> usize {
        self.parked.lock().map(|t| t.count).unwrap_or(0)
    }

    /// Parked connections in the middle of a request head.
    pub fn parked_heads(&self) -> usize {
        self.parked
            .lock()
            .map(|t| {
                t.slots
                    .iter()
                    .filter(|(_, p)| p.as_ref().is_some_and(|p| !p.idle))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Open connections of this worker.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::Relaxed)
    }

    /// Stops accepting for good (retiring, recycling, stopping).
    pub fn close_listeners(&self) {
        self.closed.store(true, Ordering::Release);
        self.set_accepting(false);
    }

    /// No more accepting. Kept connections go on serving what the front
    /// end sends on them; each closes once the front end has left it idle
    /// for [`RETIRE_IDLE`] (see [`Hub::sweep`]), the rest at the graceful
    /// timeout. Closing a kept connection right after an answer loses
    /// requests: the front end returns it to its cache at `END_REQUEST`
    /// and may send the next request before it sees the close (measured
    /// behind nginx: a few 502s on POSTs per reload).
    pub fn retire(&self) {
        self.close_listeners();
        self.retiring.store(true, Ordering::Release);
        if let Some(board) = &self.board {
            board.set_state(crate::scoreboard::WorkerState::Retiring);
        }
    }

    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire)
    }

    /// Wakes every waiting thread to stop.
    pub fn stop(&self) {
        self.close_listeners();
        self.stopping.store(true, Ordering::Release);
        let _ = self.wake.write(1 << 32);
        // Under the lock: a follower has either not yet looked at
        // `stopping` or is already waiting to be woken.
        let _gate = self.gate();
        self.followers.notify_all();
    }

    /// Hands a connection whose response is over to whatever comes next:
    /// its next request when one is already buffered (served by the same
    /// thread at once), else parked, closed or lingering.
    pub fn after(&self, mut conn: Box<DirectConn>) -> Option<Ready> {
        use crate::net::direct::After;
        match conn.after_response(self.is_retiring()) {
            After::KeepAlive => {
                if conn.has_buffered_input() {
                    return match self.advance(conn) {
                        Some(Work::Conn(ready)) => {
                            self.gate().took_more(Instant::now());
                            Some(ready)
                        }
                        _ => None,
                    };
                }
                // Idle, unless a head's first records are already in
                // the codec (its deadline is the head's, not keepalive's).
                let idle = !conn.has_partial_head();
                self.park(conn, idle);
                None
            }
            After::Close => {
                conn.close();
                None
            }
            After::Linger => {
                self.to_io(IoTask::Linger(conn));
                None
            }
        }
    }
}

impl Hub {
    /// Counts a connection accepted elsewhere (the `--http` listener).
    pub fn count_accepted(&self) {
        if let Some(board) = &self.board {
            board.accepted();
        }
    }

    /// The listeners the hub serves (not the `--http` ones).
    pub fn listeners(&self) -> impl Iterator<Item = (std::os::fd::BorrowedFd<'_>, Protocol)> {
        self.listeners.iter().map(|l| (l.fd.as_fd(), l.protocol))
    }

    /// Counts a connection refused for `--max-queue`.
    pub fn count_queue_full(&self) {
        if let Some(board) = &self.board {
            board.queue_full();
        }
    }

    /// Counts a connection refused for `--queue-timeout` in a listen queue.
    pub fn count_queue_timeout(&self) {
        if let Some(board) = &self.board {
            board.queue_timeout();
        }
    }

    /// Whether the listeners are closed (retiring or stopping).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether `--allowed-clients` lets this TCP peer in.
    pub fn allows(&self, ip: IpAddr) -> bool {
        allowed(&self.settings.allowed_clients, ip)
    }

    /// The connection count new connections share (the HTTP listener's
    /// are not counted).
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }
}

fn allowed(list: &[IpAddr], ip: IpAddr) -> bool {
    if list.is_empty() {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    list.contains(&ip)
}

#[cfg(test)]
mod tests;
