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

use crate::proto::{CgiVars, Role};
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
    #[error("path {path:?} hides a dot segment in percent-encoding (%2e, %2f)")]
    EncodedDotSegment { path: String },
    #[error("path {path:?} is outside the mount prefix {mount:?}")]
    OutsideMount { path: String, mount: String },
    #[error("the request has no REQUEST_METHOD")]
    NoMethod,
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
/// Apache authorizer omit some. A responder request without
/// `REQUEST_METHOD` is refused instead (SPEC §2).
pub const DEFAULTS: [(&[u8], &[u8]); 5] = [
    (b"REQUEST_METHOD", b"GET"),
    (b"SERVER_NAME", b"localhost"),
    (b"SERVER_PORT", b"80"),
    (b"SERVER_PROTOCOL", b"HTTP/1.0"),
    (b"QUERY_STRING", b""),
];

/// What the environ does with a variable of this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Set it; a repeat replaces it (meta-variables keep their last value).
    Keep,
    /// Never shown to the application.
    Drop,
    /// A repeat is appended with this separator (`HTTP_*` headers).
    Join(&'static [u8]),
}

/// Prefixes of the environ keys wsgi-fpm sets itself.
const RESERVED_PREFIXES: [&[u8]; 3] = [b"wsgi.", b"wsgi_fpm.", b"mod_wsgi."];

/// The rule for one name (SPEC §3).
pub fn rule(name: &[u8], rules: &EnvironRules) -> NameRule {
    match name {
        b"HTTP_CONTENT_LENGTH" | b"HTTP_CONTENT_TYPE" | b"SCRIPT_NAME" | b"PATH_INFO" => {
            NameRule::Drop
        }
        b"HTTP_AUTHORIZATION" if !rules.pass_authorization => NameRule::Drop,
        // Apache mod_authnz_fcgi's Basic password: scripts get it as an
        // argument, nothing else ever sees it.
        b"REMOTE_PASSWD" => NameRule::Drop,
        b"HTTP_COOKIE" => NameRule::Join(b"; "),
        n if n.starts_with(b"HTTP_") => NameRule::Join(b", "),
        // The environ's own keys are wsgi-fpm's to set: a front end's
        // variable by such a name (only a config can send one) is ignored,
        // whichever way the environ is built.
        n if RESERVED_PREFIXES.iter().any(|p| n.starts_with(p)) => NameRule::Drop,
        _ => NameRule::Keep,
    }
}

/// What the environ gets beyond the front end's variables, found in one
/// pass over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived<'a> {
    pub script_name: Cow<'a, [u8]>,
    pub path_info: Cow<'a, [u8]>,
    pub https: bool,
    /// The client's method was HEAD (the body is never sent).
    pub is_head: bool,
    /// `--map-head-to-get`: the application sees GET.
    pub method_to_get: bool,
    /// Which of [`DEFAULTS`] the front end did not send.
    pub missing: [bool; DEFAULTS.len()],
    /// The front end's own split, kept visible as `wsgi_fpm.orig_*`.
    pub orig_script_name: Option<&'a [u8]>,
    pub orig_path_info: Option<&'a [u8]>,
    /// The front end's `X-Request-Start` header, as sent.
    pub request_start: Option<&'a [u8]>,
    /// `REQUEST_METHOD` and `REQUEST_URI` as sent (the scoreboard's).
    pub method: Option<&'a [u8]>,
    pub uri: Option<&'a [u8]>,
}

/// A name of 8 to 16 bytes as its first and last eight bytes: equal keys
/// and equal lengths are equal names (the two halves cover every byte).
/// Shorter names get no key (all zero); longer ones are told apart by the
/// caller's own check of the middle.
#[derive(Clone, Copy, PartialEq, Eq)]
struct NameKey(u64, u64);

impl NameKey {
    const fn of(name: &[u8]) -> NameKey {
        match (name.first_chunk::<8>(), name.last_chunk::<8>()) {
            (Some(head), Some(tail)) => {
                NameKey(u64::from_le_bytes(*head), u64::from_le_bytes(*tail))
            }
            _ => NameKey(0, 0),
        }
    }
}

/// One pass over the front end's variables: the path split, the scheme,
/// the method, the defaults to add, and the refusals (SPEC §2–3).
pub fn derive<'a>(
    vars: &'a CgiVars,
    role: Role,
    rules: &'a EnvironRules,
) -> Result<Derived<'a>, EnvironError> {
    let mut uri = None;
    let mut script = None;
    let mut path = None;
    let mut method = None;
    let mut https = false;
    let mut length: Option<&[u8]> = None;
    let mut request_start = None;
    let mut missing = [true; DEFAULTS.len()];
    for (name, value) in vars.iter() {
        // Dispatched on the length first, then on the name's first and
        // last eight bytes as two numbers: most names are none of these,
        // and none costs a byte-by-byte compare.
        let key = NameKey::of(name);
        match name.len() {
            5 if name == b"HTTPS" => https |= value.eq_ignore_ascii_case(b"on") || value == b"1",
            9 if key == const { NameKey::of(b"PATH_INFO") } => path = Some(value),
            11 if key == const { NameKey::of(b"REQUEST_URI") } => uri = Some(value),
            11 if key == const { NameKey::of(b"SCRIPT_NAME") } => script = Some(value),
            11 if key == const { NameKey::of(b"SERVER_NAME") } => missing[1] = false,
            11 if key == const { NameKey::of(b"SERVER_PORT") } => missing[2] = false,
            12 if key == const { NameKey::of(b"QUERY_STRING") } => missing[4] = false,
            14 if key == const { NameKey::of(b"REQUEST_METHOD") } => {
                method = Some(value);
                missing[0] = false;
            }
            14 if key == const { NameKey::of(b"REQUEST_SCHEME") } => {
                https |= value.eq_ignore_ascii_case(b"https")
            }
            // nginx's auth_request recipe sends CONTENT_LENGTH twice, the
            // stock one and an empty one: equal or empty repeats are fine,
            // two different numbers are a bad request.
            14 if key == const { NameKey::of(b"CONTENT_LENGTH") } && !value.is_empty() => {
                match length {
                    Some(first) if first != value => {
                        return Err(EnvironError::ConflictingContentLength {
                            first: String::from_utf8_lossy(first).into_owned(),
                            second: String::from_utf8_lossy(value).into_owned(),
                        })
                    }
                    _ => length = Some(value),
                }
            }
            15 if key == const { NameKey::of(b"SERVER_PROTOCOL") } => missing[3] = false,
            20 if name[8..12] == *b"EQUE"
                && key == const { NameKey::of(b"HTTP_X_REQUEST_START") } =>
            {
                request_start = Some(value)
            }
            _ => {}
        }
    }
    if method.is_none() && role == Role::Responder {
        return Err(EnvironError::NoMethod);
    }
    let (script_name, path_info) = split(uri, script, path, rules.mount.as_deref())?;
    let is_head = method == Some(b"HEAD");
    Ok(Derived {
        script_name,
        path_info,
        https,
        is_head,
        method_to_get: is_head && rules.map_head_to_get,
        missing,
        orig_script_name: script,
        orig_path_info: path,
        request_start,
        method,
        uri,
    })
}

/// The environ's CGI part as plain data: the reference form of the rules
/// (the worker builds the Python dict straight from [`rule`] and
/// [`derive`], and falls back to this when a header repeats). Repeated
/// headers are joined in linear time.
pub fn build<'a>(
    vars: &'a CgiVars,
    role: Role,
    rules: &'a EnvironRules,
) -> Result<CgiEnviron<'a>, EnvironError> {
    let derived = derive(vars, role, rules)?;
    let mut out: Vec<Var<'a>> = Vec::with_capacity(vars.len() + 8);
    let mut index: HashMap<&'a [u8], usize> = HashMap::with_capacity(vars.len());
    for (name, value) in vars.iter() {
        let sep = match rule(name, rules) {
            NameRule::Drop => continue,
            NameRule::Keep => None,
            NameRule::Join(sep) => Some(sep),
        };
        match (index.get(name), sep) {
            (None, _) => {
                index.insert(name, out.len());
                out.push((Cow::Borrowed(name), Cow::Borrowed(value)));
            }
            (Some(&i), Some(sep)) => {
                // Appended in place: a header repeated a thousand times
                // costs a thousand appends, not a thousand copies.
                let slot = out[i].1.to_mut();
                slot.extend_from_slice(sep);
                slot.extend_from_slice(value);
            }
            (Some(&i), None) => out[i].1 = Cow::Borrowed(value),
        }
    }
    for ((name, value), missing) in DEFAULTS.iter().zip(derived.missing) {
        if missing {
            out.push((Cow::Borrowed(*name), Cow::Borrowed(*value)));
        }
    }
    if derived.method_to_get {
        if let Some(&i) = index.get(&b"REQUEST_METHOD"[..]) {
            out[i].1 = Cow::Borrowed(b"GET");
        }
    }
    out.push((Cow::Borrowed(b"SCRIPT_NAME"), derived.script_name));
    out.push((Cow::Borrowed(b"PATH_INFO"), derived.path_info));
    Ok(CgiEnviron {
        vars: out,
        https: derived.https,
        is_head: derived.is_head,
    })
}

/// `(SCRIPT_NAME, PATH_INFO)` as bytes (the worker decodes them as latin-1).
pub fn split_path(vars: &CgiVars, mount: Option<&str>) -> Result<(Vec<u8>, Vec<u8>), EnvironError> {
    split(
        vars.get(b"REQUEST_URI"),
        vars.get(b"SCRIPT_NAME"),
        vars.get(b"PATH_INFO"),
        mount,
    )
    .map(|(s, p)| (s.into_owned(), p.into_owned()))
}

/// `(SCRIPT_NAME, PATH_INFO)`, each borrowed or built.
type Split<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The split, borrowing from the request wherever nothing had to change
/// (no dot segment, no `%`: the usual path costs no copy).
fn split<'a>(
    uri: Option<&'a [u8]>,
    script: Option<&'a [u8]>,
    path_info: Option<&'a [u8]>,
    mount: Option<&'a str>,
) -> Result<Split<'a>, EnvironError> {
    let path: Cow<'a, [u8]> = match uri {
        Some(uri) if !uri.is_empty() => {
            let end = uri.iter().position(|&b| b == b'?').unwrap_or(uri.len());
            let raw = strip_scheme_and_authority(&uri[..end]);
            let resolved =
                remove_dot_segments(raw).ok_or_else(|| EnvironError::PathEscapesRoot {
                    path: String::from_utf8_lossy(raw).into_owned(),
                })?;
            match resolved {
                Cow::Borrowed(r) => match percent_decode_cow(r) {
                    Cow::Borrowed(b) => Cow::Borrowed(b),
                    Cow::Owned(decoded) => checked_decoded(decoded, raw)?,
                },
                Cow::Owned(r) => checked_decoded(percent_decode(&r), raw)?,
            }
        }
        _ => match (script, path_info) {
            (Some(s), None) => Cow::Borrowed(s),
            (None, Some(p)) => Cow::Borrowed(p),
            (None, None) => Cow::Borrowed(&b""[..]),
            (Some(s), Some(p)) => {
                let mut joined = s.to_vec();
                joined.extend_from_slice(p);
                Cow::Owned(joined)
            }
        },
    };
    let Some(mount) = mount else {
        return Ok((Cow::Borrowed(&b""[..]), path));
    };
    let m = mount.as_bytes();
    let rest_ok = path
        .strip_prefix(m)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"));
    if !rest_ok {
        return Err(EnvironError::OutsideMount {
            path: String::from_utf8_lossy(&path).into_owned(),
            mount: mount.to_owned(),
        });
    }
    let rest = match path {
        Cow::Borrowed(p) => Cow::Borrowed(&p[m.len()..]),
        Cow::Owned(p) => Cow::Owned(p[m.len()..].to_vec()),
    };
    Ok((Cow::Borrowed(m), rest))
}

/// A path percent-decoding changed: refused if decoding revealed a dot
/// segment (`/a/%2e%2e/b`, `/public/..%2fadmin`) — the front end routed on
/// the encoded path, the application would act on another.
fn checked_decoded<'a>(decoded: Vec<u8>, raw: &[u8]) -> Result<Cow<'a, [u8]>, EnvironError> {
    if has_dot_segment(&decoded) {
        return Err(EnvironError::EncodedDotSegment {
            path: String::from_utf8_lossy(raw).into_owned(),
        });
    }
    Ok(Cow::Owned(decoded))
}

/// Whether a path has a `.` or `..` segment.
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|s| s == b"." || s == b"..")
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
pub fn remove_dot_segments(path: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !has_dot_segment(path) {
        return Some(Cow::Borrowed(path));
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
    Some(Cow::Owned(out))
}

/// [`percent_decode`] that borrows when there is no `%` at all.
pub fn percent_decode_cow(input: &[u8]) -> Cow<'_, [u8]> {
    if input.contains(&b'%') {
        Cow::Owned(percent_decode(input))
    } else {
        Cow::Borrowed(input)
    }
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
