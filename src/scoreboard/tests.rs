use super::*;
use proptest::prelude::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const NOW: u64 = 1_700_000_000_000;

/// The master's board and a worker's mapping of slot `slot` through its own
/// descriptor, as two processes would have them.
fn pair(slots: usize, threads: usize) -> (Scoreboard, WorkerSlot, usize) {
    let board = Scoreboard::create(slots, threads).unwrap();
    let slot = board.claim().unwrap();
    let worker = WorkerSlot::open(board.fd().try_clone().unwrap(), slot).unwrap();
    (board, worker, slot)
}

fn busy(t: &ThreadActivity) -> &CurrentRequest {
    match t {
        ThreadActivity::Busy(r) => r,
        other => panic!("expected a busy thread, got {other:?}"),
    }
}

#[test]
fn what_a_worker_writes_the_master_reads_through_its_own_mapping() {
    let (board, w, slot) = pair(4, 2);
    w.set_state(WorkerState::Idle);
    w.accepted();
    w.accepted();
    w.request();
    w.slow_request();
    w.queue_timeout();
    w.queue_full();
    w.queue_full();
    w.heartbeat(NOW - 500);
    w.rss(31_000_000);
    w.last_request(1234, -4096);
    w.record(700, 10, 20);
    w.thread(1)
        .unwrap()
        .begin(b"req-1", b"GET", b"/x?y=1", NOW - 200);

    let s = board.read(slot, NOW).unwrap();
    assert_eq!(s.state, WorkerState::Busy, "a thread serving makes it busy");
    assert_eq!(s.counters.accepted, 2);
    assert_eq!(s.counters.requests, 1);
    assert_eq!(s.counters.slow_requests, 1);
    assert_eq!(s.counters.queue_timeouts, 1);
    assert_eq!(s.counters.queue_full, 2);
    assert_eq!(s.heartbeat_unix_ms, Some(NOW - 500));
    assert_eq!(board.heartbeat_ms(slot), Some(NOW - 500));
    assert_eq!(s.rss_bytes, Some(31_000_000));
    assert_eq!(
        (s.last_request_cpu_us, s.last_request_rss_delta),
        (1234, -4096)
    );
    assert_eq!(s.counters.duration.count(), 1);
    assert_eq!(s.counters.duration.sum_us, 700);
    assert_eq!(s.counters.gil_wait.sum_us, 20);
    assert_eq!(s.threads[0], ThreadActivity::Idle);
    let r = busy(&s.threads[1]);
    assert_eq!(
        (r.request_id.as_str(), r.method.as_str(), r.uri.as_str()),
        ("req-1", "GET", "/x?y=1")
    );
    assert_eq!((r.thread, r.seconds), (1, 0.2));
    assert_eq!(s.busy_threads(), 1);

    w.thread(1).unwrap().end();
    let s = board.read(slot, NOW).unwrap();
    assert_eq!(s.state, WorkerState::Idle);
    assert_eq!(s.busy_threads(), 0);
}

#[test]
fn a_fresh_slot_reads_as_starting_with_nothing_counted() {
    let (board, _w, slot) = pair(1, 3);
    let s = board.read(slot, NOW).unwrap();
    assert_eq!(s.state, WorkerState::Starting);
    assert_eq!(s.counters, Counters::default());
    assert_eq!((s.heartbeat_unix_ms, s.rss_bytes), (None, None));
    assert_eq!(s.threads, vec![ThreadActivity::Idle; 3]);
}

#[test]
fn a_retiring_worker_stays_retiring_while_it_finishes_requests() {
    let (board, w, slot) = pair(1, 1);
    w.set_state(WorkerState::Retiring);
    w.thread(0).unwrap().begin(b"r", b"POST", b"/", NOW);
    assert_eq!(board.read(slot, NOW).unwrap().state, WorkerState::Retiring);
}

#[test]
fn histogram_buckets_hold_values_up_to_and_including_their_bound() {
    let (board, w, slot) = pair(1, 1);
    w.record(500, 0, 0); // le 0.0005
    w.record(501, 0, 0); // le 0.001
    w.record(10_000_000, 0, 0); // le 10
    w.record(10_000_001, 0, 0); // +Inf
    let h = board.read(slot, NOW).unwrap().counters.duration;
    assert_eq!(h.buckets[0], 1);
    assert_eq!(h.buckets[1], 1);
    assert_eq!(h.buckets[BUCKETS - 2], 1);
    assert_eq!(h.buckets[BUCKETS - 1], 1);
    assert_eq!(h.count(), 4);
    let c = h.cumulative();
    assert_eq!((c[0], c[1], c[BUCKETS - 2], c[BUCKETS - 1]), (1, 2, 3, 4));
    assert_eq!(h.sum_us, 500 + 501 + 10_000_000 + 10_000_001);
    // queue and GIL wait went to their own bucket 0 (0 µs ≤ 0.5 ms).
    let q = board.read(slot, NOW).unwrap().counters.queue;
    assert_eq!((q.buckets[0], q.count(), q.sum_us), (4, 4, 0));
}

#[test]
fn a_reaped_workers_counters_stay_in_the_pool_totals_and_its_slot_comes_back_clear() {
    let board = Scoreboard::create(2, 1).unwrap();
    let a = board.claim().unwrap();
    let b = board.claim().unwrap();
    assert_eq!(board.claim(), None, "two slots, both taken");
    let wa = WorkerSlot::open(board.fd().try_clone().unwrap(), a).unwrap();
    let wb = WorkerSlot::open(board.fd().try_clone().unwrap(), b).unwrap();
    for _ in 0..3 {
        wa.request();
    }
    wb.request();
    wa.record(2_000, 0, 0);
    assert_eq!(board.totals().requests, 4);

    let gone = board.take(a, NOW).unwrap();
    assert_eq!(gone.counters.requests, 3);
    assert!(!board.is_claimed(a));
    assert_eq!(board.totals().requests, 4, "totals never go down");
    assert_eq!(board.totals().duration.count(), 1);
    assert_eq!(board.take(a, NOW), None, "taken once");

    let again = board.claim().unwrap();
    assert_eq!(again, a);
    let fresh = board.read(again, NOW).unwrap();
    assert_eq!(fresh.counters, Counters::default());
    wb.request();
    assert_eq!(board.totals().requests, 5);
}

#[test]
fn reset_frees_a_slot_without_counting_it() {
    let (board, w, slot) = pair(1, 1);
    w.request();
    board.reset(slot);
    assert!(!board.is_claimed(slot));
    assert_eq!(board.totals().requests, 0);
    assert_eq!(board.read(slot, NOW).unwrap().counters.requests, 0);
}

#[test]
fn the_queue_count_is_pool_wide_and_a_dead_workers_share_is_given_back() {
    let board = Scoreboard::create(2, 1).unwrap();
    let a = board.claim().unwrap();
    let b = board.claim().unwrap();
    let wa = WorkerSlot::open(board.fd().try_clone().unwrap(), a).unwrap();
    let wb = WorkerSlot::open(board.fd().try_clone().unwrap(), b).unwrap();
    wa.set_queued(2);
    wb.set_queued(1);
    assert_eq!(board.queued(), 3);
    wb.set_queued(0);
    wa.set_queued(2);
    assert_eq!(board.queued(), 2, "an unchanged count moves nothing");
    // Worker a dies with two requests waiting.
    board.take(a, NOW).unwrap();
    assert_eq!(board.queued(), 0);
    wb.set_queued(4);
    assert_eq!(board.queued(), 4);
}

#[test]
fn a_scribbled_queue_count_reads_as_an_empty_queue_not_a_huge_one() {
    let (board, w, slot) = pair(1, 1);
    w.set_queued(u64::MAX);
    assert!(board.queued() <= MAX_COUNTER);
    w.set_queued(0);
    assert_eq!(board.queued(), 0);
    assert_eq!(board.read(slot, NOW).unwrap().queued, 0);
}

#[test]
fn long_fields_are_truncated_to_their_size() {
    let (board, w, slot) = pair(1, 1);
    let id = vec![b'i'; 100];
    let method = vec![b'M'; 30];
    let uri = vec![b'u'; 1000];
    w.thread(0).unwrap().begin(&id, &method, &uri, NOW);
    let s = board.read(slot, NOW).unwrap();
    let r = busy(&s.threads[0]);
    assert_eq!(r.request_id.len(), REQUEST_ID_BYTES);
    assert_eq!(r.method.len(), METHOD_BYTES);
    assert_eq!(r.uri.len(), URI_BYTES);
}

#[test]
fn control_characters_and_bad_utf8_are_escaped_not_passed_on() {
    let (board, w, slot) = pair(1, 1);
    let mut uri = "/\u{202e}gpj.exe\\".as_bytes().to_vec();
    uri.push(0xff);
    w.thread(0).unwrap().begin(b"id\n2", b"G\x1b[2J", &uri, NOW);
    let s = board.read(slot, NOW).unwrap();
    let r = busy(&s.threads[0]);
    assert_eq!(r.request_id, "id\\x0a2");
    assert_eq!(r.method, "G\\x1b[2J");
    assert_eq!(r.uri, "/\\u{202e}gpj.exe\\\\\u{fffd}");
    assert!(!r.uri.chars().any(char::is_control));
}

#[test]
fn a_thread_beyond_the_regions_threads_has_no_record() {
    let (_board, w, _slot) = pair(1, 2);
    assert!(w.thread(1).is_some());
    assert!(w.thread(2).is_none());
}

#[test]
fn a_start_in_the_future_reads_as_zero_seconds() {
    let (board, w, slot) = pair(1, 1);
    w.thread(0).unwrap().begin(b"r", b"GET", b"/", NOW + 60_000);
    let s = board.read(slot, NOW).unwrap();
    assert_eq!(busy(&s.threads[0]).seconds, 0.0);
}

#[test]
fn a_record_left_mid_write_reads_as_unavailable_at_once() {
    let (board, w, slot) = pair(1, 1);
    w.thread(0).unwrap().begin(b"r", b"GET", b"/", NOW);
    // The worker died (or the application wrote) between the two sequence
    // stores: the number stays odd.
    w.thread(0)
        .unwrap()
        .block
        .seq
        .fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let s = board.read(slot, NOW).unwrap();
    assert_eq!(s.threads[0], ThreadActivity::Unavailable);
    assert!(started.elapsed() < std::time::Duration::from_millis(50));
    assert_eq!(s.busy_threads(), 1, "someone is writing it: not idle");
}

#[test]
fn a_reader_never_sees_a_record_torn_between_two_requests() {
    // One thread rewrites its record as fast as it can with requests whose
    // fields all derive from one number; a reader on another mapping checks
    // that every busy record it gets is one whole request.
    let (board, w, slot) = pair(1, 1);
    let w = Arc::new(w);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (w, stop) = (w.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let d = (b'a' + (n % 26) as u8) as char;
                let id = d.to_string().repeat(1 + (n % 40) as usize);
                let uri = format!("/{}", d.to_string().repeat((n % 255) as usize));
                let t = w.thread(0).unwrap();
                t.begin(id.as_bytes(), &[d as u8; 3], uri.as_bytes(), n);
                if n % 3 == 0 {
                    t.end();
                }
            }
        })
    };
    // Until enough whole records were seen (or 10 s on a machine too busy
    // to schedule the writer): the count of reads proves nothing by itself.
    let mut seen = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen < 1_000 && std::time::Instant::now() < deadline {
        let s = board.read(slot, u64::MAX).unwrap();
        if let ThreadActivity::Busy(r) = &s.threads[0] {
            let n = r.started_unix_ms;
            let d = (b'a' + (n % 26) as u8) as char;
            assert_eq!(r.request_id, d.to_string().repeat(1 + (n % 40) as usize));
            assert_eq!(r.method, d.to_string().repeat(3));
            assert_eq!(
                r.uri,
                format!("/{}", d.to_string().repeat((n % 255) as usize))
            );
            seen += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(seen > 0, "the reader saw no request at all");
}

#[test]
fn a_region_too_large_is_refused_at_creation() {
    assert!(Scoreboard::create(100_000, 1_000).is_err());
    assert!(Scoreboard::create(0, 1).is_err());
    assert_eq!(region_bytes(usize::MAX, usize::MAX), None);
}

#[test]
fn a_worker_refuses_a_slot_beyond_the_region_or_a_header_that_lies() {
    let board = Scoreboard::create(2, 1).unwrap();
    assert!(WorkerSlot::open(board.fd().try_clone().unwrap(), 2).is_err());
    board
        .map
        .header()
        .unwrap()
        .threads
        .store(7, Ordering::Relaxed);
    assert!(WorkerSlot::open(board.fd().try_clone().unwrap(), 0).is_err());
    let not_a_board = tempfile::tempfile().unwrap();
    assert!(WorkerSlot::open(not_a_board.into(), 0).is_err());
}

#[test]
fn the_master_ignores_a_header_rewritten_by_a_worker() {
    let (board, w, slot) = pair(2, 2);
    w.request();
    let h = board.map.header().unwrap();
    h.slots.store(u64::MAX, Ordering::Relaxed);
    h.threads.store(u64::MAX, Ordering::Relaxed);
    let s = board.read(slot, NOW).unwrap();
    assert_eq!((s.threads.len(), s.counters.requests), (2, 1));
    assert!(board.read(2, NOW).is_none());
}

#[test]
fn clean_text_keeps_ordinary_text_as_it_is() {
    assert_eq!(
        clean_text("/café/ünïcode?q=1&x=%20".as_bytes()),
        "/café/ünïcode?q=1&x=%20"
    );
}

fn check_sane(board: &Scoreboard, slots: usize, threads: usize) {
    for slot in 0..slots {
        let s = board.read(slot, NOW).unwrap();
        assert_eq!(s.threads.len(), threads);
        assert!(s.busy_threads() <= threads);
        let c = &s.counters;
        for v in [
            c.accepted,
            c.requests,
            c.slow_requests,
            c.queue_timeouts,
            c.queue_full,
        ] {
            assert!(v <= MAX_COUNTER);
        }
        assert!(c.duration.count() <= MAX_COUNTER);
        assert!(c.duration.cumulative().windows(2).all(|w| w[0] <= w[1]));
        assert!(s.last_request_rss_delta.unsigned_abs() <= MAX_COUNTER);
        assert!(s.queued <= MAX_COUNTER);
        for t in &s.threads {
            if let ThreadActivity::Busy(r) = t {
                assert!(r.request_id.chars().all(|c| !c.is_control()));
                assert!(r.method.chars().all(|c| !c.is_control()));
                assert!(r.uri.chars().all(|c| !c.is_control()));
                // Escaping at most multiplies each byte by 10 (\u{fffd}).
                assert!(r.uri.len() <= URI_BYTES * 10);
                assert!(r.seconds.is_finite() && r.seconds >= 0.0);
                assert!(r.started_unix_ms <= NOW);
            }
        }
    }
    assert!(board.queued() <= MAX_COUNTER);
    let t = board.totals();
    assert!(t.requests <= MAX_COUNTER && t.duration.sum_us <= MAX_COUNTER);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_over_the_whole_region_leaves_the_reader_sane(
        garbage in proptest::collection::vec(any::<u8>(), region_bytes(3, 2).unwrap()),
    ) {
        let board = Scoreboard::create(3, 2).unwrap();
        let a = board.claim().unwrap();
        let _b = board.claim().unwrap();
        // What a scribbling application does: writes through its own
        // descriptor of the region, everywhere, header included.
        let written = nix::sys::uio::pwrite(board.fd(), &garbage, 0).unwrap();
        prop_assert_eq!(written, garbage.len());
        check_sane(&board, 3, 2);
        // Folding garbage in, then reusing the slot, stays sane too.
        board.take(a, NOW).unwrap();
        check_sane(&board, 3, 2);
        prop_assert_eq!(board.claim(), Some(a));
        prop_assert_eq!(board.read(a, NOW).unwrap().counters, Counters::default());
        let _ = WorkerSlot::open(board.fd().try_clone().unwrap(), 0);
    }

    #[test]
    fn short_strings_come_back_exactly(
        id in "[a-zA-Z0-9-]{0,40}", method in "[A-Z]{0,16}", uri in "/[a-z0-9/?=&.]{0,255}",
    ) {
        let (board, w, slot) = pair(1, 1);
        w.thread(0).unwrap().begin(id.as_bytes(), method.as_bytes(), uri.as_bytes(), NOW);
        let s = board.read(slot, NOW).unwrap();
        let r = busy(&s.threads[0]);
        prop_assert_eq!(&r.request_id, &id);
        prop_assert_eq!(&r.method, &method);
        prop_assert_eq!(&r.uri, &uri);
    }
}

#[test]
fn the_listen_queue_counts_are_the_pools_shared_by_every_worker() {
    let board = Scoreboard::create(2, 1).unwrap();
    let a = WorkerSlot::open(board.fd().try_clone().unwrap(), board.claim().unwrap()).unwrap();
    let b = WorkerSlot::open(board.fd().try_clone().unwrap(), board.claim().unwrap()).unwrap();
    assert_eq!(a.taken_from(0), Some(0));
    assert_eq!(b.taken_from(0), Some(1));
    assert_eq!(b.taken_from(1), Some(0));
    assert_eq!(
        (a.taken(0), a.taken(1), b.taken(2)),
        (Some(2), Some(1), Some(0))
    );
    // Beyond the listeners that are dated: nothing counted, nothing read.
    assert_eq!(a.taken_from(BACKLOG_LISTENERS), None);
    assert_eq!(a.taken(BACKLOG_LISTENERS), None);
    assert_eq!(b.backlog_seen(), None);
    a.saw_backlog(Some(NOW));
    assert_eq!(b.backlog_seen(), Some(NOW));
    a.saw_backlog(None);
    assert_eq!(b.backlog_seen(), None);
}

#[test]
fn one_worker_watches_at_a_time_and_a_lapsed_lease_passes_on() {
    let board = Scoreboard::create(2, 1).unwrap();
    let a = WorkerSlot::open(board.fd().try_clone().unwrap(), board.claim().unwrap()).unwrap();
    let b = WorkerSlot::open(board.fd().try_clone().unwrap(), board.claim().unwrap()).unwrap();
    assert!(a.watch(NOW, 250), "the first asker takes the lease");
    assert!(!b.watch(NOW + 100, 250), "held by another until NOW + 250");
    assert!(a.watch(NOW + 200, 250), "the holder renews");
    assert!(!b.watch(NOW + 450, 250), "renewed until NOW + 450");
    assert!(b.watch(NOW + 451, 250), "lapsed: the next asker takes it");
    assert!(!a.watch(NOW + 452, 250));
    b.stop_watching();
    assert!(a.watch(NOW + 453, 250), "given up: free at once");
    a.stop_watching();
    b.stop_watching(); // not the holder's: changes nothing
    assert!(b.watch(NOW + 454, 250));
}
