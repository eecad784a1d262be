#![no_main]
//! See `wsgi_fpm::proto::fuzz::fastcgi::fastcgi_conn`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsgi_fpm::proto::fuzz::fastcgi::fastcgi_conn(data);
});
