//! Fuzz body for the auth responder's peer-controlled decoders: the
//! `Authorization` header ([`basic::parse`], [`digest::parse`]), the
//! response a Digest header must carry ([`digest::expected_response`]) and
//! the client's nonce ([`NonceStore::check`]). Called by the cargo-fuzz
//! target `tests/fuzz/fuzz_targets/auth_header.rs` and by the corpus replay
//! in `cargo test` (`tests/fuzz_corpus.rs`).
//!
//! The input is header text (lossy UTF-8, as the responder reads
//! `HTTP_AUTHORIZATION`). It is decoded four ways: split into scheme and
//! parameters as the responder splits it; whole, as Basic's token and as
//! Digest's parameters, so that inputs without a scheme reach both parsers;
//! as the quoted `nc` of an otherwise valid Digest header; and as the
//! quoted `nonce` and `username` of one. Checks: no panic, Basic's user and
//! password are the decoded bytes (UTF-8, else Latin-1) split at the first
//! `:`, a parsed Digest header re-serializes to one that parses to the same
//! credentials, `nc` parses exactly when it is eight hex digits and is their
//! value, a quoted value is taken verbatim, `expected_response` is 32
//! lowercase hex digits whatever the realm hash's case, a nonce from the
//! input is `Forged` in a store that issued nothing, and a nonce issued by
//! a store is valid once per rising count there and nowhere else.
//!
//! A failed check panics: that is how a fuzzer learns of it. Nothing here is
//! used by the server.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use base64::Engine;

use super::basic;
use super::digest::{self, Algorithm, DigestCredentials};
use super::nonce::{self, NonceCheck, NonceStore};

/// The clock the nonce checks run at, fixed so that runs replay.
const NOW: u64 = 1_700_000_000;
const LIFETIME: u64 = super::DEFAULT_NONCE_LIFETIME;

struct Stores {
    /// Never issues a nonce: whatever the input says is forged here. (A
    /// nonce this process issued may reach the input through libFuzzer's
    /// comparison hints, so the store that issues is another one.)
    pristine: NonceStore,
    /// Issues the nonces whose checks are tested.
    issuing: NonceStore,
    _fds: [OwnedFd; 2],
}

/// Both stores, made on first use and kept for the process: each needs a
/// memfd and a mapping, too slow to make per input.
fn stores() -> &'static Stores {
    static STORES: OnceLock<Stores> = OnceLock::new();
    STORES.get_or_init(|| {
        let a = nonce::create().expect("create a nonce file");
        let b = nonce::create().expect("create a nonce file");
        Stores {
            pristine: NonceStore::open(&a).expect("map a nonce file"),
            issuing: NonceStore::open(&b).expect("map a nonce file"),
            _fds: [a, b],
        }
    })
}

/// Fuzz entry point: `data` is an `Authorization` header value.
pub fn auth_header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    // As `answer::Credentials::from_header` splits it.
    let header = text.trim();
    let (scheme, rest) = header.split_once([' ', '\t']).unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("Basic") {
        check_basic(rest);
    } else if scheme.eq_ignore_ascii_case("Digest") {
        check_digest(rest);
    }

    check_basic(&text);
    check_digest(&text);
    check_nc_value(&text);
    check_quoted_values(&text);
}

/// A Basic token: parsed credentials are exactly the decoded bytes.
fn check_basic(token: &str) {
    let Some(c) = basic::parse(token) else {
        return;
    };
    assert!(!c.user.contains(':'), "the user name holds a colon");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .expect("parse accepted it, so it is base64");
    let joined = format!("{}:{}", c.user, c.password);
    match std::str::from_utf8(&raw) {
        Ok(s) => assert_eq!(joined, s, "UTF-8 credentials changed"),
        Err(_) => {
            let latin1: Option<Vec<u8>> = joined.chars().map(|ch| u8::try_from(ch).ok()).collect();
            assert_eq!(
                latin1.as_deref(),
                Some(&raw[..]),
                "Latin-1 credentials changed"
            );
        }
    }
    let again = base64::engine::general_purpose::STANDARD.encode(&joined);
    assert_eq!(
        basic::parse(&again),
        Some(c),
        "own encoding parses differently"
    );
}

/// Digest parameters: for a header that parses, a re-serialization
/// round-trips, the expected response is well formed, and the nonce checks
/// hold.
fn check_digest(params: &str) {
    let c = match digest::parse(params) {
        Ok(c) => c,
        Err(e) => {
            // Every refusal has a message (it goes to the log).
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(
        !c.response.bytes().any(|b| b.is_ascii_uppercase()),
        "response not lowercased"
    );
    assert_eq!(
        digest::parse(&serialize(&c)).as_ref(),
        Ok(&c),
        "own serialization parses differently"
    );

    // expected_response: a realm hash as get_realm_hash returns it, in
    // either case, and arbitrary text as hash and method.
    let ha1 = digest::realm_hash(&c.username, &c.realm, "Circle of Life");
    let expected = digest::expected_response(&ha1, &c, "GET");
    assert!(is_md5_hex(&expected), "expected response {expected:?}");
    assert_eq!(
        digest::expected_response(&ha1.to_ascii_uppercase(), &c, "GET"),
        expected,
        "the realm hash's case changed the response"
    );
    assert!(is_md5_hex(&digest::expected_response(params, &c, params)));

    // The client's nonce was issued by no store in this process.
    let stores = stores();
    let verdict = stores.pristine.check(&c.nonce, c.nc, NOW, LIFETIME);
    assert_eq!(verdict, NonceCheck::Forged, "unissued nonce {:?}", c.nonce);

    // The same header with a nonce the issuing store just made, carried
    // through the header as a client would send it.
    let mut fresh = c;
    fresh.nonce = stores.issuing.issue(NOW);
    let fresh = digest::parse(&serialize(&fresh)).expect("own serialization parses");
    let store = &stores.issuing;
    assert_eq!(
        store.check(&fresh.nonce, fresh.nc, NOW + LIFETIME + 1, LIFETIME),
        NonceCheck::Stale
    );
    assert_eq!(
        stores.pristine.check(&fresh.nonce, fresh.nc, NOW, LIFETIME),
        NonceCheck::Forged,
        "another pool's nonce accepted"
    );
    let first = store.check(&fresh.nonce, fresh.nc, NOW, LIFETIME);
    if fresh.nc == 0 {
        // A fresh slot has seen count 0.
        assert_eq!(first, NonceCheck::Replayed);
    } else {
        assert_eq!(first, NonceCheck::Valid, "fresh nonce, count {}", fresh.nc);
    }
    assert_eq!(
        store.check(&fresh.nonce, fresh.nc, NOW, LIFETIME),
        NonceCheck::Replayed
    );
    if let Some(next) = fresh.nc.checked_add(1) {
        assert_eq!(
            store.check(&fresh.nonce, next, NOW + LIFETIME, LIFETIME),
            NonceCheck::Valid
        );
    }
}

/// The text as the (quoted) nonce count of an otherwise valid header: it
/// parses exactly when it is eight hex digits (RFC 7616 `nc-value =
/// 8LHEX`), to their value.
fn check_nc_value(nc: &str) {
    let header = format!(
        r#"username="u", realm="r", nonce="n", uri="/", response="0", cnonce="c", qop=auth, nc="{}""#,
        super::quote(nc)
    );
    let hex8 = nc.len() == 8 && nc.bytes().all(|b| b.is_ascii_hexdigit());
    match digest::parse(&header) {
        Ok(c) => {
            assert!(
                hex8,
                "nc {nc:?} is not 8 hex digits, yet parsed as {:#010x}",
                c.nc
            );
            assert_eq!(Some(c.nc), u32::from_str_radix(nc, 16).ok());
        }
        Err(e) => assert!(!hex8, "nc {nc:?} is 8 hex digits, yet refused: {e}"),
    }
}

/// The text as quoted `username` and `nonce`: taken verbatim, and the nonce
/// is forged.
fn check_quoted_values(value: &str) {
    let q = super::quote(value);
    let header = format!(
        r#"username="{q}", realm="r", nonce="{q}", uri="/", response="0", cnonce="c", qop=auth, nc=00000001"#
    );
    let c = digest::parse(&header).expect("a valid header with quoted values");
    assert_eq!(c.username, value);
    assert_eq!(c.nonce, value);
    assert_eq!(
        stores().pristine.check(&c.nonce, c.nc, NOW, LIFETIME),
        NonceCheck::Forged,
        "unissued nonce {value:?}"
    );
}

/// The header a client would send for `c` (every string quoted).
fn serialize(c: &DigestCredentials) -> String {
    let q = super::quote;
    let algorithm = match c.algorithm {
        Algorithm::Md5 => "MD5",
        Algorithm::Md5Sess => "MD5-sess",
    };
    format!(
        r#"username="{}", realm="{}", nonce="{}", uri="{}", response="{}", algorithm={algorithm}, cnonce="{}", nc={:08x}, qop=auth"#,
        q(&c.username),
        q(&c.realm),
        q(&c.nonce),
        q(&c.uri),
        q(&c.response),
        q(&c.cnonce),
        c.nc,
    )
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
