//! FastCGI name/value pairs (protocol-specs/fastcgi.md §5): each pair is a
//! name length, a value length, the name bytes and the value bytes; a
//! length is one byte when below 128, else four bytes big-endian with the
//! high bit set (a 31-bit length).
//!
//! Decoding works on one complete, already size-bounded block (the PARAMS
//! stream concatenated, or one `GET_VALUES` record) and records byte ranges
//! into it; it never copies a name or value and never allocates by a length
//! it read. Every declared length is compared with the bytes that remain
//! *before* it is added to anything: CVE-2025-23016 (fcgi2 `ReadParams`)
//! was `nameLen + valueLen + 2` overflowing. No I/O happens here.

use bytes::{BufMut, BytesMut};
use std::ops::Range;

/// The largest length a 4-byte prefix can carry (31 bits).
pub const MAX_LEN: u32 = 0x7fff_ffff;

/// Which half of a pair a length belongs to, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Name,
    Value,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::Name => "name",
            Part::Value => "value",
        })
    }
}

/// What is wrong with a name/value block; offsets are from its start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvError {
    #[error("pair at offset {offset}: the {part} length needs {needed} bytes, {remaining} remain")]
    TruncatedLength {
        offset: usize,
        part: Part,
        needed: usize,
        remaining: usize,
    },
    #[error("pair at offset {offset}: {part} of {len} bytes runs past the end of the block ({remaining} bytes remain)")]
    PastEnd {
        offset: usize,
        part: Part,
        len: u32,
        remaining: usize,
    },
    #[error("more than {limit} pairs")]
    TooManyPairs { limit: usize },
}

/// Reads one length at the start of `buf`: `Some((length, prefix_size))`,
/// or `None` when `buf` is too short for the prefix its first byte
/// announces.
pub fn decode_len(buf: &[u8]) -> Option<(u32, usize)> {
    let first = *buf.first()?;
    if first < 0x80 {
        return Some((u32::from(first), 1));
    }
    let b = buf.first_chunk::<4>()?;
    Some((u32::from_be_bytes(*b) & MAX_LEN, 4))
}

/// Walks a name/value block pair by pair, yielding byte ranges of `block`.
/// After the first error it yields nothing more.
pub struct Pairs<'a> {
    block: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates the pairs of `block`.
pub fn pairs(block: &[u8]) -> Pairs<'_> {
    Pairs {
        block,
        pos: 0,
        failed: false,
    }
}

impl Pairs<'_> {
    fn length(&mut self, offset: usize, part: Part) -> Result<u32, NvError> {
        let rest = &self.block[self.pos..];
        match decode_len(rest) {
            Some((len, size)) => {
                self.pos += size;
                Ok(len)
            }
            None => Err(NvError::TruncatedLength {
                offset,
                part,
                needed: if rest.is_empty() { 1 } else { 4 },
                remaining: rest.len(),
            }),
        }
    }

    fn next_pair(&mut self) -> Result<(Range<usize>, Range<usize>), NvError> {
        let offset = self.pos;
        let name_len = self.length(offset, Part::Name)?;
        let value_len = self.length(offset, Part::Value)?;
        let name = self.take(offset, Part::Name, name_len)?;
        let value = self.take(offset, Part::Value, value_len)?;
        Ok((name, value))
    }

    /// The next `len` bytes as a range, checked against what remains
    /// before any arithmetic on `len`.
    fn take(&mut self, offset: usize, part: Part, len: u32) -> Result<Range<usize>, NvError> {
        let remaining = self.block.len() - self.pos;
        // A u32 always fits usize on the platforms we build for (32/64-bit);
        // if it did not, it would exceed `remaining` anyway.
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        if n > remaining {
            return Err(NvError::PastEnd {
                offset,
                part,
                len,
                remaining,
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(start..self.pos)
    }
}

impl Iterator for Pairs<'_> {
    type Item = Result<(Range<usize>, Range<usize>), NvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.block.len() {
            return None;
        }
        let item = self.next_pair();
        self.failed = item.is_err();
        Some(item)
    }
}

/// All pairs of `block` as ranges, at most `max_pairs` of them. A truncated
/// pair at the end is an error (fastcgi.md §5).
#[allow(clippy::type_complexity)]
pub fn decode_all(
    block: &[u8],
    max_pairs: usize,
) -> Result<Vec<(Range<usize>, Range<usize>)>, NvError> {
    let mut out = Vec::new();
    for pair in pairs(block) {
        if out.len() == max_pairs {
            return Err(NvError::TooManyPairs { limit: max_pairs });
        }
        out.push(pair?);
    }
    Ok(out)
}

/// Bytes the prefix of a length takes.
pub fn len_size(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        4
    }
}

/// Appends a length in the shortest form.
///
/// # Panics
/// Past 31 bits, which no name or value we produce comes near.
pub fn put_len(out: &mut BytesMut, len: usize) {
    if len < 0x80 {
        // Checked just above: fits in 7 bits.
        out.put_u8(len as u8);
    } else {
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_LEN)
            .expect("name/value over 2 GiB");
        out.put_u32(len | 0x8000_0000);
    }
}

/// Appends one pair with the shortest length prefixes.
pub fn put_pair(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.reserve(encoded_len(name, value));
    put_len(out, name.len());
    put_len(out, value.len());
    out.put_slice(name);
    out.put_slice(value);
}

/// Size of a pair as [`put_pair`] writes it.
pub fn encoded_len(name: &[u8], value: &[u8]) -> usize {
    len_size(name.len()) + len_size(value.len()) + name.len() + value.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_switch_to_four_bytes_at_128() {
        let mut out = BytesMut::new();
        put_len(&mut out, 127);
        put_len(&mut out, 128);
        assert_eq!(&out[..], &[0x7f, 0x80, 0, 0, 0x80]);
        assert_eq!(decode_len(&out[1..]), Some((128, 4)));
        assert_eq!(decode_len(&[0x80, 0, 0]), None);
        assert_eq!(decode_len(&[]), None);
    }

    #[test]
    fn four_byte_encoding_of_a_short_length_is_accepted() {
        let block = [0x80, 0, 0, 1, 1, b'A', b'b'];
        let pairs = decode_all(&block, 10).unwrap();
        assert_eq!(pairs, vec![(5..6, 6..7)]);
    }

    #[test]
    fn maximum_declared_length_is_an_error_without_overflow() {
        let block = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'x'];
        assert_eq!(
            decode_all(&block, 10),
            Err(NvError::PastEnd {
                offset: 0,
                part: Part::Name,
                len: MAX_LEN,
                remaining: 1
            })
        );
    }

    #[test]
    fn truncated_pair_at_the_end_is_an_error() {
        assert_eq!(
            decode_all(&[1, 1, b'A', b'b', 3], 10),
            Err(NvError::TruncatedLength {
                offset: 4,
                part: Part::Value,
                needed: 1,
                remaining: 0
            })
        );
        assert!(decode_all(&[1, 2, b'A', b'b'], 10).is_err());
    }

    #[test]
    fn pair_count_is_bounded() {
        assert_eq!(
            decode_all(&[0, 0, 0, 0, 0, 0], 2),
            Err(NvError::TooManyPairs { limit: 2 })
        );
        assert_eq!(decode_all(&[0, 0, 0, 0], 2).unwrap().len(), 2);
    }
}
