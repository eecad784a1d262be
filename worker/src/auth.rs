//! The auth responder inside the worker (SPEC §6): loads the auth and
//! access scripts, and answers auth questions by calling their functions
//! with the environ an application would get. What to answer is decided by
//! `wsgi_fpm::auth`, which sees the script only as [`AuthScript`].

use crate::environ;
use crate::link::SharedLink;
use crate::load::{format_exception, module_name};
use crate::reply::{send_simple, text_head, Served};
use crate::request::Request;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyModule, PyString};
use std::os::fd::{FromRawFd, OwnedFd};
use tracing::{error, info, warn};
use wsgi_fpm::auth::answer::Context;
use wsgi_fpm::auth::nonce::NonceStore;
use wsgi_fpm::auth::{
    self, AuthConfig, AuthScript, Function, PasswordVerdict, Question, Scheme, ScriptFailed,
};
use wsgi_fpm::exchange::RequestMeta;
use wsgi_fpm::proto::{CgiVars, RequestHead, ResponseHead};
use wsgi_fpm::route::{self, EnvironRules};

const FUNCTIONS: [(&str, Function); 4] = [
    ("check_password", Function::CheckPassword),
    ("get_realm_hash", Function::GetRealmHash),
    ("groups_for_user", Function::GroupsForUser),
    ("allow_access", Function::AllowAccess),
];

/// The scripts' functions, as loaded.
#[derive(Default)]
struct Functions {
    check_password: Option<Py<PyAny>>,
    get_realm_hash: Option<Py<PyAny>>,
    groups_for_user: Option<Py<PyAny>>,
    /// The auth script's, else the access script's.
    allow_access: Option<Py<PyAny>>,
}

impl Functions {
    fn get(&self, f: Function) -> Option<&Py<PyAny>> {
        match f {
            Function::CheckPassword => self.check_password.as_ref(),
            Function::GetRealmHash => self.get_realm_hash.as_ref(),
            Function::GroupsForUser => self.groups_for_user.as_ref(),
            Function::AllowAccess => self.allow_access.as_ref(),
        }
    }
}

pub struct AuthContext {
    config: AuthConfig,
    scheme: Scheme,
    functions: Functions,
    /// The access script's allow_access, run before the application.
    access: Option<Py<PyAny>>,
    nonces: Option<NonceStore>,
    /// The environ rules of auth questions: the application's, without its
    /// mount (an nginx subrequest's REQUEST_URI is the protected URI).
    rules: EnvironRules,
}

fn load_functions<'py>(
    support: &Bound<'py, PyModule>,
    path: &std::path::Path,
) -> PyResult<Bound<'py, PyDict>> {
    let path = path.to_string_lossy();
    let names: Vec<&str> = FUNCTIONS.iter().map(|(n, _)| *n).collect();
    Ok(support
        .getattr("load_functions")?
        .call1((path.as_ref(), module_name(&path), names))?
        .cast_into::<PyDict>()?)
}

fn take(dict: &Bound<'_, PyDict>, name: &str) -> PyResult<Option<Py<PyAny>>> {
    Ok(dict.get_item(name)?.map(Bound::unbind))
}

/// Loads the pool's auth and access scripts; `None` when it has neither.
pub fn load(
    support: &Bound<'_, PyModule>,
    config: &AuthConfig,
    rules: &EnvironRules,
    nonce_fd: Option<i32>,
) -> PyResult<Option<AuthContext>> {
    if config.script.is_none() && config.access_script.is_none() {
        return Ok(None);
    }
    let mut functions = Functions::default();
    if let Some(path) = &config.script {
        let found = load_functions(support, path)?;
        functions.check_password = take(&found, "check_password")?;
        functions.get_realm_hash = take(&found, "get_realm_hash")?;
        functions.groups_for_user = take(&found, "groups_for_user")?;
        functions.allow_access = take(&found, "allow_access")?;
        if found.is_empty() {
            warn!(
                "the auth script {} defines none of check_password, get_realm_hash, groups_for_user, allow_access",
                path.display()
            );
        }
    }
    let mut access = None;
    if let Some(path) = &config.access_script {
        access = take(&load_functions(support, path)?, "allow_access")?;
        if access.is_none() {
            return Err(pyo3::exceptions::PyLookupError::new_err(format!(
                "the access script {} defines no allow_access(environ, host)",
                path.display()
            )));
        }
        if functions.allow_access.is_none() {
            functions.allow_access = access.as_ref().map(|f| f.clone_ref(support.py()));
        }
    }
    let scheme = config
        .scheme
        .unwrap_or(if functions.check_password.is_some() {
            Scheme::Basic
        } else {
            Scheme::Digest
        });
    let nonces = match nonce_fd {
        // SAFETY: the master passed this descriptor for this purpose only;
        // it is adopted once.
        Some(fd) => Some(
            NonceStore::open(&unsafe { OwnedFd::from_raw_fd(fd) }).map_err(|e| {
                pyo3::exceptions::PyOSError::new_err(format!("the Digest nonce table: {e}"))
            })?,
        ),
        None => None,
    };
    if scheme == Scheme::Digest && functions.get_realm_hash.is_none() && config.script.is_some() {
        warn!("auth-scheme is digest, but the auth script has no get_realm_hash: every Digest answer will fail");
    }
    Ok(Some(AuthContext {
        config: config.clone(),
        scheme,
        functions,
        access,
        nonces,
        rules: EnvironRules {
            mount: None,
            ..rules.clone()
        },
    }))
}

impl AuthContext {
    pub fn question(&self, head: &RequestHead) -> Option<Question> {
        auth::classify(head, &self.config)
    }

    /// Answers an auth question; the application is not involved.
    pub fn answer(
        &self,
        py: Python<'_>,
        shared: &environ::Shared,
        question: Question,
        req: &Request<'_>,
        link: &SharedLink,
    ) -> Served {
        let (request, meta) = (req.head, req.meta);
        let vars = &request.vars;
        let cgi = match route::build(vars, request.role, &self.rules) {
            Ok(c) => c,
            Err(e) => {
                warn!(request_id = %meta.request_id, "refusing auth request: {e}");
                let (head, body) = text_head(e.status());
                return send_simple(py, link, head, &body);
            }
        };
        let environ = (|| {
            let input = Bound::new(py, crate::input::Input::new(link.clone()))?.into_any();
            let errors = Bound::new(py, crate::errors::ErrorLog::new(meta.request_id))?.into_any();
            let wrapper = py.get_type::<crate::file_wrapper::FileWrapper>().into_any();
            environ::for_auth(py, shared, &cgi, req, input, errors, &wrapper)
        })();
        let answer = match environ {
            Ok(environ) => {
                let request_id = meta.request_id.to_string();
                let mut script = PyAuthScript {
                    environ,
                    functions: &self.functions,
                    request_id: &request_id,
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let context = Context {
                    config: &self.config,
                    scheme: self.scheme,
                    nonces: self.nonces.as_ref(),
                    now,
                };
                auth::answer(question, vars, &context, &mut script)
            }
            Err(err) => {
                error!(request_id = %meta.request_id, "cannot build the auth request's environ:\n{}", format_exception(py, &err));
                auth::Answer {
                    status: 500,
                    headers: Vec::new(),
                    reason: "no environ".into(),
                }
            }
        };
        if answer.status == 200 {
            tracing::debug!(request_id = %meta.request_id, "auth {question:?}: granted");
        } else {
            info!(request_id = %meta.request_id, "auth {question:?}: {}: {}", answer.status, wsgi_fpm::log::escape(&answer.reason));
        }
        let mut head = ResponseHead::new(answer.status_line());
        for (name, value) in &answer.headers {
            head.push_header(name.as_bytes(), value.as_bytes());
        }
        let body = match (answer.status, question) {
            // A granting authorizer sends Status and Variable-* only: Apache
            // copies any other header to the client.
            (200, Question::SubRequest) => {
                head.push_header(b"Content-Length", b"0");
                String::new()
            }
            (200, _) => String::new(),
            _ => {
                let (text, body) = text_head(answer.status_line());
                head.extend_headers(&text);
                body
            }
        };
        send_simple(py, link, head, &body)
    }

    /// The access script's verdict on an application request; a refusal
    /// (or a failure) is logged.
    pub fn access_allowed(
        &self,
        py: Python<'_>,
        environ: &Bound<'_, PyDict>,
        vars: &CgiVars,
        meta: &RequestMeta,
    ) -> bool {
        let Some(allow_access) = &self.access else {
            return true;
        };
        let host = host(vars);
        match allow_access.bind(py).call1((environ, host.as_str())) {
            Ok(verdict) if verdict.is_truthy().unwrap_or(false) => true,
            Ok(_) => {
                info!(request_id = %meta.request_id, "access script refused host {host}: 403");
                false
            }
            Err(err) => {
                error!(request_id = %meta.request_id, "the access script's allow_access raised; refusing:\n{}", format_exception(py, &err));
                false
            }
        }
    }
}

fn host(vars: &CgiVars) -> String {
    let get = |n: &[u8]| vars.get(n).filter(|v| !v.is_empty());
    String::from_utf8_lossy(get(b"REMOTE_HOST").or(get(b"REMOTE_ADDR")).unwrap_or(b"")).into_owned()
}

/// The script's functions bound to one request's environ.
struct PyAuthScript<'a, 'py> {
    environ: Bound<'py, PyDict>,
    functions: &'a Functions,
    request_id: &'a str,
}

impl<'py> PyAuthScript<'_, 'py> {
    fn call(
        &self,
        f: Function,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> Result<Bound<'py, PyAny>, ScriptFailed> {
        let py = self.environ.py();
        let name = FUNCTIONS
            .iter()
            .find(|(_, g)| *g == f)
            .map_or("?", |(n, _)| *n);
        let func = self.functions.get(f).ok_or(ScriptFailed)?;
        func.bind(py).call(args, None).map_err(|err| {
            error!(request_id = %self.request_id, "the auth script's {name} raised; denying:\n{}", format_exception(py, &err));
            ScriptFailed
        })
    }

    fn wrong_type(&self, f: &str, what: &Bound<'_, PyAny>, expected: &str) -> ScriptFailed {
        let type_name = what
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        error!(request_id = %self.request_id, "the auth script's {f} returned {type_name}, not {expected}; denying");
        ScriptFailed
    }
}

fn text(v: &Bound<'_, PyAny>) -> Option<String> {
    if v.is_instance_of::<PyString>() {
        return v.extract::<String>().ok();
    }
    v.cast::<PyBytes>()
        .ok()
        .map(|b| String::from_utf8_lossy(b.as_bytes()).into_owned())
}

impl AuthScript for PyAuthScript<'_, '_> {
    fn defines(&self, f: Function) -> bool {
        self.functions.get(f).is_some()
    }

    fn check_password(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<PasswordVerdict, ScriptFailed> {
        let environ = self.environ.clone();
        let r = self.call(Function::CheckPassword, (environ, user, password))?;
        if r.is_none() {
            return Ok(PasswordVerdict::NoSuchUser);
        }
        if let Ok(b) = r.extract::<bool>() {
            return Ok(if b {
                PasswordVerdict::Granted {
                    user: None,
                    variables: Vec::new(),
                }
            } else {
                PasswordVerdict::Denied
            });
        }
        if let Some(name) = text(&r) {
            if name.is_empty() {
                return Err(self.wrong_type("check_password", &r, "a non-empty user name"));
            }
            return Ok(PasswordVerdict::Granted {
                user: Some(name),
                variables: Vec::new(),
            });
        }
        if let Ok(dict) = r.cast::<PyDict>() {
            let mut variables = Vec::with_capacity(dict.len());
            for (k, v) in dict.iter() {
                let (Some(k), Some(v)) = (
                    text(&k),
                    text(&v).or_else(|| v.str().ok().map(|s| s.to_string())),
                ) else {
                    return Err(self.wrong_type("check_password", &k, "a dict of str"));
                };
                variables.push((k, v));
            }
            let user = variables
                .iter()
                .find(|(k, _)| k == "REMOTE_USER")
                .map(|(_, v)| v.clone());
            return Ok(PasswordVerdict::Granted { user, variables });
        }
        Err(self.wrong_type("check_password", &r, "True, False, None, a str or a dict"))
    }

    fn get_realm_hash(&mut self, user: &str, realm: &str) -> Result<Option<String>, ScriptFailed> {
        let environ = self.environ.clone();
        let r = self.call(Function::GetRealmHash, (environ, user, realm))?;
        if r.is_none() {
            return Ok(None);
        }
        text(&r)
            .map(Some)
            .ok_or_else(|| self.wrong_type("get_realm_hash", &r, "a hex str or None"))
    }

    fn groups_for_user(&mut self, user: &str) -> Result<Vec<String>, ScriptFailed> {
        let environ = self.environ.clone();
        let r = self.call(Function::GroupsForUser, (environ, user))?;
        if r.is_none() {
            return Ok(Vec::new());
        }
        // One name alone is a group, not a sequence of letters.
        if let Some(one) = text(&r) {
            return Ok(vec![one]);
        }
        let iter = r
            .try_iter()
            .map_err(|_| self.wrong_type("groups_for_user", &r, "a list of str"))?;
        let mut groups = Vec::new();
        for item in iter {
            let item = item.map_err(|_| self.wrong_type("groups_for_user", &r, "a list of str"))?;
            groups
                .push(text(&item).ok_or_else(|| self.wrong_type("groups_for_user", &item, "str"))?);
        }
        Ok(groups)
    }

    fn allow_access(&mut self, host: &str) -> Result<bool, ScriptFailed> {
        let environ = self.environ.clone();
        let r = self.call(Function::AllowAccess, (environ, host))?;
        r.is_truthy().map_err(|_| ScriptFailed)
    }
}
