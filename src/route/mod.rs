//! From what a front end sent to the CGI part of a WSGI `environ`: pure
//! rules, no Python and no I/O (SPEC §3; `shared/frontends/BEHAVIOUR.md` §4).
//!
//! - Repeated `HTTP_*` params are joined with `, ` (`HTTP_COOKIE` with `; `):
//!   nginx sends each repeated header as its own param, Apache and lighttpd
//!   join them. A repeated CGI meta-variable keeps its last value, except
//!   `CONTENT_LENGTH`, where two different values are a bad request.
//! - `HTTP_CONTENT_LENGTH` / `HTTP_CONTENT_TYPE` are dropped (PEP 3333);
//!   `HTTP_AUTHORIZATION` too unless `pass_authorization`.
//! - `SCRIPT_NAME` / `PATH_INFO` are recomputed, because every front end
//!   splits them differently: the path is `REQUEST_URI` up to `?`, with dot
//!   segments resolved, percent-decoded once. With a mount prefix,
//!   `SCRIPT_NAME` is the prefix and `PATH_INFO` the rest (a path outside the
//!   prefix is a 404); without one, `SCRIPT_NAME` is empty. Without
//!   `REQUEST_URI`, the front end's own `SCRIPT_NAME` + `PATH_INFO` are used.
//!   The front end's originals stay visible as `wsgi_fpm.orig_script_name`
//!   and `wsgi_fpm.orig_path_info` (added by the worker).

use crate::proto::CgiVars;
use std::borrow::Cow;
use std::collections::HashMap;

/// Per-pool settings that change the environ.
#[derive(Debug, Clone, Default)]
pub struct EnvironRules {
    pub mount: Option<String>,
    pub pass_authorization: bool,
    pub map_head_to_get: bool,
}

/// One CGI variable: borrowed from the front end's block, or built here
/// (a joined header, a recomputed path).
pub type Var<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The CGI variables an application sees, in a stable order, plus what the
/// worker needs to know about the request.
#[derive(Debug)]
pub struct CgiEnviron<'a> {
    pub vars: Vec<Var<'a>>,
    pub https: bool,
    /// The method as the client sent it: a HEAD request never gets a body
    /// back, even when the application saw GET.
    pub is_head: bool,
}

/// Why a request is refused before the application sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironError {
    #[error("CONTENT_LENGTH sent twice with different values ({first:?}, {second:?})")]
    ConflictingContentLength { first: String, second: String },
    #[error("path {path:?} climbs above the root with ..")]
    PathEscapesRoot { path: String },
    #[error("path {path:?} is outside the mount prefix {mount:?}")]
    OutsideMount { path: String, mount: String },
}

impl EnvironError {
    /// The status the refusal is answered with.
    pub fn status(&self) -> &'static str {
        match self {
            EnvironError::OutsideMount { .. } => "404 Not Found",
            _ => "400 Bad Request",
        }
    }
}

/// PEP 3333 and `wsgiref.validate` require these; front ends such as an
/// Apache authorizer omit some.
const DEFAULTS: [(&[u8], &[u8]); 5] = [
    (b"REQUEST_METHOD", b"GET"),
    (b"SERVER_NAME", b"localhost"),
    (b"SERVER_PORT", b"80"),
    (b"SERVER_PROTOCOL", b"HTTP/1.0"),
    (b"QUERY_STRING", b""),
];

pub fn build<'a>(vars: &'a CgiVars, rules: &EnvironRules) -> Result<CgiEnviron<'a>, EnvironError> {
    let mut out: Vec<Var<'a>> = Vec::with_capacity(vars.len() + 8);
    let mut index: HashMap<&'a [u8], usize> = HashMap::with_capacity(vars.len());
    for (name, value) in vars.iter() {
        if dropped(name, rules) {
            continue;
        }
        match index.get(name) {
            None => {
                index.insert(name, out.len());
                out.push((Cow::Borrowed(name), Cow::Borrowed(value)));
            }
            Some(&i) => {
                let slot = &mut out[i].1;
                if let Some(sep) = join_separator(name) {
                    let mut joined = slot.to_vec();
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(value);
                    *slot = Cow::Owned(joined);
                } else if name == b"CONTENT_LENGTH" && slot.as_ref() != value {
                    return Err(EnvironError::ConflictingContentLength {
                        first: String::from_utf8_lossy(slot).into_owned(),
                        second: String::from_utf8_lossy(value).into_owned(),
                    });
                } else {
                    *slot = Cow::Borrowed(value);
                }
            }
        }
    }
    for (name, value) in DEFAULTS {
        if !index.contains_key(name) {
            index.insert(name, out.len());
            out.push((Cow::Borrowed(name), Cow::Borrowed(value)));
        }
    }

    let (script_name, path_info) = split_path(vars, rules.mount.as_deref())?;
    out.push((Cow::Borrowed(b"SCRIPT_NAME"), Cow::Owned(script_name)));
    out.push((Cow::Borrowed(b"PATH_INFO"), Cow::Owned(path_info)));

    let method = vars.get(b"REQUEST_METHOD").unwrap_or(b"GET");
    let is_head = method == b"HEAD";
    if is_head && rules.map_head_to_get {
        if let Some(&i) = index.get(&b"REQUEST_METHOD"[..]) {
            out[i].1 = Cow::Borrowed(b"GET");
        }
    }
    let https = vars
        .get(b"HTTPS")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"on") || v == b"1")
        || vars
            .get(b"REQUEST_SCHEME")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"https"));
    Ok(CgiEnviron {
        vars: out,
        https,
        is_head,
    })
}

fn dropped(name: &[u8], rules: &EnvironRules) -> bool {
    match name {
        b"HTTP_CONTENT_LENGTH" | b"HTTP_CONTENT_TYPE" | b"SCRIPT_NAME" | b"PATH_INFO" => true,
        b"HTTP_AUTHORIZATION" => !rules.pass_authorization,
        // Apache mod_authnz_fcgi's Basic password: scripts get it as an
        // argument, nothing else ever sees it.
        b"REMOTE_PASSWD" => true,
        _ => false,
    }
}

fn join_separator(name: &[u8]) -> Option<&'static [u8]> {
    match name {
        b"HTTP_COOKIE" => Some(b"; "),
        n if n.starts_with(b"HTTP_") => Some(b", "),
        _ => None,
    }
}

/// `(SCRIPT_NAME, PATH_INFO)` as bytes (the worker decodes them as latin-1).
pub fn split_path(vars: &CgiVars, mount: Option<&str>) -> Result<(Vec<u8>, Vec<u8>), EnvironError> {
    let path = match vars.get(b"REQUEST_URI") {
        Some(uri) if !uri.is_empty() => {
            let raw = uri.split(|&b| b == b'?').next().unwrap_or(b"");
            let raw = strip_scheme_and_authority(raw);
            let resolved =
                remove_dot_segments(raw).ok_or_else(|| EnvironError::PathEscapesRoot {
                    path: String::from_utf8_lossy(raw).into_owned(),
                })?;
            percent_decode(&resolved)
        }
        _ => {
            let mut p = vars.get(b"SCRIPT_NAME").unwrap_or(b"").to_vec();
            p.extend_from_slice(vars.get(b"PATH_INFO").unwrap_or(b""));
            p
        }
    };
    let Some(mount) = mount else {
        return Ok((Vec::new(), path));
    };
    let m = mount.as_bytes();
    match path.strip_prefix(m) {
        Some(rest) if rest.is_empty() || rest.starts_with(b"/") => Ok((m.to_vec(), rest.to_vec())),
        _ => Err(EnvironError::OutsideMount {
            path: String::from_utf8_lossy(&path).into_owned(),
            mount: mount.to_owned(),
        }),
    }
}

/// An absolute-form request target (`http://host/path`) keeps only its path.
fn strip_scheme_and_authority(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"/") {
        return raw;
    }
    match raw.windows(3).position(|w| w == b"://") {
        Some(i) => {
            let after = &raw[i + 3..];
            match after.iter().position(|&b| b == b'/') {
                Some(j) => &after[j..],
                None => b"/",
            }
        }
        None => raw,
    }
}

/// RFC 3986 §5.2.4 on an absolute path; `None` when `..` would climb above
/// the root (SPEC: such a request is a 400, never a guess).
pub fn remove_dot_segments(path: &[u8]) -> Option<Vec<u8>> {
    if !path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..") {
        return Some(path.to_vec());
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let last = parts.len().saturating_sub(1);
    for (i, seg) in parts.iter().enumerate().skip(1) {
        match *seg {
            b"." => {
                if i == last {
                    segments.push(b"");
                }
            }
            b".." => {
                segments.pop()?;
                if i == last {
                    segments.push(b"");
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

/// Decodes `%XX` once; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
