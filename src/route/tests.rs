//! Front-end params → environ, as tables. The cases mirror what each front
//! end was captured sending (`shared/frontends/BEHAVIOUR.md` §3–4).
use super::*;

fn vars(pairs: &[(&str, &str)]) -> CgiVars {
    CgiVars::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn get<'a>(env: &'a CgiEnviron<'_>, name: &str) -> Option<&'a [u8]> {
    env.vars
        .iter()
        .find(|(n, _)| n.as_ref() == name.as_bytes())
        .map(|(_, v)| v.as_ref())
}

fn split(pairs: &[(&str, &str)], mount: Option<&str>) -> (String, String) {
    let (s, p) = split_path(&vars(pairs), mount).unwrap();
    (String::from_utf8(s).unwrap(), String::from_utf8(p).unwrap())
}

#[test]
fn script_name_and_path_info_come_out_right_for_every_front_end() {
    // (front end, what it sent, mount, expected SCRIPT_NAME, PATH_INFO)
    let uri = "/mnt/app.py/extra/p%20q?a=1";
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        &'a str,
        &'a str,
    );
    let cases: &[Case] = &[
        (
            "nginx fastcgi stock params",
            vec![
                ("REQUEST_URI", uri),
                ("SCRIPT_NAME", "/mnt/app.py/extra/p q"),
            ],
            None,
            "",
            "/mnt/app.py/extra/p q",
        ),
        (
            "nginx fastcgi stock params, mounted",
            vec![
                ("REQUEST_URI", uri),
                ("SCRIPT_NAME", "/mnt/app.py/extra/p q"),
            ],
            Some("/mnt"),
            "/mnt",
            "/app.py/extra/p q",
        ),
        (
            "nginx uwsgi",
            vec![("REQUEST_URI", uri), ("PATH_INFO", "/mnt/app.py/extra/p q")],
            Some("/mnt"),
            "/mnt",
            "/app.py/extra/p q",
        ),
        (
            "apache proxypass",
            vec![
                ("REQUEST_URI", uri),
                ("SCRIPT_NAME", "/mnt/app.py/extra/p q"),
            ],
            Some("/mnt"),
            "/mnt",
            "/app.py/extra/p q",
        ),
        (
            "apache pathinfo=1 (encoded PATH_INFO)",
            vec![
                ("REQUEST_URI", uri),
                ("SCRIPT_NAME", "/mnt"),
                ("PATH_INFO", "/app.py/extra/p%20q"),
            ],
            Some("/mnt"),
            "/mnt",
            "/app.py/extra/p q",
        ),
        (
            "lighttpd prefix with slash",
            vec![
                ("REQUEST_URI", uri),
                ("SCRIPT_NAME", "/mnt/app.py"),
                ("PATH_INFO", "/extra/p q"),
            ],
            None,
            "",
            "/mnt/app.py/extra/p q",
        ),
        (
            "no REQUEST_URI: front end's split",
            vec![("SCRIPT_NAME", "/mnt"), ("PATH_INFO", "/a b")],
            Some("/mnt"),
            "/mnt",
            "/a b",
        ),
        (
            "mount root exactly",
            vec![("REQUEST_URI", "/mnt?x")],
            Some("/mnt"),
            "/mnt",
            "",
        ),
        (
            "utf-8 bytes decoded once",
            vec![("REQUEST_URI", "/caf%C3%A9/%252F")],
            None,
            "",
            "/caf\u{e9}/%2F",
        ),
        (
            "dot segments resolved",
            vec![("REQUEST_URI", "/a/./b/../c/")],
            None,
            "",
            "/a/c/",
        ),
        (
            "absolute-form target",
            vec![("REQUEST_URI", "http://h:8/x/y?q")],
            None,
            "",
            "/x/y",
        ),
    ];
    for (what, sent, mount, script, path) in cases {
        let (s, p) = split(sent, *mount);
        assert_eq!((s.as_str(), p.as_str()), (*script, *path), "{what}");
    }
}

#[test]
fn path_outside_mount_is_404_and_escaping_root_is_400() {
    let e = split_path(&vars(&[("REQUEST_URI", "/mntx/a")]), Some("/mnt")).unwrap_err();
    assert_eq!(e.status(), "404 Not Found");
    let e = split_path(&vars(&[("REQUEST_URI", "/a/../../etc")]), None).unwrap_err();
    assert_eq!(e.status(), "400 Bad Request");
}

#[test]
fn repeated_headers_join_and_meta_variables_keep_the_last() {
    let v = vars(&[
        ("HTTP_X_DUP", "a"),
        ("HTTP_COOKIE", "c=1"),
        ("REMOTE_USER", "user"),
        ("HTTP_X_DUP", "b"),
        ("HTTP_COOKIE", "d=2"),
        ("REMOTE_USER", "alice"),
        ("CONTENT_LENGTH", "5"),
        ("CONTENT_LENGTH", "5"),
    ]);
    let env = build(&v, &EnvironRules::default()).unwrap();
    assert_eq!(get(&env, "HTTP_X_DUP"), Some(&b"a, b"[..]));
    assert_eq!(get(&env, "HTTP_COOKIE"), Some(&b"c=1; d=2"[..]));
    assert_eq!(get(&env, "REMOTE_USER"), Some(&b"alice"[..]));
    assert_eq!(get(&env, "CONTENT_LENGTH"), Some(&b"5"[..]));
}

#[test]
fn two_different_content_lengths_are_a_bad_request() {
    let v = vars(&[("CONTENT_LENGTH", "5"), ("CONTENT_LENGTH", "6")]);
    let e = build(&v, &EnvironRules::default()).unwrap_err();
    assert_eq!(e.status(), "400 Bad Request");
    assert!(e.to_string().contains("\"5\""), "{e}");
}

#[test]
fn authorization_and_content_header_duplicates_are_hidden() {
    let v = vars(&[
        ("HTTP_AUTHORIZATION", "Basic dXNlcjpzZWNyZXQ="),
        ("HTTP_CONTENT_LENGTH", "3"),
        ("HTTP_CONTENT_TYPE", "text/plain"),
        ("CONTENT_TYPE", "text/plain"),
    ]);
    let env = build(&v, &EnvironRules::default()).unwrap();
    assert_eq!(get(&env, "HTTP_AUTHORIZATION"), None);
    assert_eq!(get(&env, "HTTP_CONTENT_LENGTH"), None);
    assert_eq!(get(&env, "HTTP_CONTENT_TYPE"), None);
    assert_eq!(get(&env, "CONTENT_TYPE"), Some(&b"text/plain"[..]));
    let rules = EnvironRules {
        pass_authorization: true,
        ..Default::default()
    };
    let env = build(&v, &rules).unwrap();
    assert_eq!(
        get(&env, "HTTP_AUTHORIZATION"),
        Some(&b"Basic dXNlcjpzZWNyZXQ="[..])
    );
}

#[test]
fn https_scheme_and_required_defaults() {
    for (sent, https) in [
        (vec![("HTTPS", "on")], true),
        (vec![("HTTPS", "1")], true),
        (vec![("REQUEST_SCHEME", "https")], true),
        (vec![("HTTPS", "off")], false),
        (vec![], false),
    ] {
        let sent_vars = vars(&sent);
        let env = build(&sent_vars, &EnvironRules::default()).unwrap();
        assert_eq!(env.https, https, "{sent:?}");
        for key in [
            "REQUEST_METHOD",
            "SERVER_NAME",
            "SERVER_PORT",
            "QUERY_STRING",
            "SCRIPT_NAME",
            "PATH_INFO",
        ] {
            assert!(get(&env, key).is_some(), "{key} missing for {sent:?}");
        }
    }
}

#[test]
fn head_can_be_mapped_to_get_but_stays_head_for_the_response() {
    let v = vars(&[("REQUEST_METHOD", "HEAD")]);
    let env = build(&v, &EnvironRules::default()).unwrap();
    assert_eq!(get(&env, "REQUEST_METHOD"), Some(&b"HEAD"[..]));
    assert!(env.is_head);
    let rules = EnvironRules {
        map_head_to_get: true,
        ..Default::default()
    };
    let env = build(&v, &rules).unwrap();
    assert_eq!(get(&env, "REQUEST_METHOD"), Some(&b"GET"[..]));
    assert!(env.is_head);
}

#[test]
fn percent_decoding_leaves_malformed_escapes_alone() {
    assert_eq!(percent_decode(b"%41%4a%zz%4"), b"AJ%zz%4".to_vec());
    assert_eq!(percent_decode(b"%FF%00"), vec![0xFF, 0x00]);
}
