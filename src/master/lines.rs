//! Reading messages from workers and templates, bounded: a status pipe or
//! a template's command socket is written by code that runs the
//! application, so a message longer than [`MAX_LINE`] bytes is dropped
//! (reported once) and the reader never holds more than that, however
//! much is written. [`Splitter`] is the pure part; [`read_status`] the
//! task that feeds the driver.

use super::state::{Event, Line, ProcId, MAX_LINE};
use std::os::fd::OwnedFd;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Splits bytes into lines of at most `max` bytes (newline excluded).
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    max: usize,
    /// Inside a line already reported too long: dropped up to its newline.
    discarding: bool,
}

impl Splitter {
    pub fn new(max: usize) -> Splitter {
        Splitter {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    /// Takes `data`; appends what it completes to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Line>) {
        while !data.is_empty() {
            let newline = data.iter().position(|b| *b == b'\n');
            let (part, rest, ends) = match newline {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if !self.discarding {
                if self.buf.len() + part.len() > self.max {
                    self.buf.clear();
                    self.discarding = true;
                    out.push(Line::TooLong);
                } else {
                    self.buf.extend_from_slice(part);
                }
            }
            if ends {
                if !self.discarding {
                    let text = String::from_utf8_lossy(&self.buf).into_owned();
                    out.push(Line::Text(text));
                }
                self.buf.clear();
                self.discarding = false;
            }
        }
    }

    /// Bytes held for an unfinished line (at most `max`).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Reads process `id`'s status pipe until it closes, handing each message
/// to the driver. A full channel makes this wait, so a process that floods
/// its pipe is slowed down (its writes block) rather than queued in the
/// master's memory.
pub async fn read_status(id: ProcId, read_end: OwnedFd, tx: mpsc::Sender<Event>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end) else {
        return;
    };
    let mut splitter = Splitter::new(MAX_LINE);
    let mut chunk = vec![0u8; 8192];
    let mut lines = Vec::new();
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        splitter.push(&chunk[..n], &mut lines);
        for line in lines.drain(..) {
            if tx.send(Event::Line { id, line }).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<Line>, usize) {
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        (out, s.pending())
    }

    fn text(t: &str) -> Line {
        Line::Text(t.into())
    }

    #[test]
    fn lines_come_out_whole_whatever_the_chunking() {
        let whole = split(16, &[b"ready\nload busy\n"]).0;
        assert_eq!(whole, [text("ready"), text("load busy")]);
        for at in 0..16 {
            let data = b"ready\nload busy\n";
            assert_eq!(split(16, &[&data[..at], &data[at..]]).0, whole, "{at}");
        }
        assert_eq!(split(16, &[b"partial"]), (vec![], 7));
    }

    #[test]
    fn a_line_over_the_limit_is_dropped_once_and_the_next_one_is_read() {
        let (out, pending) = split(8, &[b"ready\n0123456789", b"abcdef", b"ghi\nload\n"]);
        assert_eq!(out, [text("ready"), Line::TooLong, text("load")]);
        assert_eq!(pending, 0);
        // Exactly the limit is kept.
        assert_eq!(split(8, &[b"12345678\n"]).0, [text("12345678")]);
        assert_eq!(split(8, &[b"123456789\n"]).0, [Line::TooLong]);
    }

    #[test]
    fn an_endless_line_holds_no_more_than_the_limit() {
        let mut s = Splitter::new(MAX_LINE);
        let mut out = Vec::new();
        let junk = vec![b'x'; 65536];
        for _ in 0..1000 {
            s.push(&junk, &mut out);
            assert!(s.pending() <= MAX_LINE);
        }
        assert_eq!(out, [Line::TooLong], "reported once");
        s.push(b"\nready\n", &mut out);
        assert_eq!(out, [Line::TooLong, text("ready")]);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_refused() {
        assert_eq!(split(16, &[b"re\xffdy\n"]).0, [text("re\u{fffd}dy")]);
    }
}
