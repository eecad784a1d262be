//! The auth responder (SPEC §6): which requests are auth questions, and
//! the answer to each, in every front end's convention. The script's four
//! functions are behind [`AuthScript`], so everything here is plain Rust;
//! the worker implements the trait with Python calls.

pub mod answer;
pub mod basic;
pub mod digest;
#[doc(hidden)]
pub mod fuzz;
pub mod nonce;

pub use answer::{answer, Answer, AuthScript, Function, PasswordVerdict, ScriptFailed};

use crate::proto::{RequestHead, Role};
use serde::{Deserialize, Serialize};

/// Which challenge a 401 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Basic,
    Digest,
}

/// A pool's auth options (SPEC §4 `--auth-*`, `--access-script`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuthConfig {
    /// Defines any of check_password, get_realm_hash, groups_for_user,
    /// allow_access; absolute.
    pub script: Option<std::path::PathBuf>,
    /// allow_access(environ, host) before every application request.
    pub access_script: Option<std::path::PathBuf>,
    /// Path prefix of nginx `auth_request` subrequests.
    pub mount: Option<String>,
    pub realm: String,
    /// None: Basic when the script has check_password, else Digest.
    pub scheme: Option<Scheme>,
    /// A user must be in one of these groups (empty: no requirement).
    pub require_group: Vec<String>,
    /// Seconds a Digest nonce stays fresh.
    pub nonce_lifetime: u64,
}

pub const DEFAULT_REALM: &str = "wsgi-fpm";
pub const DEFAULT_NONCE_LIFETIME: u64 = 300;

/// Which question a request asks (SPEC §6's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Apache `mod_authnz_fcgi` authn or authnz: `FCGI_APACHE_ROLE=AUTHENTICATOR`.
    Authenticate,
    /// Apache authz: `FCGI_APACHE_ROLE=AUTHORIZER`: is this user allowed?
    Authorize,
    /// `FCGI_APACHE_ROLE=ACCESS_CHECKER`: may this host come in?
    AccessCheck,
    /// Any other FastCGI authorizer (lighttpd): all of it in one call.
    Authorizer,
    /// nginx `auth_request`: a responder request under the auth mount or
    /// with `WSGI_FPM_AUTH=1`.
    SubRequest,
}

/// The question `head` asks, or `None` when it is for the application. A
/// FastCGI authorizer request goes to the application too when the pool
/// has neither an auth script nor an access script: the application may be
/// an authorizer itself.
pub fn classify(head: &RequestHead, config: &AuthConfig) -> Option<Question> {
    let vars = &head.vars;
    match head.role {
        Role::Authorizer => {
            if config.script.is_none() && config.access_script.is_none() {
                return None;
            }
            Some(match vars.get(b"FCGI_APACHE_ROLE") {
                Some(b"AUTHENTICATOR") => Question::Authenticate,
                Some(b"AUTHORIZER") => Question::Authorize,
                Some(b"ACCESS_CHECKER") => Question::AccessCheck,
                _ => Question::Authorizer,
            })
        }
        Role::Responder => {
            config.script.as_ref()?;
            let flagged = vars.get(b"WSGI_FPM_AUTH") == Some(b"1");
            let under_mount = config.mount.as_deref().is_some_and(|mount| {
                let path = request_path(vars);
                path.strip_prefix(mount.as_bytes())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
            });
            (flagged || under_mount).then_some(Question::SubRequest)
        }
    }
}

/// The path the front end routed on: nginx's `DOCUMENT_URI` (the auth
/// location, while `REQUEST_URI` stays the original request's), else
/// `REQUEST_URI` up to the query.
fn request_path(vars: &crate::proto::CgiVars) -> &[u8] {
    if let Some(doc) = vars.get(b"DOCUMENT_URI") {
        return doc;
    }
    let uri = vars.get(b"REQUEST_URI").unwrap_or(b"");
    uri.split(|&b| b == b'?').next().unwrap_or(b"")
}

/// Group names as configuration and `WSGI_FPM_REQUIRE_GROUP` write them:
/// separated by spaces or commas.
pub fn parse_groups(text: &str) -> Vec<String> {
    text.split([' ', ',', '\t'])
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A quoted-string's content (RFC 7230): `"` and `\` escaped.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests;
