//! The protocol-neutral request and response model.
//!
//! Every decoder (FastCGI, SCGI, uwsgi) produces a [`RequestHead`]; every
//! encoder consumes a [`ResponseHead`]. Names and values are bytes, as the
//! wire carries them: CGI has no charset, and front ends send raw bytes such
//! as 0xFF in paths (captured, `shared/frontends/BEHAVIOUR.md` §3).
//!
//! No I/O happens here.

use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Range;

/// The CGI variables of one request, in the order the front end sent them,
/// duplicates included (nginx sends a repeated header as two params).
///
/// The pairs refer to the received parameter block: decoding records the
/// byte ranges, it does not copy each name and value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CgiVars {
    block: Bytes,
    entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    name: (u32, u32),
    value: (u32, u32),
}

impl CgiVars {
    /// An empty set over `block`; add pairs with [`CgiVars::push_range`].
    pub fn over(block: Bytes) -> Self {
        CgiVars {
            block,
            entries: Vec::new(),
        }
    }

    /// Builds a set by copying pairs into a fresh block (tests, the HTTP
    /// listener, synthesised requests).
    pub fn from_pairs<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let pairs: Vec<_> = pairs.into_iter().collect();
        let size = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut block = BytesMut::with_capacity(size);
        let mut ranges = Vec::with_capacity(pairs.len());
        for (n, v) in pairs {
            let ns = block.len();
            block.put_slice(n);
            let vs = block.len();
            block.put_slice(v);
            ranges.push((ns..vs, vs..block.len()));
        }
        let mut vars = CgiVars::over(block.freeze());
        for (n, v) in ranges {
            vars.push_range(n, v);
        }
        vars
    }

    /// An empty set over `block` with room for `pairs` pairs (in the
    /// room a set this thread dropped left, when there is one).
    pub fn with_capacity(block: Bytes, pairs: usize) -> Self {
        let mut entries = SPARE_ENTRIES
            .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten()
            .unwrap_or_default();
        entries.reserve(pairs);
        CgiVars { block, entries }
    }

    /// Records one pair by offsets a decoder has already checked against
    /// the block (no re-check: this is the per-pair hot path).
    pub(crate) fn push_checked(&mut self, name: (u32, u32), value: (u32, u32)) {
        debug_assert!(name.1 as usize <= self.block.len() && value.1 as usize <= self.block.len());
        self.entries.push(Entry { name, value });
    }

    /// [`CgiVars::push_checked`] for a decoder's ranges, narrowed without a
    /// check: the decoder bounds its block below `u32::MAX` and keeps its
    /// ranges inside it.
    pub(crate) fn push_parsed(&mut self, name: Range<usize>, value: Range<usize>) {
        self.push_checked(
            (name.start as u32, name.end as u32),
            (value.start as u32, value.end as u32),
        );
    }

    /// Records one pair as ranges of the block.
    ///
    /// # Panics
    /// If a range lies outside the block or past `u32::MAX`: a decoder bug,
    /// never peer input (decoders bound the block by `Limits` first).
    pub fn push_range(&mut self, name: Range<usize>, value: Range<usize>) {
        assert!(name.end <= self.block.len() && value.end <= self.block.len());
        assert!(name.start <= name.end && value.start <= value.end);
        let narrow = |r: Range<usize>| -> (u32, u32) {
            (
                u32::try_from(r.start).expect("param block over 4 GiB"),
                u32::try_from(r.end).expect("param block over 4 GiB"),
            )
        };
        self.entries.push(Entry {
            name: narrow(name),
            value: narrow(value),
        });
    }

    /// The block the pairs point into.
    pub fn block(&self) -> &Bytes {
        &self.block
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn slice(&self, (start, end): (u32, u32)) -> &[u8] {
        &self.block[start as usize..end as usize]
    }

    /// All pairs in wire order, duplicates included.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries
            .iter()
            .map(move |e| (self.slice(e.name), self.slice(e.value)))
    }

    /// The value of `name`; the last one when the front end sent it twice
    /// (nginx config overrides come after `include fastcgi_params`).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .rev()
            .find(|e| same_bytes(self.slice(e.name), name))
            .map(|e| self.slice(e.value))
    }

    /// Every value sent for `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| same_bytes(n, name))
            .map(|(_, v)| v)
    }

    /// The value as a shared slice of the block (no copy).
    pub fn get_bytes(&self, name: &[u8]) -> Option<Bytes> {
        self.entries
            .iter()
            .rev()
            .find(|e| same_bytes(self.slice(e.name), name))
            .map(|e| self.block.slice(e.value.0 as usize..e.value.1 as usize))
    }
}

/// Whether two names or values are the same bytes. Equal to `a == b`, but
/// without a call into the C library's `memcmp` for the short ones CGI
/// variables mostly are (up to 16 bytes: two overlapping word loads): a
/// worker compares each variable with its cached copy on every request.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Only called where `at + 8` (or `+ 4`) is within the slice.
    let word = |s: &[u8], at: usize| s[at..].first_chunk::<8>().map(|w| u64::from_ne_bytes(*w));
    let half = |s: &[u8], at: usize| s[at..].first_chunk::<4>().map(|w| u32::from_ne_bytes(*w));
    match n {
        0 => true,
        // Indexes 0, n/2 and n-1 cover every byte of 1 to 3.
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

thread_local! {
    /// Entry vectors of the variable sets this thread dropped, emptied, for
    /// the next ones it decodes: a request then allocates none.
    static SPARE_ENTRIES: std::cell::RefCell<Vec<Vec<Entry>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare entry vectors kept per thread, and the largest kept (entries).
const SPARE_ENTRIES_MAX: usize = 4;
const SPARE_ENTRIES_ROOM_MAX: usize = 512;

impl Drop for CgiVars {
    fn drop(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        if entries.capacity() == 0 || entries.capacity() > SPARE_ENTRIES_ROOM_MAX {
            return;
        }
        entries.clear();
        let _ = SPARE_ENTRIES.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.len() < SPARE_ENTRIES_MAX {
                    s.push(entries);
                }
            }
        });
    }
}

impl std::fmt::Debug for CgiVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

/// What the front end asked the application to do (FastCGI roles; SCGI and
/// uwsgi requests are always responder requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Produce the response to an HTTP request.
    Responder,
    /// Decide whether an HTTP request may proceed (FastCGI 1.0 §6.3).
    Authorizer,
}

/// Where the request body ends, as the protocol says (SPEC §3: "The body ends
/// where the protocol says").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body follows at all: a FastCGI authorizer gets no STDIN records,
    /// not even the empty one (captured for Apache and lighttpd).
    None,
    /// Exactly this many bytes (SCGI and uwsgi: `CONTENT_LENGTH`).
    Length(u64),
    /// Until the protocol's end marker (FastCGI: the empty STDIN record);
    /// `CONTENT_LENGTH`, when present and numeric, is checked against it.
    UntilEnd { declared: Option<u64> },
}

/// A complete, validated request head: nothing reaches the application
/// before this exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub vars: CgiVars,
    pub role: Role,
    pub body: BodyFraming,
}

/// Parses a `CONTENT_LENGTH` value: `Ok(None)` when absent or empty (nginx
/// sends an empty one on GET), `Err(())` when not a plain decimal number.
#[allow(clippy::result_unit_err)]
pub fn parse_content_length(value: Option<&[u8]>) -> Result<Option<u64>, ()> {
    match value {
        None | Some(b"") => Ok(None),
        Some(v) => parse_decimal(v).map(Some).ok_or(()),
    }
}

/// Strict ASCII decimal, no sign, no spaces, at most 19 digits (fits u64).
pub fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

/// The status and headers of a response, already validated by the layer
/// that produced them (the WSGI bridge checks `start_response` input).
///
/// Kept packed in one buffer, as the wire carries it: the status, then
/// `Name: value\r\n` for each header. A response head costs one buffer
/// however many headers it has, and encoding it is two copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    buf: BytesMut,
    status_len: usize,
}

impl ResponseHead {
    /// `status` as WSGI gives it: `200 OK`.
    pub fn new(status: impl AsRef<[u8]>) -> Self {
        Self::with_capacity(status, 0)
    }

    /// A head with room for `capacity` bytes of header lines.
    pub fn with_capacity(status: impl AsRef<[u8]>, capacity: usize) -> Self {
        let status = status.as_ref();
        let mut buf = BytesMut::with_capacity(status.len() + capacity);
        buf.put_slice(status);
        ResponseHead {
            buf,
            status_len: status.len(),
        }
    }

    /// The status line's text: `200 OK`.
    pub fn status(&self) -> &[u8] {
        &self.buf[..self.status_len]
    }

    fn block(&self) -> &[u8] {
        &self.buf[self.status_len..]
    }

    pub fn header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.push_header(name.as_ref(), value.as_ref());
        self
    }

    /// Appends one header. The caller has checked that neither part holds
    /// CR or LF and that the name is a token.
    pub fn push_header(&mut self, name: &[u8], value: &[u8]) {
        self.buf.reserve(name.len() + value.len() + 4);
        self.buf.put_slice(name);
        self.buf.put_slice(b": ");
        self.buf.put_slice(value);
        self.buf.put_slice(b"\r\n");
    }

    /// Appends every header of `other`.
    pub fn extend_headers(&mut self, other: &ResponseHead) {
        self.buf.extend_from_slice(other.block());
    }

    /// The headers in order, as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.block()
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let value = line.get(colon + 1..).unwrap_or(b"");
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            })
    }

    /// The three-digit code, if the status starts with one.
    pub fn code(&self) -> Option<u16> {
        let status = self.status();
        let digits = status.get(..3)?;
        if status.len() > 3 && status[3] != b' ' {
            return None;
        }
        parse_decimal(digits).and_then(|c| u16::try_from(c).ok())
    }

    /// Bytes [`ResponseHead::encode_cgi`] writes (HTTP form: one more).
    pub fn encoded_len(&self) -> usize {
        self.buf.len() + 12
    }

    /// CGI form (`Status: 200 OK`), the only form every FastCGI and SCGI
    /// front end accepts (Apache answers 500 to an `HTTP/1.1` line).
    pub fn encode_cgi(&self, out: &mut BytesMut) {
        self.encode(b"Status: ", out)
    }

    /// HTTP form (`HTTP/1.1 200 OK`), the only form Apache mod_proxy_uwsgi
    /// accepts (a `Status:` line gives 502).
    pub fn encode_http(&self, out: &mut BytesMut) {
        self.encode(b"HTTP/1.1 ", out)
    }

    fn encode(&self, lead: &[u8], out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_slice(lead);
        out.put_slice(self.status());
        out.put_slice(b"\r\n");
        out.put_slice(self.block());
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn same_bytes_is_slice_equality(
            a in proptest::collection::vec(0u8..4, 0..40),
            b in proptest::collection::vec(0u8..4, 0..40),
        ) {
            prop_assert_eq!(same_bytes(&a, &b), a == b);
            prop_assert!(same_bytes(&a, &a.clone()));
        }
    }

    #[test]
    fn same_bytes_sees_a_difference_at_every_position_of_every_short_length() {
        for n in 0..=40usize {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x80;
                assert!(!same_bytes(&a, &b), "length {n}, byte {at}");
            }
            assert!(!same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn last_duplicate_wins_for_get_and_all_are_kept_in_order() {
        let vars = CgiVars::from_pairs([
            (&b"HTTP_X_DUP"[..], &b"one"[..]),
            (b"A", b"1"),
            (b"HTTP_X_DUP", b"two"),
        ]);
        assert_eq!(vars.get(b"HTTP_X_DUP"), Some(&b"two"[..]));
        assert_eq!(
            vars.get_all(b"HTTP_X_DUP").collect::<Vec<_>>(),
            vec![&b"one"[..], &b"two"[..]]
        );
        assert_eq!(vars.get_bytes(b"A").as_deref(), Some(&b"1"[..]));
        assert_eq!(vars.get(b"MISSING"), None);
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn a_set_made_after_one_was_dropped_holds_only_its_own_pairs() {
        for _ in 0..3 {
            drop(CgiVars::from_pairs([
                (&b"A"[..], &b"1"[..]),
                (b"B", b"2"),
                (b"C", b"3"),
            ]));
        }
        let mut vars = CgiVars::with_capacity(Bytes::from_static(b"NAMEvalue"), 1);
        assert!(vars.is_empty());
        vars.push_range(0..4, 4..9);
        assert_eq!(
            vars.iter().collect::<Vec<_>>(),
            vec![(&b"NAME"[..], &b"value"[..])]
        );
        assert_eq!(vars.get(b"A"), None);
    }

    #[test]
    fn content_length_empty_is_absent_and_garbage_is_an_error() {
        assert_eq!(parse_content_length(None), Ok(None));
        assert_eq!(parse_content_length(Some(b"")), Ok(None));
        assert_eq!(parse_content_length(Some(b"0")), Ok(Some(0)));
        assert_eq!(parse_content_length(Some(b"1048576")), Ok(Some(1_048_576)));
        assert_eq!(parse_content_length(Some(b"-1")), Err(()));
        assert_eq!(parse_content_length(Some(b" 1")), Err(()));
        assert_eq!(parse_content_length(Some(b"99999999999999999999")), Err(()));
    }

    #[test]
    fn response_head_encodes_cgi_and_http_forms() {
        let head = ResponseHead::new(&b"201 Created"[..]).header(b"X-A", b"b");
        assert_eq!(
            head.headers().collect::<Vec<_>>(),
            vec![(&b"X-A"[..], &b"b"[..])]
        );
        let mut cgi = BytesMut::new();
        head.encode_cgi(&mut cgi);
        assert_eq!(&cgi[..], b"Status: 201 Created\r\nX-A: b\r\n\r\n");
        let mut http = BytesMut::new();
        head.encode_http(&mut http);
        assert_eq!(&http[..], b"HTTP/1.1 201 Created\r\nX-A: b\r\n\r\n");
        assert_eq!(head.code(), Some(201));
        assert_eq!(ResponseHead::new(&b"20x"[..]).code(), None);
        assert_eq!(ResponseHead::new(&b"2000 OK"[..]).code(), None);
    }
}
