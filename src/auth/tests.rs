//! The answers of SPEC §6's table, with a script in Rust standing in for
//! the Python one.

use super::answer::Context;
use super::digest::{self, Algorithm, DigestCredentials};
use super::nonce::{self, NonceStore};
use super::*;
use crate::proto::{BodyFraming, CgiVars, RequestHead, Role};
use base64::Engine;

#[derive(Default)]
struct Script {
    missing: Vec<Function>,
    raises: Vec<Function>,
    calls: Vec<String>,
}

const REALM: &str = "site";

impl AuthScript for Script {
    fn defines(&self, f: Function) -> bool {
        !self.missing.contains(&f)
    }
    fn check_password(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<PasswordVerdict, ScriptFailed> {
        self.calls.push(format!("check_password {user}"));
        if self.raises.contains(&Function::CheckPassword) {
            return Err(ScriptFailed);
        }
        Ok(match (user, password) {
            ("alice", "secret") => PasswordVerdict::Granted {
                user: None,
                variables: vec![],
            },
            ("carol", "pw") => PasswordVerdict::Granted {
                user: Some("Carol".into()),
                variables: vec![],
            },
            ("dave", "pw") => PasswordVerdict::Granted {
                user: None,
                variables: vec![("PROCESS_GROUP".into(), "blue".into())],
            },
            ("evil", "pw") => PasswordVerdict::Granted {
                user: None,
                variables: vec![("X".into(), "a\r\nSet-Cookie: x".into())],
            },
            ("alice" | "carol" | "dave", _) => PasswordVerdict::Denied,
            _ => PasswordVerdict::NoSuchUser,
        })
    }
    fn get_realm_hash(&mut self, user: &str, realm: &str) -> Result<Option<String>, ScriptFailed> {
        self.calls.push(format!("get_realm_hash {user}"));
        if self.raises.contains(&Function::GetRealmHash) {
            return Err(ScriptFailed);
        }
        Ok((user == "alice").then(|| digest::realm_hash("alice", realm, "secret")))
    }
    fn groups_for_user(&mut self, user: &str) -> Result<Vec<String>, ScriptFailed> {
        self.calls.push(format!("groups_for_user {user}"));
        if self.raises.contains(&Function::GroupsForUser) {
            return Err(ScriptFailed);
        }
        Ok(match user {
            "alice" => vec!["staff".into(), "admins".into()],
            _ => vec!["staff".into()],
        })
    }
    fn allow_access(&mut self, host: &str) -> Result<bool, ScriptFailed> {
        self.calls.push(format!("allow_access {host}"));
        if self.raises.contains(&Function::AllowAccess) {
            return Err(ScriptFailed);
        }
        Ok(host != "10.0.0.66")
    }
}

fn config() -> AuthConfig {
    AuthConfig {
        script: Some("/srv/auth.wsgi".into()),
        realm: REALM.into(),
        nonce_lifetime: 300,
        mount: Some("/_auth".into()),
        ..AuthConfig::default()
    }
}

fn vars(pairs: &[(&str, &str)]) -> CgiVars {
    CgiVars::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn ask(q: Question, v: &[(&str, &str)], config: &AuthConfig, script: &mut Script) -> Answer {
    let ctx = Context {
        config,
        scheme: Scheme::Basic,
        nonces: None,
        now: 1000,
    };
    answer(q, &vars(v), &ctx, script)
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn classify_follows_role_apache_role_mount_and_flag() {
    let head = |role, v: &[(&str, &str)]| RequestHead {
        vars: vars(v),
        role,
        body: BodyFraming::None,
    };
    let c = config();
    let a = Role::Authorizer;
    assert_eq!(
        classify(&head(a, &[("FCGI_APACHE_ROLE", "AUTHENTICATOR")]), &c),
        Some(Question::Authenticate)
    );
    assert_eq!(
        classify(&head(a, &[("FCGI_APACHE_ROLE", "AUTHORIZER")]), &c),
        Some(Question::Authorize)
    );
    assert_eq!(
        classify(&head(a, &[("FCGI_APACHE_ROLE", "ACCESS_CHECKER")]), &c),
        Some(Question::AccessCheck)
    );
    assert_eq!(classify(&head(a, &[]), &c), Some(Question::Authorizer));
    let r = Role::Responder;
    assert_eq!(
        classify(
            &head(
                r,
                &[("DOCUMENT_URI", "/_auth"), ("REQUEST_URI", "/private/x")]
            ),
            &c
        ),
        Some(Question::SubRequest)
    );
    assert_eq!(
        classify(&head(r, &[("REQUEST_URI", "/_auth/check?x=1")]), &c),
        Some(Question::SubRequest)
    );
    assert_eq!(classify(&head(r, &[("REQUEST_URI", "/_authx")]), &c), None);
    assert_eq!(
        classify(
            &head(r, &[("REQUEST_URI", "/app"), ("WSGI_FPM_AUTH", "1")]),
            &c
        ),
        Some(Question::SubRequest)
    );
    assert_eq!(classify(&head(r, &[("REQUEST_URI", "/app")]), &c), None);
    // Without any script an authorizer request is the application's.
    let none = AuthConfig::default();
    assert_eq!(classify(&head(a, &[]), &none), None);
    assert_eq!(classify(&head(r, &[("WSGI_FPM_AUTH", "1")]), &none), None);
    let access_only = AuthConfig {
        access_script: Some("/a".into()),
        ..AuthConfig::default()
    };
    assert_eq!(
        classify(
            &head(a, &[("FCGI_APACHE_ROLE", "ACCESS_CHECKER")]),
            &access_only
        ),
        Some(Question::AccessCheck)
    );
}

#[test]
fn a_generic_authorizer_takes_remote_user_and_remote_passwd_when_the_password_is_sent() {
    // Apache mod_authnz_fcgi's authnz type named in AuthBasicProvider: no
    // FCGI_APACHE_ROLE, no Authorization header, the decoded credentials.
    let mut s = Script::default();
    let a = ask(
        Question::Authorizer,
        &[("REMOTE_USER", "alice"), ("REMOTE_PASSWD", "secret")],
        &config(),
        &mut s,
    );
    assert_eq!(a.status, 200, "{}", a.reason);
    assert_eq!(header(&a, "Variable-REMOTE_USER"), Some("alice"));
    let wrong = ask(
        Question::Authorizer,
        &[("REMOTE_USER", "alice"), ("REMOTE_PASSWD", "nope")],
        &config(),
        &mut s,
    );
    assert_eq!(wrong.status, 401);
    // Without REMOTE_PASSWD the header still counts (lighttpd).
    let basic = ask(
        Question::Authorizer,
        &[
            ("REMOTE_USER", "mallory"),
            ("HTTP_AUTHORIZATION", "Basic YWxpY2U6c2VjcmV0"),
        ],
        &config(),
        &mut s,
    );
    assert_eq!(basic.status, 200, "{}", basic.reason);
    assert_eq!(header(&basic, "Variable-REMOTE_USER"), Some("alice"));
}

#[test]
fn apache_authenticator_grants_with_only_variable_headers() {
    let mut s = Script::default();
    let a = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "alice"), ("REMOTE_PASSWD", "secret")],
        &config(),
        &mut s,
    );
    assert_eq!(a.status, 200);
    assert_eq!(
        a.headers,
        vec![("Variable-REMOTE_USER".to_owned(), "alice".to_owned())]
    );
}

#[test]
fn canonical_names_and_returned_variables_go_back_to_the_front_end() {
    let mut s = Script::default();
    let a = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "carol"), ("REMOTE_PASSWD", "pw")],
        &config(),
        &mut s,
    );
    assert_eq!(header(&a, "Variable-REMOTE_USER"), Some("Carol"));
    let a = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "dave"), ("REMOTE_PASSWD", "pw")],
        &config(),
        &mut s,
    );
    assert_eq!(header(&a, "Variable-REMOTE_USER"), Some("dave"));
    assert_eq!(header(&a, "Variable-PROCESS_GROUP"), Some("blue"));
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_401_with_a_challenge() {
    let mut s = Script::default();
    let wrong = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "alice"), ("REMOTE_PASSWD", "nope")],
        &config(),
        &mut s,
    );
    let unknown = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "zed"), ("REMOTE_PASSWD", "nope")],
        &config(),
        &mut s,
    );
    assert_eq!(
        (wrong.status, &wrong.headers),
        (unknown.status, &unknown.headers)
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(
        header(&wrong, "WWW-Authenticate"),
        Some("Basic realm=\"site\", charset=\"UTF-8\"")
    );
    assert!(!wrong.reason.contains("nope") && !unknown.reason.contains("nope"));
}

#[test]
fn no_credentials_is_401_and_never_reaches_the_script() {
    let mut s = Script::default();
    let a = ask(Question::Authenticate, &[], &config(), &mut s);
    assert_eq!(a.status, 401);
    assert!(s.calls.is_empty());
}

#[test]
fn apache_authenticator_checks_a_group_requirement_with_401() {
    let mut s = Script::default();
    let c = AuthConfig {
        require_group: vec!["admins".into()],
        ..config()
    };
    let bob = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "carol"), ("REMOTE_PASSWD", "pw")],
        &c,
        &mut s,
    );
    assert_eq!(bob.status, 401);
    let alice = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "alice"), ("REMOTE_PASSWD", "secret")],
        &c,
        &mut s,
    );
    assert_eq!(alice.status, 200);
}

#[test]
fn apache_authorizer_checks_groups_from_config_or_the_front_end() {
    let mut s = Script::default();
    let c = AuthConfig {
        require_group: vec!["admins".into()],
        ..config()
    };
    assert_eq!(
        ask(Question::Authorize, &[("REMOTE_USER", "alice")], &c, &mut s).status,
        200
    );
    assert_eq!(
        ask(Question::Authorize, &[("REMOTE_USER", "bob")], &c, &mut s).status,
        403
    );
    // The front end's requirement wins over the pool's.
    let v = [
        ("REMOTE_USER", "bob"),
        ("WSGI_FPM_REQUIRE_GROUP", "wheel, staff"),
    ];
    assert_eq!(ask(Question::Authorize, &v, &c, &mut s).status, 200);
    // No requirement: any authenticated user; no user: refused.
    assert_eq!(
        ask(
            Question::Authorize,
            &[("REMOTE_USER", "bob")],
            &config(),
            &mut s
        )
        .status,
        200
    );
    assert_eq!(ask(Question::Authorize, &[], &config(), &mut s).status, 403);
    let a = ask(Question::Authorize, &[("REMOTE_USER", "alice")], &c, &mut s);
    assert!(a.headers.is_empty());
}

#[test]
fn access_checker_asks_allow_access_with_the_host() {
    let mut s = Script::default();
    assert_eq!(
        ask(
            Question::AccessCheck,
            &[("REMOTE_ADDR", "127.0.0.1")],
            &config(),
            &mut s
        )
        .status,
        200
    );
    assert_eq!(
        ask(
            Question::AccessCheck,
            &[("REMOTE_ADDR", "10.0.0.66")],
            &config(),
            &mut s
        )
        .status,
        403
    );
    assert_eq!(
        s.calls,
        ["allow_access 127.0.0.1", "allow_access 10.0.0.66"]
    );
    let mut without = Script {
        missing: vec![Function::AllowAccess],
        ..Script::default()
    };
    assert_eq!(
        ask(
            Question::AccessCheck,
            &[("REMOTE_ADDR", "127.0.0.1")],
            &config(),
            &mut without
        )
        .status,
        403
    );
}

#[test]
fn generic_authorizer_checks_host_then_credentials_then_groups() {
    let mut s = Script::default();
    let c = AuthConfig {
        require_group: vec!["admins".into()],
        ..config()
    };
    let ok = ask(
        Question::Authorizer,
        &[
            ("HTTP_AUTHORIZATION", &basic("alice", "secret")),
            ("REMOTE_ADDR", "127.0.0.1"),
        ],
        &c,
        &mut s,
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers,
        vec![("Variable-REMOTE_USER".to_owned(), "alice".to_owned())]
    );
    let host = ask(
        Question::Authorizer,
        &[
            ("HTTP_AUTHORIZATION", &basic("alice", "secret")),
            ("REMOTE_ADDR", "10.0.0.66"),
        ],
        &c,
        &mut s,
    );
    assert_eq!(host.status, 403);
    let group = ask(
        Question::Authorizer,
        &[("HTTP_AUTHORIZATION", &basic("carol", "pw"))],
        &c,
        &mut s,
    );
    assert_eq!(group.status, 403);
    let wrong = ask(
        Question::Authorizer,
        &[("HTTP_AUTHORIZATION", &basic("alice", "x"))],
        &c,
        &mut s,
    );
    assert_eq!(wrong.status, 401);
    // A REMOTE_USER without a password to check counts for nothing.
    let forged = ask(
        Question::Authorizer,
        &[("REMOTE_USER", "alice")],
        &c,
        &mut s,
    );
    assert_eq!(forged.status, 401);
    // With REMOTE_PASSWD (SPEC §6) the pair is checked like a header's.
    let decoded = ask(
        Question::Authorizer,
        &[("REMOTE_USER", "alice"), ("REMOTE_PASSWD", "x")],
        &c,
        &mut s,
    );
    assert_eq!(decoded.status, 401);
}

#[test]
fn nginx_subrequest_answers_with_headers_for_auth_request_set() {
    let mut s = Script::default();
    let v = [("HTTP_AUTHORIZATION", basic("dave", "pw"))];
    let v: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = ask(Question::SubRequest, &v, &config(), &mut s);
    assert_eq!(a.status, 200);
    assert_eq!(header(&a, "X-Remote-User"), Some("dave"));
    assert_eq!(header(&a, "X-Groups"), Some("staff"));
    assert_eq!(header(&a, "Variable-PROCESS_GROUP"), Some("blue"));
    let mut no_groups = Script {
        missing: vec![Function::GroupsForUser],
        ..Script::default()
    };
    let a = ask(Question::SubRequest, &v, &config(), &mut no_groups);
    assert_eq!(header(&a, "X-Groups"), None);
}

#[test]
fn a_raising_script_grants_nothing() {
    let basic_alice = basic("alice", "secret");
    let v = [("HTTP_AUTHORIZATION", basic_alice.as_str())];
    let mut s = Script {
        raises: vec![Function::CheckPassword],
        ..Script::default()
    };
    assert_eq!(ask(Question::Authorizer, &v, &config(), &mut s).status, 500);
    let mut s = Script {
        raises: vec![Function::AllowAccess],
        ..Script::default()
    };
    assert_eq!(ask(Question::Authorizer, &v, &config(), &mut s).status, 403);
    let c = AuthConfig {
        require_group: vec!["staff".into()],
        ..config()
    };
    let mut s = Script {
        raises: vec![Function::GroupsForUser],
        ..Script::default()
    };
    assert_eq!(ask(Question::Authorizer, &v, &c, &mut s).status, 403);
    assert_eq!(
        ask(Question::Authorize, &[("REMOTE_USER", "alice")], &c, &mut s).status,
        403
    );
}

#[test]
fn basic_is_checked_against_get_realm_hash_without_check_password() {
    let mut s = Script {
        missing: vec![Function::CheckPassword],
        ..Script::default()
    };
    let good = basic("alice", "secret");
    let bad = basic("alice", "wrong");
    let nobody = basic("zed", "secret");
    assert_eq!(
        ask(
            Question::Authorizer,
            &[("HTTP_AUTHORIZATION", &good)],
            &config(),
            &mut s
        )
        .status,
        200
    );
    assert_eq!(
        ask(
            Question::Authorizer,
            &[("HTTP_AUTHORIZATION", &bad)],
            &config(),
            &mut s
        )
        .status,
        401
    );
    assert_eq!(
        ask(
            Question::Authorizer,
            &[("HTTP_AUTHORIZATION", &nobody)],
            &config(),
            &mut s
        )
        .status,
        401
    );
}

#[test]
fn a_variable_that_would_inject_a_header_is_refused() {
    let mut s = Script::default();
    let a = ask(
        Question::Authenticate,
        &[("REMOTE_USER", "evil"), ("REMOTE_PASSWD", "pw")],
        &config(),
        &mut s,
    );
    assert_eq!(a.status, 500);
    assert!(a.headers.is_empty() || a.headers.iter().all(|(n, _)| n != "Variable-X"));
}

/// A client that knows alice's password answers a challenge.
fn digest_header(nonce: &str, nc: u32, uri: &str, algorithm: Algorithm, password: &str) -> String {
    let creds = DigestCredentials {
        username: "alice".into(),
        realm: REALM.into(),
        nonce: nonce.into(),
        uri: uri.into(),
        response: String::new(),
        algorithm,
        cnonce: "0a4f113b".into(),
        nc,
    };
    let response =
        digest::expected_response(&digest::realm_hash("alice", REALM, password), &creds, "GET");
    format!(
        "Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", qop=auth, nc={nc:08x}, cnonce=\"0a4f113b\", response=\"{response}\", algorithm={}",
        if algorithm == Algorithm::Md5 { "MD5" } else { "MD5-sess" }
    )
}

fn digest_ask(store: &NonceStore, now: u64, header: &str, uri: &str) -> Answer {
    let c = config();
    let ctx = Context {
        config: &c,
        scheme: Scheme::Digest,
        nonces: Some(store),
        now,
    };
    let v = vars(&[
        ("HTTP_AUTHORIZATION", header),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", uri),
    ]);
    answer(Question::SubRequest, &v, &ctx, &mut Script::default())
}

fn nonce_of(a: &Answer) -> String {
    let h = header(a, "WWW-Authenticate").unwrap();
    assert!(
        h.starts_with("Digest realm=\"site\", qop=\"auth\", algorithm=MD5, nonce=\""),
        "{h}"
    );
    h.split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn digest_round_trip_replay_and_stale() {
    let fd = nonce::create().unwrap();
    let store = NonceStore::open(&fd).unwrap();
    let first = digest_ask(&store, 1000, "", "/private/x");
    assert_eq!(first.status, 401);
    let n = nonce_of(&first);
    for algorithm in [Algorithm::Md5, Algorithm::Md5Sess] {
        let n = nonce_of(&digest_ask(&store, 1000, "", "/private/x"));
        let good = digest_header(&n, 1, "/private/x", algorithm, "secret");
        assert_eq!(
            digest_ask(&store, 1001, &good, "/private/x").status,
            200,
            "{algorithm:?}"
        );
        let replay = digest_ask(&store, 1001, &good, "/private/x");
        assert_eq!(replay.status, 401, "{algorithm:?} replay");
        // Refused; the client may retry on a fresh nonce without asking.
        assert!(header(&replay, "WWW-Authenticate")
            .unwrap()
            .ends_with("stale=true"));
        let next = digest_header(&n, 2, "/private/x", algorithm, "secret");
        assert_eq!(digest_ask(&store, 1001, &next, "/private/x").status, 200);
    }
    let wrong = digest_header(&n, 1, "/private/x", Algorithm::Md5, "guess");
    assert_eq!(digest_ask(&store, 1001, &wrong, "/private/x").status, 401);
    let late = digest_header(&n, 1, "/private/x", Algorithm::Md5, "secret");
    let stale = digest_ask(&store, 1000 + 301, &late, "/private/x");
    assert_eq!(stale.status, 401);
    assert!(header(&stale, "WWW-Authenticate")
        .unwrap()
        .ends_with("stale=true"));
    // A wrong password on an expired nonce is not invited to retry quietly.
    let late_wrong = digest_header(&n, 1, "/private/x", Algorithm::Md5, "guess");
    let a = digest_ask(&store, 1000 + 301, &late_wrong, "/private/x");
    assert!(!header(&a, "WWW-Authenticate").unwrap().contains("stale"));
    // Signed for another URI than the one asked for: 401 with a fresh
    // challenge (nginx auth_request makes any other status a 500).
    let elsewhere = digest_header(&n, 5, "/other", Algorithm::Md5, "secret");
    let a = digest_ask(&store, 1001, &elsewhere, "/private/x");
    assert_eq!(a.status, 401);
    assert!(header(&a, "WWW-Authenticate")
        .unwrap()
        .starts_with("Digest "));
    assert!(a.reason.contains("/other"), "{}", a.reason);
}
