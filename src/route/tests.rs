//! Front-end params → environ, as tables. The cases mirror what each front
//! end was captured sending (`shared/frontends/BEHAVIOUR.md` §3–4).
use super::*;
use crate::proto::Role;

const NO_RULES: EnvironRules = EnvironRules {
    mount: None,
    pass_authorization: false,
    map_head_to_get: false,
};

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
        ("REQUEST_METHOD", "GET"),
        ("HTTP_X_DUP", "a"),
        ("HTTP_COOKIE", "c=1"),
        ("REMOTE_USER", "user"),
        ("HTTP_X_DUP", "b"),
        ("HTTP_COOKIE", "d=2"),
        ("REMOTE_USER", "alice"),
        ("CONTENT_LENGTH", "5"),
        ("CONTENT_LENGTH", "5"),
    ]);
    let env = build(&v, Role::Responder, &NO_RULES).unwrap();
    assert_eq!(get(&env, "HTTP_X_DUP"), Some(&b"a, b"[..]));
    assert_eq!(get(&env, "HTTP_COOKIE"), Some(&b"c=1; d=2"[..]));
    assert_eq!(get(&env, "REMOTE_USER"), Some(&b"alice"[..]));
    assert_eq!(get(&env, "CONTENT_LENGTH"), Some(&b"5"[..]));
}

#[test]
fn two_different_content_lengths_are_a_bad_request() {
    let v = vars(&[
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_LENGTH", "5"),
        ("CONTENT_LENGTH", "6"),
    ]);
    let e = build(&v, Role::Responder, &NO_RULES).unwrap_err();
    assert_eq!(e.status(), "400 Bad Request");
    assert!(e.to_string().contains("\"5\""), "{e}");
}

#[test]
fn authorization_and_content_header_duplicates_are_hidden() {
    let v = vars(&[
        ("REQUEST_METHOD", "GET"),
        ("HTTP_AUTHORIZATION", "Basic dXNlcjpzZWNyZXQ="),
        ("HTTP_CONTENT_LENGTH", "3"),
        ("HTTP_CONTENT_TYPE", "text/plain"),
        ("CONTENT_TYPE", "text/plain"),
    ]);
    let env = build(&v, Role::Responder, &NO_RULES).unwrap();
    assert_eq!(get(&env, "HTTP_AUTHORIZATION"), None);
    assert_eq!(get(&env, "HTTP_CONTENT_LENGTH"), None);
    assert_eq!(get(&env, "HTTP_CONTENT_TYPE"), None);
    assert_eq!(get(&env, "CONTENT_TYPE"), Some(&b"text/plain"[..]));
    let rules = EnvironRules {
        pass_authorization: true,
        ..Default::default()
    };
    let env = build(&v, Role::Responder, &rules).unwrap();
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
        let env = build(&sent_vars, Role::Authorizer, &NO_RULES).unwrap();
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
    let env = build(&v, Role::Responder, &NO_RULES).unwrap();
    assert_eq!(get(&env, "REQUEST_METHOD"), Some(&b"HEAD"[..]));
    assert!(env.is_head);
    let rules = EnvironRules {
        map_head_to_get: true,
        ..Default::default()
    };
    let env = build(&v, Role::Responder, &rules).unwrap();
    assert_eq!(get(&env, "REQUEST_METHOD"), Some(&b"GET"[..]));
    assert!(env.is_head);
}

#[test]
fn percent_decoding_leaves_malformed_escapes_alone() {
    assert_eq!(percent_decode(b"%41%4a%zz%4"), b"AJ%zz%4".to_vec());
    assert_eq!(percent_decode(b"%FF%00"), vec![0xFF, 0x00]);
}

#[test]
fn percent_encoded_dot_segments_are_refused_not_resolved() {
    for uri in [
        "/app/%2e%2e/admin",
        "/public/..%2fadmin",
        "/a/%2E/b",
        "/x/.%2e/y",
    ] {
        let e = split_path(&vars(&[("REQUEST_URI", uri)]), None).unwrap_err();
        assert_eq!(e.status(), "400 Bad Request", "{uri}");
        assert!(
            matches!(e, EnvironError::EncodedDotSegment { .. }),
            "{uri}: {e}"
        );
    }
    // Plain dot segments are resolved as RFC 3986 says; dots inside names
    // are names.
    assert_eq!(split(&[("REQUEST_URI", "/a/./b/../c")], None).1, "/a/c");
    assert_eq!(
        split(&[("REQUEST_URI", "/a%2eb/c..d")], None).1,
        "/a.b/c..d"
    );
}

#[test]
fn a_responder_request_without_a_method_is_refused_but_an_authorizer_gets_get() {
    let v = vars(&[("REQUEST_URI", "/x")]);
    assert_eq!(
        build(&v, Role::Responder, &NO_RULES).unwrap_err(),
        EnvironError::NoMethod
    );
    let env = build(&v, Role::Authorizer, &NO_RULES).unwrap();
    assert_eq!(get(&env, "REQUEST_METHOD"), Some(&b"GET"[..]));
}

#[test]
fn an_empty_or_equal_repeated_content_length_is_no_conflict() {
    for pair in [("11", ""), ("", "11"), ("11", "11"), ("", "")] {
        let v = vars(&[
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_LENGTH", pair.0),
            ("CONTENT_LENGTH", pair.1),
        ]);
        let env = build(&v, Role::Responder, &NO_RULES);
        assert!(env.is_ok(), "{pair:?}: {env:?}");
        // The last one is what the application sees, as for any meta-variable.
        assert_eq!(
            get(&env.unwrap(), "CONTENT_LENGTH"),
            Some(pair.1.as_bytes())
        );
    }
}

#[test]
fn a_header_repeated_many_times_is_joined_once_in_order() {
    let mut pairs = vec![("REQUEST_METHOD".to_owned(), "GET".to_owned())];
    for i in 0..20_000 {
        pairs.push(("HTTP_X_MANY".to_owned(), i.to_string()));
    }
    let v = CgiVars::from_pairs(pairs.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    let env = build(&v, Role::Responder, &NO_RULES).unwrap();
    let joined = get(&env, "HTTP_X_MANY").unwrap();
    assert!(joined.starts_with(b"0, 1, 2, "));
    assert!(joined.ends_with(b", 19998, 19999"));
}

#[test]
fn derive_finds_the_split_the_scheme_and_the_missing_defaults_in_one_pass() {
    let v = vars(&[
        ("REQUEST_METHOD", "HEAD"),
        ("REQUEST_URI", "/mnt/x%20y?q=1"),
        ("SCRIPT_NAME", "/mnt/x y"),
        ("HTTPS", "on"),
        ("SERVER_NAME", "example.org"),
    ]);
    let rules = EnvironRules {
        mount: Some("/mnt".into()),
        map_head_to_get: true,
        ..Default::default()
    };
    let d = derive(&v, Role::Responder, &rules).unwrap();
    assert_eq!(
        (&d.script_name[..], &d.path_info[..]),
        (&b"/mnt"[..], &b"/x y"[..])
    );
    assert!(d.https && d.is_head && d.method_to_get);
    assert_eq!(d.missing, [false, false, true, true, true]);
    assert_eq!(d.orig_script_name, Some(&b"/mnt/x y"[..]));
    assert_eq!(d.orig_path_info, None);
}

#[test]
fn derive_knows_each_name_exactly_and_no_near_miss() {
    // Each name derive looks for, and names of the same length that share
    // its first and last eight bytes, or differ in one byte only.
    let exact = vars(&[
        ("REQUEST_METHOD", "GET"),
        ("SERVER_NAME", "a"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("QUERY_STRING", ""),
        ("PATH_INFO", "/p"),
        ("SCRIPT_NAME", "/s"),
        ("REQUEST_URI", "/s/p"),
        ("REQUEST_SCHEME", "https"),
        ("CONTENT_LENGTH", "3"),
        ("HTTP_X_REQUEST_START", "t=1"),
    ]);
    let d = derive(&exact, Role::Responder, &NO_RULES).unwrap();
    assert_eq!(d.missing, [false; 5]);
    assert_eq!((d.method, d.uri), (Some(&b"GET"[..]), Some(&b"/s/p"[..])));
    assert_eq!(
        (d.orig_script_name, d.orig_path_info),
        (Some(&b"/s"[..]), Some(&b"/p"[..]))
    );
    assert!(d.https);
    assert_eq!(d.request_start, Some(&b"t=1"[..]));

    let near = vars(&[
        ("REQUEST_METHOD", "GET"),
        ("SERVER_NAMF", "a"),
        ("SERVER_PORt", "80"),
        ("SERVER_PROTOCOm", "HTTP/1.1"),
        ("QUERY_STRINg", ""),
        ("PATH_INFo", "/p"),
        ("SCRIPT_NAMe", "/s"),
        ("REQUEST_URi", "/s/p"),
        ("REQUEST_SCHEMe", "https"),
        ("CONTENT_LENGTh", "3"),
        ("CONTENT_LENGTh", "4"),
        ("HTTP_X_REQXEST_START", "t=1"),
        ("HTTP_X_REQUESS_START", "t=1"),
        ("REQUEST_METHOD_", "POST"),
        ("HTTPs", "on"),
    ]);
    let d = derive(&near, Role::Responder, &NO_RULES).unwrap();
    assert_eq!(d.missing, [false, true, true, true, true]);
    assert_eq!((d.method, d.uri), (Some(&b"GET"[..]), None));
    assert_eq!((d.orig_script_name, d.orig_path_info), (None, None));
    assert!(!d.https);
    assert_eq!(d.request_start, None);
}

#[test]
fn a_front_end_variable_under_a_key_wsgi_fpm_sets_is_ignored() {
    for name in [
        "wsgi.input",
        "wsgi.url_scheme",
        "wsgi_fpm.request_id",
        "mod_wsgi.queue_start",
    ] {
        assert_eq!(rule(name.as_bytes(), &NO_RULES), NameRule::Drop, "{name}");
    }
    for name in ["WSGI_INPUT", "wsgi", "REMOTE_USER"] {
        assert_eq!(rule(name.as_bytes(), &NO_RULES), NameRule::Keep, "{name}");
    }
}
