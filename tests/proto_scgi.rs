//! SCGI decoder tests: every hand-built vector of `protocol-specs/vectors/scgi/`
//! (sections of `protocol-specs/scgi.md` cited), every SCGI capture of
//! `tests/vectors/captured/`, limits, response encoding, the tokio-util
//! adapter, properties, and the fuzz corpus replayed on stable.

mod support;

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder as _;
use wsgi_fpm::proto::scgi::{self, DuplicateNames, HeadError, ScgiCodec, ScgiDecoder};
use wsgi_fpm::proto::stream::{CodecError, Phase, StreamEvent, Truncated};
use wsgi_fpm::proto::{BodyFraming, Limits, ResponseHead, Role};

use support::*;

type Outcome = wsgi_fpm::proto::fuzz::stream::Outcome<HeadError>;

fn decode_vector(name: &str) -> Outcome {
    decode_vector_with(name, Limits::default(), DuplicateNames::default())
}

fn decode_vector_with(name: &str, limits: Limits, rule: DuplicateNames) -> Outcome {
    let input = vector("scgi", name);
    feed_every_split(
        || ScgiDecoder::new(limits).with_duplicate_names(rule),
        limits,
        &input,
    )
}

fn error_of(name: &str) -> HeadError {
    let outcome = decode_vector(name);
    assert!(outcome.events.is_empty(), "{name}: {:?}", outcome.events);
    outcome
        .error
        .unwrap_or_else(|| panic!("{name} decoded without error"))
}

/// Vectors this file asserts; `every_vector_file_has_an_expectation` keeps
/// the list and the directory in step.
const COVERED: &[&str] = &[
    "body-split",
    "content-length-empty",
    "content-length-invalid",
    "content-length-not-first",
    "duplicate-content-length",
    "duplicate-header",
    "duplicate-scgi",
    "empty-body",
    "empty-name",
    "empty-netstring",
    "leading-zero",
    "length-empty",
    "length-not-digit",
    "length-over-limit",
    "length-too-many-digits",
    "many-headers",
    "missing-comma",
    "missing-scgi",
    "name-unterminated",
    "scgi-not-1",
    "spec-sample",
    "trailing-bytes",
    "truncated-body",
    "value-unterminated",
];

#[test]
fn every_vector_file_has_an_expectation() {
    assert_eq!(vector_names("scgi"), COVERED);
}

// ---- scgi.md §2–§4, hand-built vectors --------------------------------------

#[test]
fn spec_sample_gives_its_four_headers_then_its_body_then_end() {
    let out = decode_vector("spec-sample");
    assert_eq!(out.error, None);
    let head = head(&out);
    assert_eq!(
        pairs(head),
        vec![
            p("CONTENT_LENGTH", "27"),
            p("SCGI", "1"),
            p("REQUEST_METHOD", "POST"),
            p("REQUEST_URI", "/deepthought"),
        ]
    );
    assert_eq!(head.role, Role::Responder);
    assert_eq!(head.body, BodyFraming::Length(27));
    assert_eq!(&body(&out)[..], b"What is the answer to life?");
    assert!(ended(&out));
    assert_eq!(out.events.len(), 3);
    assert_eq!(out.left, 0);
}

#[test]
fn header_block_is_shared_not_copied_per_header() {
    let input = vector("scgi", "spec-sample");
    let mut buf = BytesMut::from(&input[..]);
    let mut dec = ScgiDecoder::new(Limits::default());
    let Some(StreamEvent::Head(head)) = dec.decode(&mut buf).unwrap() else {
        panic!("no head");
    };
    // The block is the netstring's payload, byte for byte, and every value
    // points into it.
    assert_eq!(&head.vars.block()[..], &input[3..3 + 70]);
    let block = head.vars.block().as_ptr_range();
    for (name, value) in head.vars.iter() {
        assert!(block.contains(&name.as_ptr()));
        assert!(value.is_empty() || block.contains(&value.as_ptr()));
    }
}

#[test]
fn content_length_zero_gives_head_then_end_without_a_body_event() {
    let out = decode_vector("empty-body");
    assert_eq!(head(&out).body, BodyFraming::Length(0));
    assert_eq!(out.events.len(), 2);
    assert!(ended(&out));
}

#[test]
fn body_split_at_any_offset_gives_the_same_events() {
    // feed_every_split asserts the equality; here, what they are.
    let out = decode_vector("body-split");
    let expected: Vec<u8> = (0..300).map(|i| ((i * 7) % 251) as u8).collect();
    assert_eq!(&body(&out)[..], &expected[..]);
    assert!(ended(&out));
    for sizes in SIZE_PATTERNS {
        let input = vector("scgi", "body-split");
        let again = feed(
            ScgiDecoder::new(Limits::default()),
            Limits::default(),
            &input,
            sizes,
        );
        assert_eq!(again, out, "reads of {sizes:?}");
    }
}

#[test]
fn body_chunks_are_slices_of_the_input_and_never_pass_content_length() {
    let input = vector("scgi", "trailing-bytes");
    let mut buf = BytesMut::from(&input[..input.len() - 9]);
    let mut dec = ScgiDecoder::new(Limits::default());
    assert!(matches!(
        dec.decode(&mut buf),
        Ok(Some(StreamEvent::Head(_)))
    ));
    let Ok(Some(StreamEvent::Body(first))) = dec.decode(&mut buf) else {
        panic!("no body");
    };
    assert_eq!(&first[..], b"What is the answer to l");
    assert_eq!(dec.remaining_body(), 4);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.extend_from_slice(&input[input.len() - 9..]);
    let Ok(Some(StreamEvent::Body(rest))) = dec.decode(&mut buf) else {
        panic!("no body");
    };
    assert_eq!(&rest[..], b"ife?");
    assert_eq!(dec.decode(&mut buf), Ok(Some(StreamEvent::End)));
    assert_eq!(dec.decode(&mut buf), Ok(None), "End exactly once");
    assert_eq!(
        &buf[..],
        b"EXTRA",
        "bytes after the body are never consumed"
    );
}

#[test]
fn empty_netstring_has_no_content_length() {
    assert_eq!(error_of("empty-netstring"), HeadError::MissingContentLength);
}

#[test]
fn netstring_length_with_a_leading_zero_is_rejected() {
    assert_eq!(error_of("leading-zero"), HeadError::LengthLeadingZero);
}

#[test]
fn netstring_length_with_a_sign_is_rejected_naming_the_byte() {
    assert_eq!(
        error_of("length-not-digit"),
        HeadError::LengthNotDigit {
            offset: 0,
            found: "+".into()
        }
    );
}

#[test]
fn netstring_without_length_digits_is_rejected() {
    assert_eq!(error_of("length-empty"), HeadError::LengthEmpty);
}

#[test]
fn netstring_length_over_limit_is_rejected_before_buffering() {
    let err = error_of("length-over-limit");
    assert_eq!(
        err,
        HeadError::HeaderBlockTooLarge {
            length: 1_048_577,
            limit: 1_048_576
        }
    );
    assert_eq!(err.status(), "431 Request Header Fields Too Large");
    let mut buf = BytesMut::from(&vector("scgi", "length-over-limit")[..]);
    let cap = buf.capacity();
    assert!(ScgiDecoder::new(Limits::default())
        .decode(&mut buf)
        .is_err());
    assert_eq!(buf.capacity(), cap, "no room was made for the block");
}

#[test]
fn absurd_digit_count_is_rejected_before_the_colon_arrives() {
    assert_eq!(
        error_of("length-too-many-digits"),
        HeadError::LengthTooManyDigits {
            max_digits: 7,
            limit: 1_048_576
        }
    );
}

#[test]
fn a_configured_limit_is_exact_at_the_boundary() {
    let limits = Limits {
        max_params_bytes: 100,
        ..Limits::default()
    };
    let mut over = BytesMut::from(&b"101:"[..]);
    assert_eq!(
        ScgiDecoder::new(limits).decode(&mut over),
        Err(HeadError::HeaderBlockTooLarge {
            length: 101,
            limit: 100
        })
    );
    let mut at = BytesMut::from(&b"100:"[..]);
    assert_eq!(ScgiDecoder::new(limits).decode(&mut at), Ok(None));
    assert!(
        at.capacity() >= 105,
        "room is made once the length is accepted"
    );
    let mut digits = BytesMut::from(&b"1000"[..]);
    assert_eq!(
        ScgiDecoder::new(limits).decode(&mut digits),
        Err(HeadError::LengthTooManyDigits {
            max_digits: 3,
            limit: 100
        })
    );
}

#[test]
fn netstring_not_closed_by_a_comma_is_rejected() {
    assert_eq!(
        error_of("missing-comma"),
        HeadError::MissingComma {
            length: 70,
            found: ";".into()
        }
    );
}

#[test]
fn content_length_must_be_the_first_header() {
    assert_eq!(
        error_of("content-length-not-first"),
        HeadError::ContentLengthNotFirst {
            found: "SCGI".into()
        }
    );
}

#[test]
fn negative_content_length_is_rejected() {
    assert_eq!(
        error_of("content-length-invalid"),
        HeadError::ContentLengthInvalid { value: "-1".into() }
    );
}

#[test]
fn empty_content_length_is_rejected_on_scgi() {
    assert_eq!(
        error_of("content-length-empty"),
        HeadError::ContentLengthInvalid { value: "".into() }
    );
}

#[test]
fn request_without_scgi_1_is_rejected() {
    assert_eq!(error_of("missing-scgi"), HeadError::MissingScgi);
}

#[test]
fn scgi_header_other_than_1_is_rejected() {
    assert_eq!(
        error_of("scgi-not-1"),
        HeadError::ScgiVersion { value: "2".into() }
    );
}

#[test]
fn repeated_http_header_passes_in_order_by_default_as_nginx_sends_it() {
    let out = decode_vector("duplicate-header");
    assert_eq!(out.error, None);
    let head = head(&out);
    assert_eq!(
        head.vars.get_all(b"HTTP_X_DUP").collect::<Vec<_>>(),
        vec![&b"1"[..], &b"2"[..]]
    );
}

#[test]
fn repeated_http_header_is_rejected_when_all_duplicates_are() {
    let out = decode_vector_with(
        "duplicate-header",
        Limits::default(),
        DuplicateNames::RejectAll,
    );
    let err = out.error.unwrap();
    assert!(
        matches!(&err, HeadError::DuplicateName { name, .. } if name == "HTTP_X_DUP"),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP_X_DUP"));
}

#[test]
fn repeated_content_length_is_rejected() {
    assert_eq!(
        error_of("duplicate-content-length"),
        HeadError::DuplicateName {
            name: "CONTENT_LENGTH".into(),
            first: 0,
            second: 57
        }
    );
}

#[test]
fn repeated_scgi_header_is_rejected() {
    assert!(matches!(
        error_of("duplicate-scgi"),
        HeadError::DuplicateName { name, first: 17, second: 57 } if name == "SCGI"
    ));
}

#[test]
fn value_without_its_nul_is_rejected() {
    assert_eq!(
        error_of("value-unterminated"),
        HeadError::ValueUnterminated {
            name: "REQUEST_URI".into()
        }
    );
}

#[test]
fn name_without_its_nul_is_rejected() {
    assert_eq!(
        error_of("name-unterminated"),
        HeadError::NameUnterminated { offset: 57 }
    );
}

#[test]
fn empty_header_name_is_rejected() {
    assert_eq!(error_of("empty-name"), HeadError::EmptyName { offset: 57 });
}

#[test]
fn header_count_over_the_limit_is_rejected() {
    assert!(decode_vector("many-headers").error.is_none());
    let limits = Limits {
        max_params_count: 16,
        ..Limits::default()
    };
    let out = decode_vector_with("many-headers", limits, DuplicateNames::default());
    assert_eq!(out.error, Some(HeadError::TooManyHeaders { limit: 16 }));
}

#[test]
fn truncated_body_yields_what_arrived_then_eof_reports_the_shortfall() {
    let out = decode_vector("truncated-body");
    assert_eq!(out.error, None);
    assert_eq!(&body(&out)[..], b"What is th");
    assert!(!ended(&out));

    let mut codec = ScgiCodec::new(ScgiDecoder::new(Limits::default()));
    let mut buf = BytesMut::from(&vector("scgi", "truncated-body")[..]);
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Ok(Some(StreamEvent::Head(_)))
    ));
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Ok(Some(StreamEvent::Body(_)))
    ));
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Truncated(Truncated::InBody { remaining: 17 })
        ),
        "{err}"
    );
}

#[test]
fn bytes_after_the_body_stay_unconsumed_and_eof_reports_them() {
    let out = decode_vector("trailing-bytes");
    assert!(ended(&out));
    assert_eq!(out.left, 5);

    let mut codec = ScgiCodec::new(ScgiDecoder::new(Limits::default()));
    let mut buf = BytesMut::from(&vector("scgi", "trailing-bytes")[..]);
    let mut events = 0;
    let err = loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(_)) => events += 1,
            Ok(None) => panic!("clean end with bytes left"),
            Err(err) => break err,
        }
    };
    assert_eq!(events, 3);
    assert!(matches!(
        err,
        CodecError::Truncated(Truncated::TrailingBytes { count: 5 })
    ));
}

#[test]
fn connection_closed_before_any_byte_is_a_clean_end() {
    let mut codec = ScgiCodec::new(ScgiDecoder::new(Limits::default()));
    assert!(matches!(codec.decode_eof(&mut BytesMut::new()), Ok(None)));
    let mut partial = BytesMut::from(&b"70:CONT"[..]);
    assert!(matches!(
        codec.decode_eof(&mut partial),
        Err(CodecError::Truncated(Truncated::InHead { buffered: 7 }))
    ));
}

#[test]
fn an_error_is_sticky_and_the_phase_says_failed() {
    let mut dec = ScgiDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"x"[..]);
    let first = dec.decode(&mut buf).unwrap_err();
    assert_eq!(dec.phase(), Phase::Failed);
    buf.extend_from_slice(b"70:");
    assert_eq!(dec.decode(&mut buf).unwrap_err(), first);
}

// ---- captures from real front ends (scgi.md §6) ------------------------------

/// Decodes a capture in several read patterns and checks the vars against
/// its `.txt` view and the body against its framing line.
fn check_capture(name: &str) -> Outcome {
    let input = captured(name);
    let (framing, expected_vars) = captured_view(name);
    let length = number_after(&framing, "netstring length ");
    let body_bytes = number_after(&framing, "and ");
    let out = feed(
        ScgiDecoder::new(Limits::default()),
        Limits::default(),
        &input,
        &[usize::MAX],
    );
    for sizes in SIZE_PATTERNS {
        let again = feed(
            ScgiDecoder::new(Limits::default()),
            Limits::default(),
            &input,
            sizes,
        );
        assert_eq!(again, out, "{name}: reads of {sizes:?}");
    }
    assert_eq!(out.error, None, "{name}");
    let head = head(&out);
    assert_eq!(pairs(head), expected_vars, "{name}");
    assert_eq!(head.vars.block().len() as u64, length, "{name}");
    assert_eq!(body(&out).len() as u64, body_bytes, "{name}");
    assert_eq!(out.left, 0, "{name}");
    out
}

#[test]
fn nginx_scgi_post_gives_the_captured_vars_and_its_11_body_bytes() {
    let out = check_capture("nginx-scgi-post");
    assert_eq!(&body(&out)[..], b"hello=world");
    assert!(ended(&out));
}

#[test]
fn apache_scgi_post_gives_the_captured_vars_and_its_11_body_bytes() {
    let out = check_capture("apache-scgi-post");
    assert_eq!(head(&out).body, BodyFraming::Length(11));
    assert!(ended(&out));
}

#[test]
fn lighttpd_scgi_post_with_scgi_last_gives_the_captured_vars() {
    let out = check_capture("lighttpd-scgi-post");
    assert_eq!(head(&out).vars.get(b"SCGI"), Some(&b"1"[..]));
    assert!(ended(&out));
}

#[test]
fn nginx_chunked_head_decodes_up_to_the_cut_without_error() {
    // The capture stops 64 bytes into a 100 000-byte body: a truncated
    // stream is "need more", never an error, until EOF says otherwise.
    let out = check_capture("nginx-scgi-chunked.head");
    let head = head(&out);
    assert_eq!(head.body, BodyFraming::Length(100_000));
    assert_eq!(
        head.vars.get(b"HTTP_TRANSFER_ENCODING"),
        Some(&b"chunked"[..])
    );
    assert!(!ended(&out));
    let mut dec = ScgiDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&captured("nginx-scgi-chunked.head")[..]);
    while let Ok(Some(_)) = dec.decode(&mut buf) {}
    assert_eq!(dec.remaining_body(), 100_000 - 64);
    assert_eq!(dec.phase(), Phase::Body);
}

// ---- responses (scgi.md §5) --------------------------------------------------

#[test]
fn response_head_is_written_in_cgi_form() {
    let head = ResponseHead::new(&b"200 OK"[..]).header(&b"Content-Type"[..], &b"text/plain"[..]);
    let mut out = BytesMut::new();
    scgi::encode_head(&head, &mut out);
    assert_eq!(
        &out[..],
        b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    );
}

#[test]
fn every_head_error_maps_to_a_complete_cgi_response_with_a_real_status() {
    for name in COVERED {
        let Some(err) = decode_vector(name).error else {
            continue;
        };
        let status = err.status();
        assert!(status == "400 Bad Request" || status.starts_with("431 "));
        let response = scgi::error_response(status);
        let text = std::str::from_utf8(&response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("Status: {status}\r\n")), "{name}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}

// ---- properties (STYLE §6) ---------------------------------------------------

/// A header name a front end could send: non-empty, no NUL, and not one of
/// the two names that must be unique.
fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 1..24).prop_filter("framing names are unique", |n| {
        n != b"CONTENT_LENGTH" && n != b"SCGI"
    })
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 0..64)
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..40, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encoded_request_decodes_to_the_same_headers_and_body(
        extra in proptest::collection::vec((name(), value()), 0..12),
        body_bytes in proptest::collection::vec(any::<u8>(), 0..600),
        sizes in read_sizes(),
    ) {
        let mut headers = vec![
            p("CONTENT_LENGTH", &body_bytes.len().to_string()),
            p("SCGI", "1"),
        ];
        headers.extend(extra);
        let input = encode_scgi(&headers, &body_bytes);
        let out = feed(ScgiDecoder::new(Limits::default()), Limits::default(), &input, &sizes);
        prop_assert_eq!(&out.error, &None);
        prop_assert_eq!(pairs(head(&out)), headers);
        prop_assert_eq!(&body(&out)[..], &body_bytes[..]);
        prop_assert!(ended(&out));
        prop_assert_eq!(out.left, 0);
    }

    #[test]
    fn any_chunking_gives_the_same_events_as_one_read(
        extra in proptest::collection::vec((name(), value()), 0..6),
        body_bytes in proptest::collection::vec(any::<u8>(), 0..200),
        flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        sizes in read_sizes(),
    ) {
        // Valid requests, and the same with one byte changed, so error
        // paths are split too.
        let mut headers = vec![
            p("CONTENT_LENGTH", &body_bytes.len().to_string()),
            p("SCGI", "1"),
        ];
        headers.extend(extra);
        let mut input = encode_scgi(&headers, &body_bytes);
        if let Some((at, byte)) = flip {
            let i = at.index(input.len());
            input[i] = byte;
        }
        let limits = Limits::default();
        let whole = feed(ScgiDecoder::new(limits), limits, &input, &[usize::MAX]);
        prop_assert_eq!(&feed(ScgiDecoder::new(limits), limits, &input, &sizes), &whole);
        prop_assert_eq!(&feed(ScgiDecoder::new(limits), limits, &input, &[1]), &whole);
    }

    #[test]
    fn length_over_limit_gives_the_limit_error_without_a_large_allocation(
        limit in 0usize..100_000,
        excess in 1usize..1_000_000_000,
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let limits = Limits { max_params_bytes: limit, ..Limits::default() };
        let declared = limit + excess;
        let mut input = format!("{declared}:").into_bytes();
        input.extend_from_slice(&tail);
        let mut buf = BytesMut::from(&input[..]);
        let cap = buf.capacity();
        let err = ScgiDecoder::new(limits).decode(&mut buf).unwrap_err();
        prop_assert!(matches!(
            err,
            HeadError::HeaderBlockTooLarge { .. } | HeadError::LengthTooManyDigits { .. }
        ), "{}", err);
        prop_assert_eq!(err.status(), "431 Request Header Fields Too Large");
        prop_assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same_way(
        input in proptest::collection::vec(any::<u8>(), 0..256),
        sizes in read_sizes(),
    ) {
        let limits = Limits::default();
        let whole = feed(ScgiDecoder::new(limits), limits, &input, &[usize::MAX]);
        prop_assert_eq!(&feed(ScgiDecoder::new(limits), limits, &input, &sizes), &whole);
    }
}

// ---- fuzz corpus, replayed on stable (STYLE §6) ------------------------------

#[test]
fn fuzz_corpus_replays_without_a_finding() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/scgi_decode");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        wsgi_fpm::proto::fuzz::stream::scgi_decode(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    assert!(replayed > 0, "empty corpus at {}", dir.display());
}
