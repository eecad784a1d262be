//! Property tests for the FastCGI codec (STYLE §6): encode→decode identity
//! for records and name/value pairs, split invariance of the connection,
//! and limits that hold without large allocations.

#[path = "support/fastcgi.rs"]
mod support;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use support::*;
use tokio_util::codec::{Decoder, Encoder};
use wsgi_fpm::proto::fastcgi::{nv, ConnError, Record, RecordCodec, RecordType, RequestId};
use wsgi_fpm::proto::Limits;

/// Records the largest single allocation made by the current thread, so a
/// test can show that a declared length did not turn into an allocation.
struct TrackLargest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers every call to `System` unchanged; the bookkeeping touches
// only a const-initialised thread-local `Cell` without a destructor, which
// never allocates.
unsafe impl GlobalAlloc for TrackLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: TrackLargest = TrackLargest;

fn largest_allocation_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// Lengths that cluster around the 1-/4-byte switch at 128.
fn nv_size() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..4, 120usize..136, 0usize..400]
}

fn bytes_of(size: impl Strategy<Value = usize>) -> impl Strategy<Value = Vec<u8>> {
    size.prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
}

fn record() -> impl Strategy<Value = Record> {
    let content = prop_oneof![
        4 => bytes_of(0usize..600),
        1 => (65_400usize..=65_535, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ];
    (any::<u8>(), any::<u16>(), content).prop_map(|(kind, id, content)| Record {
        kind: RecordType::from(kind),
        id: RequestId(id),
        content: Bytes::from(content),
    })
}

/// A stream of requests on ids 1..=3 with random params (sizes around
/// 128), bodies, PARAMS split points and STDIN record sizes, plus stray
/// GET_VALUES and unknown-type records.
fn request_stream() -> impl Strategy<Value = Vec<u8>> {
    let one = (
        1u16..=3,
        proptest::collection::vec((bytes_of(nv_size()), bytes_of(nv_size())), 0..6),
        bytes_of(0usize..300),
        1usize..64,
        any::<bool>(),
        any::<u8>(),
    );
    proptest::collection::vec(one, 1..4).prop_map(|reqs| {
        let mut out = Vec::new();
        let mut used = Vec::new();
        for (id, params, body, cut, declare, extra) in reqs {
            if used.contains(&id) {
                continue; // one request per id: the test application never answers
            }
            used.push(id);
            let mut kv: Vec<(&[u8], &[u8])> =
                params.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let len = body.len().to_string();
            if declare {
                kv.push((b"CONTENT_LENGTH", len.as_bytes()));
            }
            let block = pairs(&kv);
            out.extend(begin(id, 1, true));
            // Few records: each costs its 8-byte header against the limit.
            let cut = cut.max(block.len() / 1000 + 1);
            for piece in block.chunks(cut) {
                out.extend(rec(4, id, piece));
            }
            out.extend(rec(4, id, &[]));
            if extra % 3 == 0 {
                out.extend(rec(9, 0, &pairs(&[(b"FCGI_MAX_REQS", b"")])));
            }
            if extra % 5 == 0 {
                out.extend(rec_padded(extra, 0, &[extra; 3], usize::from(extra % 9)));
            }
            for piece in body.chunks(usize::from(extra) + 1) {
                out.extend(rec_padded(5, id, piece, usize::from(extra) % 256));
            }
            out.extend(rec(5, id, &[]));
        }
        out
    })
}

/// Cuts `bytes` into pieces of the given sizes, cycled.
fn chunk<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = sizes[i % sizes.len()].max(1);
        let end = (at + n).min(bytes.len());
        out.push(&bytes[at..end]);
        at = end;
        i += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn records_survive_encode_then_decode(r in record()) {
        let mut buf = BytesMut::new();
        RecordCodec.encode(r.clone(), &mut buf).unwrap();
        prop_assert_eq!(buf.len() % 8, 0);
        prop_assert_eq!(RecordCodec.decode(&mut buf).unwrap(), Some(r));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_padding_is_skipped(content in bytes_of(0usize..100), pad in any::<u8>(), kind in any::<u8>()) {
        let bytes = rec_padded(kind, 7, &content, usize::from(pad));
        let mut buf = BytesMut::from(&bytes[..]);
        let r = RecordCodec.decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(&r.content[..], &content[..]);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn name_value_pairs_survive_encode_then_decode(
        kv in proptest::collection::vec((bytes_of(nv_size()), bytes_of(nv_size())), 0..8),
        force_four in any::<u8>(),
    ) {
        // Our shortest-form encoder...
        let mut ours = BytesMut::new();
        for (n, v) in &kv {
            nv::put_pair(&mut ours, n, v);
        }
        // ...and an independent one that uses 4-byte lengths at random,
        // as Apache does.
        let mut theirs = Vec::new();
        for (i, (n, v)) in kv.iter().enumerate() {
            for (j, len) in [n.len(), v.len()].into_iter().enumerate() {
                if len >= 128 || force_four & (1 << ((2 * i + j) % 8)) != 0 {
                    theirs.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
                } else {
                    theirs.push(len as u8);
                }
            }
            theirs.extend_from_slice(n);
            theirs.extend_from_slice(v);
        }
        for block in [&ours[..], &theirs[..]] {
            let decoded = nv::decode_all(block, usize::MAX).unwrap();
            let got: Vec<(&[u8], &[u8])> =
                decoded.iter().map(|(n, v)| (&block[n.clone()], &block[v.clone()])).collect();
            let want: Vec<(&[u8], &[u8])> = kv.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn truncating_a_name_value_block_is_an_error_never_a_panic(
        kv in proptest::collection::vec((bytes_of(nv_size()), bytes_of(nv_size())), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let block = pairs(&kv.iter().map(|(n, v)| (&n[..], &v[..])).collect::<Vec<_>>());
        let at = cut.index(block.len());
        let boundaries: Vec<usize> = kv.iter().scan(0, |acc, (n, v)| {
            *acc += nv::encoded_len(n, v);
            Some(*acc)
        }).collect();
        let result = nv::decode_all(&block[..at], usize::MAX);
        prop_assert_eq!(result.is_ok(), at == 0 || boundaries.contains(&at));
    }

    #[test]
    fn a_request_stream_gives_the_same_events_however_it_is_split(
        stream in request_stream(),
        sizes in proptest::collection::vec(1usize..200, 1..6),
    ) {
        let whole = feed(&stream);
        prop_assert_eq!(&whole.result, &Ok(()));
        let pieces = chunk(&stream, &sizes);
        let split = feed_pieces(&pieces, Limits::default(), settings());
        prop_assert_eq!(&split.events, &whole.events);
        prop_assert_eq!(&split.out, &whole.out);
        prop_assert_eq!(&split.result, &whole.result);
        prop_assert_eq!(split.left, 0);
    }

    #[test]
    fn an_oversized_params_stream_gives_the_limit_error_without_a_large_allocation(
        limit in 64usize..4096,
        record_size in 1usize..=65535,
    ) {
        let limits = Limits { max_params_bytes: limit, ..Limits::default() };
        let mut bytes = begin(1, 1, false);
        let mut sent = 0;
        while sent <= limit {
            let n = record_size.min(65535);
            bytes.extend(rec(4, 1, &vec![b'x'; n]));
            sent += n;
        }
        // Feed record by record so the input buffer stays small too.
        let pieces = split_records(&bytes);
        let largest_record = pieces.iter().map(|p| p.len()).max().unwrap();
        let (run, largest) = largest_allocation_during(|| feed_pieces(&pieces, limits, settings()));
        let is_too_large = matches!(
            run.result,
            Err(ConnError::ParamsTooLarge { limit: l, .. }) if l == limit
        );
        prop_assert!(is_too_large);
        // Nothing beyond the (test's) input buffer and the bounded block.
        prop_assert!(largest <= 2 * largest_record.max(limit) + 4096, "largest {}", largest);
    }

    #[test]
    fn a_declared_31_bit_length_is_an_error_without_a_large_allocation(
        name_len in 0u32..=0x7fff_ffff,
        value_len in 64u32..=0x7fff_ffff,
        tail in bytes_of(0usize..64),
    ) {
        let mut block = Vec::new();
        block.extend_from_slice(&(name_len | 0x8000_0000).to_be_bytes());
        block.extend_from_slice(&(value_len | 0x8000_0000).to_be_bytes());
        block.extend_from_slice(&tail);
        let mut bytes = begin(1, 1, false);
        bytes.extend(rec(4, 1, &block));
        bytes.extend(rec(4, 1, &[]));
        let (run, largest) = largest_allocation_during(|| feed(&bytes));
        let is_malformed = matches!(run.result, Err(ConnError::MalformedParams { .. }));
        prop_assert!(is_malformed);
        prop_assert!(largest < 64 * 1024, "largest allocation {}", largest);
    }
}

#[test]
fn a_request_stream_fed_one_byte_at_a_time_gives_the_same_events() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 32,
        ..ProptestConfig::default()
    });
    runner
        .run(&request_stream(), |stream| {
            let whole = feed(&stream);
            let pieces: Vec<&[u8]> = stream.chunks(1).collect();
            let bytewise = feed_pieces(&pieces, Limits::default(), settings());
            prop_assert_eq!(bytewise.events, whole.events);
            prop_assert_eq!(bytewise.out, whole.out);
            prop_assert_eq!(bytewise.result, Ok(()));
            Ok(())
        })
        .unwrap();
}
