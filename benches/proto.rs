//! Micro-benchmarks of the sans-IO codecs.
//!
//! - `fastcgi/decode nginx-fastcgi-get`: the captured nginx GET, bytes to
//!   its `Request` event (and the end-of-body event), on a fresh
//!   connection each time, as a new connection would see it.
//! - `fastcgi/encode 64KiB stdout`: a 64 KiB response body into STDOUT
//!   records (65535 + 1 bytes, each padded to 8) and taken out with
//!   `poll_transmit`, in the steady state of a streamed response;
//! - `fastcgi/encode 64KiB stdout + end_request`: the same plus the end of
//!   the request, on a fresh connection (a cold output buffer).
//!
//! Run: `cargo bench --bench proto -- --warm-up-time 1 --measurement-time 3`

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use wsgi_fpm::proto::fastcgi::{Event, ProtocolStatus, RequestId, ServerConn, Settings};
use wsgi_fpm::proto::Limits;

const SETTINGS: Settings = Settings {
    max_conns: 64,
    max_reqs: 64,
    mpxs_conns: true,
};

fn capture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/vectors/captured/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decode(c: &mut Criterion) {
    let bytes = capture("nginx-fastcgi-get.bin");
    let mut group = c.benchmark_group("fastcgi");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("decode nginx-fastcgi-get", |b| {
        b.iter_batched(
            || BytesMut::from(&bytes[..]),
            |mut buf| {
                let mut conn = ServerConn::new(Limits::default(), SETTINGS);
                conn.receive(&mut buf).expect("valid capture");
                let Some(Event::Request { head, .. }) = conn.poll_event() else {
                    panic!("no request event");
                };
                black_box(head);
                black_box(conn.poll_event());
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let body = vec![b'x'; 64 * 1024];
    // A connection with one live request (id 1) to answer.
    let request = capture("nginx-fastcgi-get.bin");
    let mut group = c.benchmark_group("fastcgi");
    group.throughput(Throughput::Bytes(body.len() as u64));
    // Steady state: one long response streamed in 64 KiB chunks; the
    // output buffer is reclaimed once the previous transmit is dropped.
    group.bench_function("encode 64KiB stdout", |b| {
        let mut conn = ServerConn::new(Limits::default(), SETTINGS);
        let mut buf = BytesMut::from(&request[..]);
        conn.receive(&mut buf).expect("valid capture");
        while conn.poll_event().is_some() {}
        b.iter(|| {
            conn.send_stdout(RequestId(1), black_box(&body));
            black_box(conn.poll_transmit())
        })
    });
    // Cold: a fresh connection per response, so a fresh output buffer.
    group.bench_function("encode 64KiB stdout + end_request", |b| {
        b.iter_batched(
            || {
                let mut conn = ServerConn::new(Limits::default(), SETTINGS);
                let mut buf = BytesMut::from(&request[..]);
                conn.receive(&mut buf).expect("valid capture");
                while conn.poll_event().is_some() {}
                conn
            },
            |mut conn| {
                conn.send_stdout(RequestId(1), black_box(&body));
                conn.end_request(RequestId(1), 0, ProtocolStatus::RequestComplete);
                black_box(conn.poll_transmit());
                conn
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
