//! `Authorization` header fuzz target (auth responder): the input is header
//! text for the Basic and Digest parsers, the Digest response and the nonce
//! store (see `wsgi_fpm::auth::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsgi_fpm::auth::fuzz::auth_header(data);
});
