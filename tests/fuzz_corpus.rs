//! Replays the committed fuzz corpus (`tests/fuzz/corpus/<target>/*`) through
//! the same target bodies that cargo-fuzz runs, so a plain `cargo test` on
//! the stable toolchain keeps every seed and every past crash fixed.

use std::path::PathBuf;
use wsgi_fpm::auth;
use wsgi_fpm::proto::fuzz::fastcgi;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let name = file.display().to_string();
        // Name the input that broke, then let the panic through.
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "fuzz input {name} fails");
    }
}

#[test]
fn fastcgi_record_corpus_replays_cleanly() {
    replay("fastcgi_record", fastcgi::fastcgi_record);
}

#[test]
fn fastcgi_nv_corpus_replays_cleanly() {
    replay("fastcgi_nv", fastcgi::fastcgi_nv);
}

#[test]
fn fastcgi_conn_corpus_replays_cleanly() {
    replay("fastcgi_conn", fastcgi::fastcgi_conn);
}

#[test]
fn auth_header_corpus_replays_cleanly() {
    replay("auth_header", auth::fuzz::auth_header);
}

#[test]
fn scgi_decode_corpus_replays_cleanly() {
    replay("scgi_decode", wsgi_fpm::proto::fuzz::stream::scgi_decode);
}

#[test]
fn uwsgi_decode_corpus_replays_cleanly() {
    replay("uwsgi_decode", wsgi_fpm::proto::fuzz::stream::uwsgi_decode);
}
