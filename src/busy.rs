//! How busy a worker is, for the master's dynamic pools
//! (`--max-processes`, `--processes 0`). The worker counts its requests in
//! flight; a few times a second it tells the master when its state changed.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A worker's load as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// No request in flight.
    Idle,
    /// Some threads free.
    Active,
    /// Every thread busy (requests may queue). The worker also reports
    /// busy while its running requests leave no thread waiting for more
    /// (`net::gate`).
    Busy,
}

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::Idle => "idle",
            Load::Active => "active",
            Load::Busy => "busy",
        }
    }

    pub fn parse(name: &str) -> Option<Load> {
        [Load::Idle, Load::Active, Load::Busy]
            .into_iter()
            .find(|l| l.name() == name)
    }
}

/// Requests handed to the Python threads and not yet finished, and a gate
/// that lets a dynamic pool's worker accept a connection only while it has
/// a thread free, so that waiting connections stay in the listen queue
/// for a sibling (or the master's next worker) rather than in this
/// worker's own queue.
#[derive(Debug)]
pub struct Activity {
    count: AtomicUsize,
    /// Connections accepted whose first request has not started yet.
    pending: AtomicUsize,
    threads: usize,
    room: tokio::sync::Notify,
    /// Callers inside [`Activity::room`]: a finish with none skips the
    /// notification (a lock), which is every finish while threads are free.
    waiting: AtomicUsize,
}

/// A thread held for a connection just accepted, until its first request
/// starts (or it closes without one).
#[derive(Debug)]
pub struct Reservation(std::sync::Arc<Activity>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
        self.0.wake_waiting();
    }
}

impl Activity {
    pub fn new(threads: usize) -> Self {
        Activity {
            count: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            threads,
            room: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Holds a thread for a connection just accepted.
    pub fn reserve(self: &std::sync::Arc<Self>) -> Reservation {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Reservation(self.clone())
    }

    pub fn started(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finished(&self) {
        // Every finish may open the gate: it counts reservations too.
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.wake_waiting();
    }

    /// After a count went down: wakes whoever waits in `room`. All of it
    /// sequentially consistent: a waiter registers before it reads the
    /// counts, so either this sees it registered or it sees the new count.
    fn wake_waiting(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Requests started and not finished.
    pub fn in_flight(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Connections waiting for their first request count as load: a gate
    /// shut by them must still make the master add a worker.
    pub fn load(&self) -> Load {
        let held = self.count.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed);
        match held {
            0 => Load::Idle,
            n if n >= self.threads => Load::Busy,
            _ => Load::Active,
        }
    }

    /// Returns once a thread is free.
    pub async fn room(&self) {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a finish in between wakes it.
            notified.as_mut().enable();
            let held = self.count.load(Ordering::SeqCst) + self.pending.load(Ordering::SeqCst);
            if held < self.threads {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_follows_requests_against_threads() {
        let f = Activity::new(2);
        assert_eq!(f.load(), Load::Idle);
        f.started();
        assert_eq!(f.load(), Load::Active);
        f.started();
        assert_eq!(f.load(), Load::Busy);
        f.started();
        assert_eq!(f.load(), Load::Busy, "queued requests");
        f.finished();
        f.finished();
        assert_eq!(f.load(), Load::Active);
        f.finished();
        assert_eq!(f.load(), Load::Idle);
    }

    #[tokio::test]
    async fn room_waits_for_a_free_thread() {
        let a = std::sync::Arc::new(Activity::new(1));
        a.room().await; // free at once
        a.started();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.room().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "room while the only thread is busy");
        a.finished();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("room once the thread is free")
            .unwrap();
        // A connection accepted holds the thread until its request starts.
        let held = a.reserve();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.room().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "room while a connection is pending");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("room once the connection let go")
            .unwrap();
    }

    #[test]
    fn names_round_trip() {
        for l in [Load::Idle, Load::Active, Load::Busy] {
            assert_eq!(Load::parse(l.name()), Some(l));
        }
        assert_eq!(Load::parse("sleepy"), None);
    }
}
