//! uwsgi decoder tests: every hand-built vector of
//! `protocol-specs/vectors/uwsgi/` (sections of `protocol-specs/uwsgi.md`
//! cited), every uwsgi capture of `tests/vectors/captured/`, limits, response
//! encoding, the tokio-util adapter, properties, and the fuzz corpus replayed
//! on stable.

mod support;

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder as _;
use wsgi_fpm::proto::stream::{CodecError, Phase, StreamEvent, Truncated};
use wsgi_fpm::proto::uwsgi::{self, HeadError, UwsgiCodec, UwsgiDecoder};
use wsgi_fpm::proto::{BodyFraming, Limits, ResponseHead, Role};

use support::*;

type Outcome = wsgi_fpm::proto::fuzz::stream::Outcome<HeadError>;

fn decode_vector(name: &str) -> Outcome {
    decode_vector_with(name, Limits::default())
}

fn decode_vector_with(name: &str, limits: Limits) -> Outcome {
    let input = vector("uwsgi", name);
    feed_every_split(|| UwsgiDecoder::new(limits), limits, &input)
}

fn error_of(name: &str) -> HeadError {
    let outcome = decode_vector(name);
    assert!(outcome.events.is_empty(), "{name}: {:?}", outcome.events);
    outcome
        .error
        .unwrap_or_else(|| panic!("{name} decoded without error"))
}

fn path_info(name: &str) -> Vec<u8> {
    let out = decode_vector(name);
    head(&out).vars.get(b"PATH_INFO").unwrap().to_vec()
}

/// Vectors this file asserts; `every_vector_file_has_an_expectation` keeps
/// the list and the directory in step.
const COVERED: &[&str] = &[
    "body-split",
    "content-length-conflict",
    "content-length-invalid",
    "content-length-repeated-same",
    "datasize-over-limit",
    "empty-key",
    "empty-vars",
    "get",
    "http-request",
    "modifier1-0-keeps-path-info",
    "modifier1-30",
    "modifier1-30-not-a-prefix",
    "modifier1-30-trailing-slash",
    "modifier1-psgi",
    "modifier2-nonzero",
    "no-content-length",
    "post",
    "scgi-on-uwsgi",
    "trailing-bytes",
    "truncated-body",
    "vars-overrun",
    "vars-trailing-byte",
];

#[test]
fn every_vector_file_has_an_expectation() {
    assert_eq!(vector_names("uwsgi"), COVERED);
}

// ---- uwsgi.md §2–§4, hand-built vectors -------------------------------------

#[test]
fn get_with_empty_content_length_gives_head_then_end() {
    let out = decode_vector("get");
    assert_eq!(out.error, None);
    let head = head(&out);
    assert_eq!(
        pairs(head),
        vec![
            p("REQUEST_METHOD", "GET"),
            p("REQUEST_URI", "/hello?x=1"),
            p("QUERY_STRING", "x=1"),
            p("CONTENT_LENGTH", ""),
            p("PATH_INFO", "/hello"),
            p("SERVER_PROTOCOL", "HTTP/1.1"),
        ]
    );
    assert_eq!(head.role, Role::Responder);
    assert_eq!(head.body, BodyFraming::Length(0));
    assert_eq!(out.events.len(), 2);
    assert!(ended(&out));
}

#[test]
fn vars_block_is_shared_not_copied_per_var() {
    let input = vector("uwsgi", "get");
    let mut buf = BytesMut::from(&input[..]);
    let Some(StreamEvent::Head(head)) = UwsgiDecoder::new(Limits::default())
        .decode(&mut buf)
        .unwrap()
    else {
        panic!("no head");
    };
    assert_eq!(&head.vars.block()[..], &input[4..]);
    let block = head.vars.block().as_ptr_range();
    for (key, value) in head.vars.iter() {
        assert!(block.contains(&key.as_ptr()));
        assert!(value.is_empty() || block.contains(&value.as_ptr()));
    }
}

#[test]
fn post_body_follows_the_vars_for_content_length_bytes() {
    let out = decode_vector("post");
    assert_eq!(head(&out).body, BodyFraming::Length(11));
    assert_eq!(&body(&out)[..], b"hello=world");
    assert!(ended(&out));
    assert_eq!(out.left, 0);
}

#[test]
fn absent_content_length_means_no_body() {
    let out = decode_vector("no-content-length");
    assert_eq!(head(&out).body, BodyFraming::Length(0));
    assert!(ended(&out));
}

#[test]
fn empty_vars_block_is_a_head_with_no_vars() {
    let out = decode_vector("empty-vars");
    assert!(head(&out).vars.is_empty());
    assert!(ended(&out));
}

#[test]
fn body_split_at_any_offset_gives_the_same_events() {
    let out = decode_vector("body-split");
    let expected: Vec<u8> = (0..300).map(|i| ((i * 7) % 251) as u8).collect();
    assert_eq!(&body(&out)[..], &expected[..]);
    assert!(ended(&out));
    for sizes in SIZE_PATTERNS {
        let input = vector("uwsgi", "body-split");
        let again = feed(
            UwsgiDecoder::new(Limits::default()),
            Limits::default(),
            &input,
            sizes,
        );
        assert_eq!(again, out, "reads of {sizes:?}");
    }
}

#[test]
fn modifier1_30_strips_script_name_from_path_info() {
    assert_eq!(path_info("modifier1-30"), b"/x/y");
    let out = decode_vector("modifier1-30");
    assert_eq!(head(&out).vars.get(b"SCRIPT_NAME"), Some(&b"/app"[..]));
}

#[test]
fn modifier1_30_keeps_the_slash_when_script_name_ends_in_one() {
    assert_eq!(path_info("modifier1-30-trailing-slash"), b"/x");
}

#[test]
fn modifier1_30_strips_only_at_a_segment_boundary() {
    assert_eq!(path_info("modifier1-30-not-a-prefix"), b"/application");
}

#[test]
fn modifier1_0_passes_path_info_as_sent() {
    assert_eq!(path_info("modifier1-0-keeps-path-info"), b"/app/x/y");
}

#[test]
fn scgi_sent_to_a_uwsgi_port_is_named_as_such() {
    let err = error_of("scgi-on-uwsgi");
    assert_eq!(
        err,
        HeadError::LooksLikeScgi {
            header: "70:C".into()
        }
    );
    assert!(err
        .to_string()
        .contains("this looks like SCGI; check lighttpd's scgi.protocol"));
}

#[test]
fn scgi_is_recognised_from_the_first_four_bytes_alone() {
    for prefix in [&b"474:"[..], b"1000", b"9:"] {
        let mut buf = BytesMut::from(prefix);
        let result = UwsgiDecoder::new(Limits::default()).decode(&mut buf);
        if prefix.len() < 4 {
            assert_eq!(result, Ok(None), "waits for the 4-byte header");
        } else {
            assert!(
                matches!(result, Err(HeadError::LooksLikeScgi { .. })),
                "{result:?}"
            );
        }
    }
}

#[test]
fn non_wsgi_modifier1_is_rejected_naming_it() {
    let err = error_of("modifier1-psgi");
    assert_eq!(
        err,
        HeadError::UnsupportedModifier1 {
            modifier1: 5,
            meaning: "PSGI/Perl"
        }
    );
    assert!(err.to_string().contains("modifier1 5"));
}

#[test]
fn http_sent_to_a_uwsgi_port_is_rejected_as_modifier1_71() {
    assert!(matches!(
        error_of("http-request"),
        HeadError::UnsupportedModifier1 { modifier1: 71, .. }
    ));
}

#[test]
fn nonzero_modifier2_is_rejected() {
    assert_eq!(
        error_of("modifier2-nonzero"),
        HeadError::UnsupportedModifier2 { modifier2: 1 }
    );
}

#[test]
fn value_running_past_datasize_is_rejected() {
    assert_eq!(
        error_of("vars-overrun"),
        HeadError::VarsOverrun {
            field: "value",
            offset: 18,
            needed: 3,
            left: 0,
            datasize: 18
        }
    );
}

#[test]
fn stray_byte_before_datasize_ends_is_rejected() {
    assert!(matches!(
        error_of("vars-trailing-byte"),
        HeadError::VarsOverrun {
            field: "key length",
            needed: 2,
            left: 1,
            ..
        }
    ));
}

#[test]
fn empty_key_is_rejected() {
    assert!(matches!(error_of("empty-key"), HeadError::EmptyKey { .. }));
}

#[test]
fn datasize_over_limit_is_rejected_before_buffering() {
    let limits = Limits {
        max_params_bytes: 4096,
        ..Limits::default()
    };
    let out = decode_vector_with("datasize-over-limit", limits);
    let err = out.error.unwrap();
    assert_eq!(
        err,
        HeadError::VarsTooLarge {
            datasize: 65535,
            limit: 4096
        }
    );
    assert_eq!(err.status(), "431 Request Header Fields Too Large");
    let mut buf = BytesMut::from(&vector("uwsgi", "datasize-over-limit")[..]);
    let cap = buf.capacity();
    assert!(UwsgiDecoder::new(limits).decode(&mut buf).is_err());
    assert_eq!(buf.capacity(), cap, "no room was made for the vars");
    // Under the default limit the same header just waits for its vars.
    let mut buf = BytesMut::from(&vector("uwsgi", "datasize-over-limit")[..]);
    assert_eq!(
        UwsgiDecoder::new(Limits::default()).decode(&mut buf),
        Ok(None)
    );
}

#[test]
fn var_count_over_the_limit_is_rejected() {
    let limits = Limits {
        max_params_count: 5,
        ..Limits::default()
    };
    let out = decode_vector_with("get", limits);
    assert_eq!(out.error, Some(HeadError::TooManyVars { limit: 5 }));
}

#[test]
fn two_different_content_lengths_are_a_bad_request() {
    let err = error_of("content-length-conflict");
    assert_eq!(
        err,
        HeadError::ContentLengthConflict {
            first: "5".into(),
            second: "6".into()
        }
    );
    assert_eq!(err.status(), "400 Bad Request");
}

#[test]
fn the_same_content_length_twice_is_accepted() {
    let out = decode_vector("content-length-repeated-same");
    assert_eq!(&body(&out)[..], b"hello");
    assert!(ended(&out));
}

#[test]
fn non_numeric_content_length_is_rejected() {
    assert_eq!(
        error_of("content-length-invalid"),
        HeadError::ContentLengthInvalid {
            value: "abc".into()
        }
    );
}

#[test]
fn truncated_body_yields_what_arrived_then_eof_reports_the_shortfall() {
    let out = decode_vector("truncated-body");
    assert_eq!(out.error, None);
    assert_eq!(&body(&out)[..], b"hello");
    assert!(!ended(&out));

    let mut codec = UwsgiCodec::new(UwsgiDecoder::new(Limits::default()));
    let mut buf = BytesMut::from(&vector("uwsgi", "truncated-body")[..]);
    let mut events = 0;
    let err = loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(_)) => events += 1,
            Ok(None) => panic!("clean end with the body short"),
            Err(err) => break err,
        }
    };
    assert_eq!(events, 2);
    assert!(
        matches!(
            err,
            CodecError::Truncated(Truncated::InBody { remaining: 6 })
        ),
        "{err}"
    );
}

#[test]
fn bytes_after_the_body_stay_unconsumed_and_eof_reports_them() {
    let out = decode_vector("trailing-bytes");
    assert!(ended(&out));
    assert_eq!(out.left, 5);
    let mut codec = UwsgiCodec::new(UwsgiDecoder::new(Limits::default()));
    let mut buf = BytesMut::from(&vector("uwsgi", "trailing-bytes")[..]);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    assert_eq!(&buf[..], b"EXTRA");
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Err(CodecError::Truncated(Truncated::TrailingBytes { count: 5 }))
    ));
}

#[test]
fn an_error_is_sticky_and_the_phase_says_failed() {
    let mut dec = UwsgiDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"\x05\x00\x00\x00"[..]);
    let first = dec.decode(&mut buf).unwrap_err();
    assert_eq!(dec.phase(), Phase::Failed);
    assert_eq!(dec.decode(&mut buf).unwrap_err(), first);
}

// ---- captures from real front ends (uwsgi.md §6) -----------------------------

fn check_capture(name: &str) -> Outcome {
    let input = captured(name);
    let (framing, expected_vars) = captured_view(name);
    assert_eq!(number_after(&framing, "modifier1="), u64::from(input[0]));
    let datasize = number_after(&framing, "size=");
    let body_bytes = number_after(&framing, "; ");
    let out = feed(
        UwsgiDecoder::new(Limits::default()),
        Limits::default(),
        &input,
        &[usize::MAX],
    );
    for sizes in SIZE_PATTERNS {
        let again = feed(
            UwsgiDecoder::new(Limits::default()),
            Limits::default(),
            &input,
            sizes,
        );
        assert_eq!(again, out, "{name}: reads of {sizes:?}");
    }
    assert_eq!(out.error, None, "{name}");
    let head = head(&out);
    assert_eq!(pairs(head), expected_vars, "{name}");
    assert_eq!(head.vars.block().len() as u64, datasize, "{name}");
    assert_eq!(head.body, BodyFraming::Length(body_bytes), "{name}");
    assert_eq!(body(&out).len() as u64, body_bytes, "{name}");
    assert!(ended(&out), "{name}");
    assert_eq!(out.left, 0, "{name}");
    out
}

#[test]
fn nginx_uwsgi_get_keeps_repeated_headers_as_separate_vars() {
    let out = check_capture("nginx-uwsgi-get");
    let head = head(&out);
    assert_eq!(
        head.vars.get_all(b"HTTP_COOKIE").collect::<Vec<_>>(),
        vec![&b"a=1"[..], &b"b=2"[..]]
    );
    assert_eq!(head.vars.get(b"CONTENT_LENGTH"), Some(&b""[..]));
}

#[test]
fn nginx_uwsgi_post_gives_the_captured_vars_and_its_11_body_bytes() {
    let out = check_capture("nginx-uwsgi-post");
    assert_eq!(&body(&out)[..], b"hello=world");
}

#[test]
fn apache_uwsgi_get_without_content_length_has_no_body() {
    let out = check_capture("apache-uwsgi-get");
    assert_eq!(head(&out).vars.get(b"CONTENT_LENGTH"), None);
}

#[test]
fn lighttpd_uwsgi_get_gives_the_captured_vars() {
    let out = check_capture("lighttpd-uwsgi-get");
    assert_eq!(head(&out).vars.get(b"HTTP_X_UNDER"), Some(&b"u"[..]));
}

// ---- responses (uwsgi.md §5) -------------------------------------------------

#[test]
fn response_head_is_written_with_an_http_status_line() {
    let head = ResponseHead::new(&b"200 OK"[..]).header(&b"Content-Type"[..], &b"text/plain"[..]);
    let mut out = BytesMut::new();
    uwsgi::encode_head(&head, &mut out);
    assert_eq!(
        &out[..],
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    );
}

#[test]
fn every_head_error_maps_to_a_complete_http_response_with_a_real_status() {
    let limits = Limits {
        max_params_bytes: 4096,
        ..Limits::default()
    };
    for name in COVERED {
        let Some(err) = decode_vector_with(name, limits).error else {
            continue;
        };
        let status = err.status();
        let response = uwsgi::error_response(status);
        let text = std::str::from_utf8(&response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{name}"
        );
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}

// ---- properties (STYLE §6) ---------------------------------------------------

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..24)
        .prop_filter("CONTENT_LENGTH frames the body", |k| k != b"CONTENT_LENGTH")
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..40, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encoded_request_decodes_to_the_same_vars_and_body(
        extra in proptest::collection::vec((key(), value()), 0..12),
        body_bytes in proptest::collection::vec(any::<u8>(), 0..600),
        with_length in any::<bool>(),
        sizes in read_sizes(),
    ) {
        let mut vars = extra;
        if with_length || !body_bytes.is_empty() {
            vars.insert(0, p("CONTENT_LENGTH", &body_bytes.len().to_string()));
        }
        let input = encode_uwsgi(0, &vars, &body_bytes);
        let out = feed(UwsgiDecoder::new(Limits::default()), Limits::default(), &input, &sizes);
        prop_assert_eq!(&out.error, &None);
        prop_assert_eq!(pairs(head(&out)), vars);
        prop_assert_eq!(&body(&out)[..], &body_bytes[..]);
        prop_assert!(ended(&out));
        prop_assert_eq!(out.left, 0);
    }

    #[test]
    fn any_chunking_gives_the_same_events_as_one_read(
        extra in proptest::collection::vec((key(), value()), 0..6),
        body_bytes in proptest::collection::vec(any::<u8>(), 0..200),
        flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        sizes in read_sizes(),
    ) {
        let mut vars = extra;
        vars.push(p("CONTENT_LENGTH", &body_bytes.len().to_string()));
        let mut input = encode_uwsgi(0, &vars, &body_bytes);
        if let Some((at, byte)) = flip {
            let i = at.index(input.len());
            input[i] = byte;
        }
        let limits = Limits::default();
        let whole = feed(UwsgiDecoder::new(limits), limits, &input, &[usize::MAX]);
        prop_assert_eq!(&feed(UwsgiDecoder::new(limits), limits, &input, &sizes), &whole);
        prop_assert_eq!(&feed(UwsgiDecoder::new(limits), limits, &input, &[1]), &whole);
    }

    #[test]
    fn datasize_over_limit_gives_the_limit_error_without_a_large_allocation(
        limit in 0usize..65535,
        datasize in 1u16..=65535,
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        prop_assume!(usize::from(datasize) > limit);
        let limits = Limits { max_params_bytes: limit, ..Limits::default() };
        let mut input = vec![0u8];
        input.extend_from_slice(&datasize.to_le_bytes());
        input.push(0);
        input.extend_from_slice(&tail);
        let mut buf = BytesMut::from(&input[..]);
        let cap = buf.capacity();
        let err = UwsgiDecoder::new(limits).decode(&mut buf).unwrap_err();
        prop_assert_eq!(err, HeadError::VarsTooLarge { datasize: usize::from(datasize), limit });
        prop_assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same_way(
        input in proptest::collection::vec(any::<u8>(), 0..256),
        sizes in read_sizes(),
    ) {
        let limits = Limits::default();
        let whole = feed(UwsgiDecoder::new(limits), limits, &input, &[usize::MAX]);
        prop_assert_eq!(&feed(UwsgiDecoder::new(limits), limits, &input, &sizes), &whole);
    }
}

// ---- fuzz corpus, replayed on stable (STYLE §6) ------------------------------

#[test]
fn fuzz_corpus_replays_without_a_finding() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus/uwsgi_decode");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        wsgi_fpm::proto::fuzz::stream::uwsgi_decode(&std::fs::read(&path).unwrap());
        replayed += 1;
    }
    assert!(replayed > 0, "empty corpus at {}", dir.display());
}
