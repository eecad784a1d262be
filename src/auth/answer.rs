//! The answer to each auth question (SPEC §6), from the request's
//! variables and the script's verdicts.

use super::basic::{self, BasicCredentials};
use super::digest::{self, DigestCredentials};
use super::nonce::{NonceCheck, NonceStore};
use super::{AuthConfig, Question, Scheme};
use crate::proto::CgiVars;
use subtle::ConstantTimeEq;

/// The functions an auth script may define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    CheckPassword,
    GetRealmHash,
    GroupsForUser,
    AllowAccess,
}

/// What `check_password` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordVerdict {
    /// True, a str (the canonical user name) or a dict (variables to pass
    /// back to the front end).
    Granted {
        user: Option<String>,
        variables: Vec<(String, String)>,
    },
    /// False.
    Denied,
    /// None: there is no such user. Answered exactly as a wrong password.
    NoSuchUser,
}

/// The script raised (the worker has logged the traceback) or returned
/// something of the wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptFailed;

/// The auth script as this module needs it. `environ` is the worker's
/// business: it binds it for the request before answering.
pub trait AuthScript {
    fn defines(&self, function: Function) -> bool;
    fn check_password(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<PasswordVerdict, ScriptFailed>;
    fn get_realm_hash(&mut self, user: &str, realm: &str) -> Result<Option<String>, ScriptFailed>;
    fn groups_for_user(&mut self, user: &str) -> Result<Vec<String>, ScriptFailed>;
    fn allow_access(&mut self, host: &str) -> Result<bool, ScriptFailed>;
}

/// The response: a status, headers, and why (for the log; never a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub reason: String,
}

impl Answer {
    /// `200 OK`, `401 Unauthorized`, …: the statuses answers have.
    pub fn status_line(&self) -> &'static str {
        match self.status {
            200 => "200 OK",
            400 => "400 Bad Request",
            401 => "401 Unauthorized",
            403 => "403 Forbidden",
            _ => "500 Internal Server Error",
        }
    }

    fn new(status: u16, reason: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            reason: reason.into(),
        }
    }
}

/// What the answer depends on besides the request.
pub struct Context<'a> {
    pub config: &'a AuthConfig,
    /// The challenge to send (the configured one, or the script's default).
    pub scheme: Scheme,
    pub nonces: Option<&'a NonceStore>,
    /// Seconds since the epoch.
    pub now: u64,
}

/// A user who proved who they are.
struct Authenticated {
    user: String,
    variables: Vec<(String, String)>,
}

pub fn answer(
    question: Question,
    vars: &CgiVars,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
) -> Answer {
    let answer = match question {
        Question::AccessCheck => check_host(vars, script, true).map(|()| ok(Vec::new())),
        Question::Authorize => authorize_apache(vars, ctx, script),
        Question::Authenticate => authenticate_apache(vars, ctx, script),
        Question::Authorizer | Question::SubRequest => check_host(vars, script, false)
            .and_then(|()| authenticate_and_authorize(question, vars, ctx, script)),
    };
    let answer = answer.unwrap_or_else(|denied| denied);
    match check_headers(&answer.headers) {
        Ok(()) => answer,
        Err(reason) => Answer::new(500, reason),
    }
}

fn ok(headers: Vec<(String, String)>) -> Answer {
    Answer {
        status: 200,
        headers,
        reason: String::new(),
    }
}

fn var(vars: &CgiVars, name: &[u8]) -> Option<String> {
    vars.get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `allow_access(environ, host)`: a host refused is 403. `required`: the
/// question is nothing else, so a script without the function refuses.
fn check_host(vars: &CgiVars, script: &mut dyn AuthScript, required: bool) -> Result<(), Answer> {
    if !script.defines(Function::AllowAccess) {
        return if required {
            Err(Answer::new(
                403,
                "access check asked, but no script defines allow_access",
            ))
        } else {
            Ok(())
        };
    }
    let host = var(vars, b"REMOTE_HOST")
        .filter(|h| !h.is_empty())
        .or_else(|| var(vars, b"REMOTE_ADDR"))
        .unwrap_or_default();
    match script.allow_access(&host) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Answer::new(
            403,
            format!("allow_access refused host {host}"),
        )),
        Err(ScriptFailed) => Err(Answer::new(403, "allow_access failed")),
    }
}

/// Apache authz: the user Apache authenticated, checked against the groups.
fn authorize_apache(
    vars: &CgiVars,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
) -> Result<Answer, Answer> {
    let user = var(vars, b"REMOTE_USER")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Answer::new(403, "authorization asked with no REMOTE_USER"))?;
    check_groups(vars, ctx, script, &user).map_err(|reason| Answer::new(403, reason))?;
    Ok(ok(Vec::new()))
}

/// Apache authn/authnz: the Basic credentials Apache decoded (else the
/// header, if it reached us); a group requirement is checked in the same
/// call, and unmet is 401 as the authnz type expects.
fn authenticate_apache(
    vars: &CgiVars,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
) -> Result<Answer, Answer> {
    let credentials = match (var(vars, b"REMOTE_USER"), var(vars, b"REMOTE_PASSWD")) {
        (Some(user), Some(password)) => Credentials::Basic(BasicCredentials { user, password }),
        _ => Credentials::from_header(vars),
    };
    let who = authenticate(credentials, vars, ctx, script)?;
    check_groups(vars, ctx, script, &who.user)
        .map_err(|reason| challenge(ctx, 401, reason, false))?;
    Ok(ok(variables(&who)))
}

/// A generic authorizer or an nginx subrequest: the header's credentials,
/// then the groups (403 when unmet).
fn authenticate_and_authorize(
    question: Question,
    vars: &CgiVars,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
) -> Result<Answer, Answer> {
    // A generic authorizer gets the credentials as REMOTE_USER and
    // REMOTE_PASSWD when the front end decoded them (Apache's authnz type
    // named in AuthBasicProvider sends no Authorization header and no
    // FCGI_APACHE_ROLE); otherwise from the header.
    let credentials = match (question, var(vars, b"REMOTE_PASSWD")) {
        (Question::Authorizer, Some(password)) => Credentials::Basic(BasicCredentials {
            user: var(vars, b"REMOTE_USER").unwrap_or_default(),
            password,
        }),
        _ => Credentials::from_header(vars),
    };
    let who = authenticate(credentials, vars, ctx, script)?;
    let groups =
        check_groups(vars, ctx, script, &who.user).map_err(|reason| Answer::new(403, reason))?;
    if question == Question::Authorizer {
        return Ok(ok(variables(&who)));
    }
    // nginx: headers that `auth_request_set` can pick.
    let mut headers = vec![("X-Remote-User".to_owned(), who.user.clone())];
    let groups = match groups {
        Some(g) => Some(g),
        None if script.defines(Function::GroupsForUser) => Some(
            script
                .groups_for_user(&who.user)
                .map_err(|ScriptFailed| Answer::new(500, "groups_for_user failed"))?,
        ),
        None => None,
    };
    if let Some(groups) = groups {
        headers.push(("X-Groups".to_owned(), groups.join(",")));
    }
    headers.extend(
        who.variables
            .iter()
            .map(|(k, v)| (format!("Variable-{k}"), v.clone())),
    );
    Ok(ok(headers))
}

/// `Variable-REMOTE_USER` and the script's variables, the only headers a
/// granting FastCGI authorizer may send (Apache copies any other header to
/// the client).
fn variables(who: &Authenticated) -> Vec<(String, String)> {
    std::iter::once(("REMOTE_USER", who.user.as_str()))
        .chain(
            who.variables
                .iter()
                .filter(|(k, _)| k != "REMOTE_USER")
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map(|(k, v)| (format!("Variable-{k}"), v.to_owned()))
        .collect()
}

/// The groups required of this request: the front end's
/// `WSGI_FPM_REQUIRE_GROUP`, else the pool's `auth-require-group`. `Ok` with
/// the user's groups when they were needed; `Err` with the reason to deny.
fn check_groups(
    vars: &CgiVars,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
    user: &str,
) -> Result<Option<Vec<String>>, String> {
    let from_request = var(vars, b"WSGI_FPM_REQUIRE_GROUP").map(|g| super::parse_groups(&g));
    let required = match from_request {
        Some(g) if !g.is_empty() => g,
        _ => ctx.config.require_group.clone(),
    };
    if required.is_empty() {
        return Ok(None);
    }
    if !script.defines(Function::GroupsForUser) {
        return Err(format!(
            "a group is required ({}) but the auth script has no groups_for_user",
            required.join(" ")
        ));
    }
    let groups = script
        .groups_for_user(user)
        .map_err(|ScriptFailed| "groups_for_user failed".to_owned())?;
    if groups.iter().any(|g| required.contains(g)) {
        Ok(Some(groups))
    } else {
        Err(format!(
            "user {user:?} is in none of the required groups ({})",
            required.join(" ")
        ))
    }
}

enum Credentials {
    None,
    Basic(BasicCredentials),
    Digest(DigestCredentials),
    Unusable(String),
}

impl Credentials {
    fn from_header(vars: &CgiVars) -> Credentials {
        let Some(header) = var(vars, b"HTTP_AUTHORIZATION") else {
            return Credentials::None;
        };
        let header = header.trim();
        let (scheme, rest) = header.split_once([' ', '\t']).unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("Basic") {
            match basic::parse(rest) {
                Some(c) => Credentials::Basic(c),
                None => Credentials::Unusable("malformed Basic credentials".into()),
            }
        } else if scheme.eq_ignore_ascii_case("Digest") {
            match digest::parse(rest) {
                Ok(c) => Credentials::Digest(c),
                Err(e) => Credentials::Unusable(e.to_string()),
            }
        } else {
            Credentials::Unusable(format!("unsupported scheme {scheme}"))
        }
    }
}

/// A 401 (or other) with the pool's challenge.
fn challenge(ctx: &Context<'_>, status: u16, reason: impl Into<String>, stale: bool) -> Answer {
    let realm = &ctx.config.realm;
    let value = match (ctx.scheme, ctx.nonces) {
        (Scheme::Digest, Some(store)) => digest::challenge(realm, &store.issue(ctx.now), stale),
        _ => basic::challenge(realm),
    };
    Answer {
        status,
        headers: vec![("WWW-Authenticate".to_owned(), value)],
        reason: reason.into(),
    }
}

/// Compares in constant time: a wrong password and an unknown user cost the
/// same.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Stands in for an unknown user's hash, so that the work done does not
/// tell an unknown user from a wrong password.
const NO_USER_HASH: &str = "00000000000000000000000000000000";

fn authenticate(
    credentials: Credentials,
    vars: &CgiVars,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
) -> Result<Authenticated, Answer> {
    match credentials {
        Credentials::None => Err(challenge(ctx, 401, "no credentials", false)),
        Credentials::Unusable(why) => Err(challenge(ctx, 401, why, false)),
        Credentials::Basic(c) => authenticate_basic(c, ctx, script),
        Credentials::Digest(c) => authenticate_digest(c, vars, ctx, script),
    }
}

fn authenticate_basic(
    c: BasicCredentials,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
) -> Result<Authenticated, Answer> {
    let verdict = if script.defines(Function::CheckPassword) {
        script
            .check_password(&c.user, &c.password)
            .map_err(|ScriptFailed| Answer::new(500, "check_password failed"))?
    } else if script.defines(Function::GetRealmHash) {
        let realm = &ctx.config.realm;
        let known = script
            .get_realm_hash(&c.user, realm)
            .map_err(|ScriptFailed| Answer::new(500, "get_realm_hash failed"))?;
        let given = digest::realm_hash(&c.user, realm, &c.password);
        let matches = same(
            &given,
            &known
                .as_deref()
                .unwrap_or(NO_USER_HASH)
                .to_ascii_lowercase(),
        );
        match (known, matches) {
            (None, _) => PasswordVerdict::NoSuchUser,
            (Some(_), true) => PasswordVerdict::Granted {
                user: None,
                variables: Vec::new(),
            },
            (Some(_), false) => PasswordVerdict::Denied,
        }
    } else {
        return Err(Answer::new(
            500,
            "Basic credentials, but the auth script defines neither check_password nor get_realm_hash",
        ));
    };
    granted(verdict, c.user, ctx)
}

fn granted(
    verdict: PasswordVerdict,
    given_user: String,
    ctx: &Context<'_>,
) -> Result<Authenticated, Answer> {
    match verdict {
        PasswordVerdict::Granted { user, variables } => Ok(Authenticated {
            user: user.unwrap_or(given_user),
            variables,
        }),
        PasswordVerdict::Denied => Err(challenge(
            ctx,
            401,
            format!("user {given_user:?}: wrong password"),
            false,
        )),
        PasswordVerdict::NoSuchUser => Err(challenge(
            ctx,
            401,
            format!("user {given_user:?}: no such user"),
            false,
        )),
    }
}

fn authenticate_digest(
    c: DigestCredentials,
    vars: &CgiVars,
    ctx: &Context<'_>,
    script: &mut dyn AuthScript,
) -> Result<Authenticated, Answer> {
    let realm = &ctx.config.realm;
    if !script.defines(Function::GetRealmHash) {
        return Err(challenge(
            ctx,
            401,
            "Digest credentials, but the auth script has no get_realm_hash",
            false,
        ));
    }
    if c.realm != *realm {
        return Err(challenge(
            ctx,
            401,
            format!("Digest for realm {:?}, not {realm:?}", c.realm),
            false,
        ));
    }
    // The URI the client signed must be the one it asked for (RFC 7616
    // §3.4.6); nginx's subrequest keeps the original in REQUEST_URI. Front-
    // end params only: an HTTP_* header is the client's to set.
    let asked = [&b"X_ORIGINAL_URI"[..], b"REQUEST_URI"]
        .iter()
        .filter_map(|n| vars.get(n))
        .any(|u| u == c.uri.as_bytes());
    if !asked {
        // 401 with a fresh challenge, not 400: nginx's auth_request turns
        // any status but 2xx/401/403 into a 500 for the client.
        return Err(challenge(
            ctx,
            401,
            format!("Digest uri {:?} is not the request's URI", c.uri),
            false,
        ));
    }
    let method = var(vars, b"X_ORIGINAL_METHOD")
        .or_else(|| var(vars, b"REQUEST_METHOD"))
        .unwrap_or_default();
    let known = script
        .get_realm_hash(&c.username, realm)
        .map_err(|ScriptFailed| Answer::new(500, "get_realm_hash failed"))?;
    let expected = digest::expected_response(known.as_deref().unwrap_or(NO_USER_HASH), &c, &method);
    let matches = same(&expected, &c.response);
    if known.is_none() || !matches {
        let verdict = if known.is_none() {
            PasswordVerdict::NoSuchUser
        } else {
            PasswordVerdict::Denied
        };
        return granted(verdict, c.username, ctx);
    }
    let Some(store) = ctx.nonces else {
        return Err(challenge(ctx, 401, "no nonce store in this worker", false));
    };
    match store.check(&c.nonce, c.nc, ctx.now, ctx.config.nonce_lifetime) {
        NonceCheck::Valid => Ok(Authenticated {
            user: c.username,
            variables: Vec::new(),
        }),
        NonceCheck::Stale => Err(challenge(ctx, 401, "stale nonce", true)),
        // Refused, but with a fresh nonce and stale=true: a browser sending
        // requests in parallel can deliver counts out of order, and should
        // retry quietly rather than ask its user again. A replayer gains a
        // challenge, nothing more.
        NonceCheck::Replayed => Err(challenge(
            ctx,
            401,
            format!("user {:?}: nonce count already used", c.username),
            true,
        )),
        NonceCheck::Forged => Err(challenge(ctx, 401, "nonce not issued here", false)),
    }
}

/// Header names must be tokens and values single lines: a script's
/// variable must not be able to inject a header.
fn check_headers(headers: &[(String, String)]) -> Result<(), String> {
    for (name, value) in headers {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name_ok {
            return Err(format!(
                "the auth script returned a bad variable name {name:?}"
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!(
                "the auth script returned a multi-line value for {name}"
            ));
        }
    }
    Ok(())
}
