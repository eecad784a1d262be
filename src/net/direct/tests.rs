use super::*;

fn state() -> AfterState {
    AfterState {
        kind: Kind::FastCgi,
        broken: false,
        ended: true,
        cancelled: false,
        body_done: true,
        keep_conn: true,
        wants_close: false,
        retiring: false,
    }
}

#[test]
fn what_happens_to_a_connection_after_its_response() {
    let base = state();
    let cases: Vec<(&str, AfterState, After)> = vec![
        ("fastcgi keep-conn, all read", base, After::KeepAlive),
        (
            "fastcgi keep-conn, body unread: late STDIN is dropped by the codec",
            AfterState {
                body_done: false,
                ..base
            },
            After::KeepAlive,
        ),
        (
            "fastcgi without keep-conn, all read",
            AfterState {
                keep_conn: false,
                wants_close: true,
                ..base
            },
            After::Close,
        ),
        (
            "fastcgi without keep-conn, body still coming",
            AfterState {
                keep_conn: false,
                wants_close: true,
                body_done: false,
                ..base
            },
            After::Linger,
        ),
        (
            "retiring keeps a kept connection: the front end may be reusing it",
            AfterState {
                retiring: true,
                ..base
            },
            After::KeepAlive,
        ),
        (
            "a broken connection closes at once",
            AfterState {
                broken: true,
                body_done: false,
                ..base
            },
            After::Close,
        ),
        (
            "a response the application never ended, body unread",
            AfterState {
                ended: false,
                body_done: false,
                ..base
            },
            After::Linger,
        ),
        (
            "a cancelled request closes",
            AfterState {
                cancelled: true,
                ..base
            },
            After::Close,
        ),
        (
            "scgi, all read",
            AfterState {
                kind: Kind::Scgi,
                keep_conn: false,
                ..base
            },
            After::Close,
        ),
        (
            "uwsgi, body unread",
            AfterState {
                kind: Kind::Uwsgi,
                keep_conn: false,
                body_done: false,
                ..base
            },
            After::Linger,
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(decide(&s), want, "{name}");
    }
}
