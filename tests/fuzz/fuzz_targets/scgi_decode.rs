//! SCGI decoder fuzz target. The input's first bytes pick the limits and the
//! read sizes; the rest is the byte stream, decoded whole and in those reads,
//! which must agree (see `wsgi_fpm::proto::fuzz::stream`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsgi_fpm::proto::fuzz::stream::scgi_decode(data);
});
