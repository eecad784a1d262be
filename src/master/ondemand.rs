//! `--processes 0` (php-fpm's `ondemand`): while such a pool has no
//! worker, the master watches its listening sockets — without accepting —
//! and reports the first sign of a waiting connection; the state machine
//! then starts a worker. The sockets are registered with the master's
//! event loop only meanwhile, so a busy pool costs the master nothing.

use super::state::Event;
use std::os::fd::OwnedFd;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One task per socket, each ending at the first readable sign.
pub fn watch(pool: &str, listeners: &[OwnedFd], tx: &mpsc::Sender<Event>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for listener in listeners {
        let fd: OwnedFd = match listener.try_clone() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(pool, "cannot watch a socket for connections: {e}");
                continue;
            }
        };
        let tx = tx.clone();
        let pool = pool.to_owned();
        tasks.push(tokio::spawn(async move {
            // SAFETY: the AsyncFd owns this duplicate, which stays open and
            // unchanged until the AsyncFd is dropped.
            let registered =
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
            let Ok(fd) = registered else {
                return;
            };
            if fd.readable().await.is_ok() {
                let _ = tx.send(Event::ConnectionWaiting { pool }).await;
            }
        }));
    }
    tasks
}
