//! An accepted connection of either family, readable and writable as one
//! type, with `sendfile(2)` straight from a file to the socket.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};

pub enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Conn {
    /// Adopts an accepted, non-blocking socket into the I/O thread's
    /// runtime (must be called from inside it).
    pub fn from_fd(fd: std::os::fd::OwnedFd, peer: crate::exchange::Peer) -> io::Result<Conn> {
        match peer {
            crate::exchange::Peer::Tcp(_) => {
                let s = std::net::TcpStream::from(fd);
                s.set_nonblocking(true)?;
                Ok(Conn::Tcp(tokio::net::TcpStream::from_std(s)?))
            }
            crate::exchange::Peer::Unix => {
                let s = std::os::unix::net::UnixStream::from(fd);
                s.set_nonblocking(true)?;
                Ok(Conn::Unix(tokio::net::UnixStream::from_std(s)?))
            }
        }
    }
}

/// Bytes one sendfile(2) call may move: bounded so that a large file does
/// not starve the other connections of this worker's I/O thread.
const SENDFILE_STEP: usize = 1 << 20;

impl Conn {
    async fn writable(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.writable().await,
            Conn::Unix(s) => s.writable().await,
        }
    }

    fn try_sendfile(
        &self,
        file: &std::fs::File,
        offset: &mut i64,
        count: usize,
    ) -> io::Result<usize> {
        let send = || {
            nix::sys::sendfile::sendfile(self_fd(self), file.as_fd(), Some(offset), count)
                .map_err(io::Error::from)
        };
        match self {
            Conn::Tcp(s) => s.try_io(Interest::WRITABLE, send),
            Conn::Unix(s) => s.try_io(Interest::WRITABLE, send),
        }
    }

    /// Sends `len` bytes of `file` from `offset`; each step must make
    /// progress within `timeout`.
    pub async fn sendfile(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        timeout: Duration,
    ) -> io::Result<()> {
        self.flush().await?;
        let mut off = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = off
            .checked_add(i64::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?)
            .ok_or(io::ErrorKind::InvalidInput)?;
        while off < end {
            let count = usize::try_from(end - off)
                .unwrap_or(usize::MAX)
                .min(SENDFILE_STEP);
            let step = async {
                loop {
                    self.writable().await?;
                    match self.try_sendfile(file, &mut off, count) {
                        Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            };
            tokio::time::timeout(timeout, step)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
        Ok(())
    }
}

fn self_fd(conn: &Conn) -> std::os::fd::BorrowedFd<'_> {
    match conn {
        Conn::Tcp(s) => s.as_fd(),
        Conn::Unix(s) => s.as_fd(),
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// How long, and how much, a closing connection keeps reading what the
/// peer still sends before it closes anyway (issue: a lingering close must
/// not be a way to stream unbounded data through a worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LingerLimits {
    pub time: Duration,
    pub bytes: u64,
}

impl LingerLimits {
    /// Two seconds and 1 MiB: enough for a front end's last records and a
    /// body the application left unread, not for an upload.
    pub const DEFAULT: LingerLimits = LingerLimits {
        time: Duration::from_secs(2),
        bytes: 1024 * 1024,
    };
}

/// Closes after the last response byte without losing it: the write side is
/// shut first, then whatever the peer still sends (an empty `STDIN` record
/// after an answer given at the end of the params, a body the application
/// did not read) is read and dropped until it closes, within `limits`.
/// Closing with unread bytes would make the kernel send a reset, which can
/// destroy the response before the front end has read it.
pub async fn close_lingering(mut conn: Conn, limits: LingerLimits) {
    use tokio::io::AsyncReadExt;
    if conn.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 8192];
    let mut left = limits.bytes;
    let drain = async {
        while let Ok(n) = conn.read(&mut sink).await {
            if n == 0 || n as u64 >= left {
                break;
            }
            left -= n as u64;
        }
    };
    let _ = tokio::time::timeout(limits.time, drain).await;
}

/// `write_all` in which each write must make progress within `timeout`
/// (SPEC §2 socket timeout): a large output to a slow but reading peer
/// takes as long as it takes; a peer that stops reading fails it.
pub async fn write_all_timeout(
    conn: &mut Conn,
    mut data: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    while !data.is_empty() {
        let n = tokio::time::timeout(timeout, conn.write(data))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("a write made no progress in {} s", timeout.as_secs_f64()),
                )
            })??;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

/// Reads what is available into `buf`; with a `timeout`, a read that makes
/// no progress for that long fails with `TimedOut` (SPEC §2 socket timeout).
pub async fn read_some(
    conn: &mut Conn,
    buf: &mut bytes::BytesMut,
    reserve: usize,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    use tokio::io::AsyncReadExt;
    buf.reserve(reserve);
    let Some(timeout) = timeout else {
        return conn.read_buf(buf).await;
    };
    tokio::time::timeout(timeout, conn.read_buf(buf))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "no progress within the socket timeout",
            )
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn pair() -> (Conn, tokio::net::UnixStream) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        (Conn::Unix(a), b)
    }

    #[tokio::test]
    async fn a_write_to_a_slow_reader_lasts_as_long_as_each_step_progresses() {
        let (mut conn, mut peer) = pair();
        let data = vec![7u8; 24 << 20];
        // Reads up to 256 KiB, more than a Unix socket buffers, every
        // 10 ms: each step of the write waits about 10 ms, the whole write
        // over a second, twice the timeout.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                match peer.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got += n,
                }
            }
        });
        let timeout = Duration::from_millis(500);
        let began = std::time::Instant::now();
        write_all_timeout(&mut conn, &data, timeout).await.unwrap();
        assert!(began.elapsed() > timeout, "{:?}", began.elapsed());
        drop(conn);
        assert_eq!(reader.await.unwrap(), data.len());
    }

    #[tokio::test]
    async fn a_write_to_a_peer_that_stops_reading_times_out() {
        let (mut conn, _peer) = pair();
        let data = vec![7u8; 4 << 20];
        let e = write_all_timeout(&mut conn, &data, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
