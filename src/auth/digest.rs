//! HTTP Digest access authentication (RFC 7616) with MD5 and MD5-sess and
//! `qop=auth`: parsing the client's credentials, computing the response
//! they must carry, and the challenge. Nonces are [`super::nonce`]'s job.

use md5::{Digest as _, Md5};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
}

/// The parameters of an `Authorization: Digest …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: String,
    /// The nonce count, from its eight hex digits.
    pub nc: u32,
}

/// Why a Digest header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("malformed Digest parameters")]
    Malformed,
    #[error("Digest parameter `{0}` is missing")]
    Missing(&'static str),
    #[error("Digest algorithm `{0}` is not supported (MD5, MD5-sess)")]
    Algorithm(String),
    #[error("Digest qop `{0}` is not supported (auth)")]
    Qop(String),
    #[error("Digest nonce count `{0}` is not 8 hex digits")]
    NonceCount(String),
    #[error("Digest userhash is not supported")]
    UserHash,
}

/// Parses the part of the header after `Digest `: comma-separated
/// `name=token` or `name="quoted string"` pairs (RFC 7235 auth-param).
pub fn parse(params: &str) -> Result<DigestCredentials, DigestError> {
    let pairs = auth_params(params)?;
    let get = |name: &'static str| {
        pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let need = |name: &'static str| get(name).ok_or(DigestError::Missing(name));
    if get("userhash").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(DigestError::UserHash);
    }
    let algorithm = match get("algorithm") {
        None => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("MD5-sess") => Algorithm::Md5Sess,
        Some(a) => return Err(DigestError::Algorithm(a.to_owned())),
    };
    let qop = need("qop")?;
    if !qop.eq_ignore_ascii_case("auth") {
        return Err(DigestError::Qop(qop.to_owned()));
    }
    let nc_text = need("nc")?;
    // Exactly 8 hex digits (from_str_radix alone would take a `+` sign).
    let nc = (nc_text.len() == 8 && nc_text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(nc_text, 16).ok())
        .flatten()
        .ok_or_else(|| DigestError::NonceCount(nc_text.to_owned()))?;
    Ok(DigestCredentials {
        username: need("username")?.to_owned(),
        realm: need("realm")?.to_owned(),
        nonce: need("nonce")?.to_owned(),
        uri: need("uri")?.to_owned(),
        response: need("response")?.to_ascii_lowercase(),
        algorithm,
        cnonce: need("cnonce")?.to_owned(),
        nc,
    })
}

fn auth_params(mut s: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t', ',']);
        if s.is_empty() {
            return Ok(out);
        }
        let eq = s.find('=').ok_or(DigestError::Malformed)?;
        let name = s[..eq].trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(DigestError::Malformed);
        }
        s = s[eq + 1..].trim_start_matches([' ', '\t']);
        let value;
        if let Some(rest) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(DigestError::Malformed),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => v.push(chars.next().ok_or(DigestError::Malformed)?.1),
                    Some((_, c)) => v.push(c),
                }
            };
            value = v;
            s = &rest[end + 1..];
        } else {
            let end = s.find([',', ' ', '\t']).unwrap_or(s.len());
            value = s[..end].to_owned();
            s = &s[end..];
        }
        s = s.trim_start_matches([' ', '\t']);
        if !(s.is_empty() || s.starts_with(',')) {
            return Err(DigestError::Malformed);
        }
        out.push((name.to_owned(), value));
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub fn md5_hex(data: &str) -> String {
    hex(&Md5::digest(data.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `H(user:realm:password)`, what `get_realm_hash` returns.
pub fn realm_hash(user: &str, realm: &str, password: &str) -> String {
    md5_hex(&format!("{user}:{realm}:{password}"))
}

/// The `response` value a client knowing the password sends (RFC 7616
/// §3.4.1, qop=auth), given `H(user:realm:password)` and the method.
pub fn expected_response(realm_hash: &str, c: &DigestCredentials, method: &str) -> String {
    let ha1 = match c.algorithm {
        Algorithm::Md5 => realm_hash.to_ascii_lowercase(),
        Algorithm::Md5Sess => md5_hex(&format!(
            "{}:{}:{}",
            realm_hash.to_ascii_lowercase(),
            c.nonce,
            c.cnonce
        )),
    };
    let ha2 = md5_hex(&format!("{method}:{}", c.uri));
    md5_hex(&format!(
        "{ha1}:{}:{:08x}:{}:auth:{ha2}",
        c.nonce, c.nc, c.cnonce
    ))
}

/// The challenge sent with a 401; `stale` tells the client its nonce
/// expired, so it may retry with the new one without asking the user.
pub fn challenge(realm: &str, nonce: &str, stale: bool) -> String {
    format!(
        "Digest realm=\"{}\", qop=\"auth\", algorithm=MD5, nonce=\"{nonce}\"{}",
        super::quote(realm),
        if stale { ", stale=true" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1, the MD5 example.
    const RFC_HEADER: &str = r#"username="Mufasa",
       realm="http-auth@example.org",
       uri="/dir/index.html",
       algorithm=MD5,
       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
       nc=00000001,
       cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
       qop=auth,
       response="8ca523f5e9506fed4657c9700eebdbec",
       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;

    #[test]
    fn rfc_7616_md5_example_parses() {
        let c = parse(RFC_HEADER).unwrap();
        assert_eq!(c.username, "Mufasa");
        assert_eq!(c.realm, "http-auth@example.org");
        assert_eq!(c.uri, "/dir/index.html");
        assert_eq!(c.nc, 1);
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.cnonce, "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ");
    }

    #[test]
    fn rfc_7616_md5_example_response_is_reproduced() {
        let c = parse(RFC_HEADER).unwrap();
        let ha1 = realm_hash("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(expected_response(&ha1, &c, "GET"), c.response);
        assert_eq!(c.response, "8ca523f5e9506fed4657c9700eebdbec");
        // Another method or password gives another response.
        assert_ne!(expected_response(&ha1, &c, "POST"), c.response);
        let wrong = realm_hash("Mufasa", "http-auth@example.org", "circle of life");
        assert_ne!(expected_response(&wrong, &c, "GET"), c.response);
    }

    #[test]
    fn md5_sess_hashes_the_nonce_and_cnonce_into_ha1() {
        // RFC 2617 §3.2.2.2: HA1 = MD5(MD5(user:realm:pass):nonce:cnonce).
        let mut c = parse(RFC_HEADER).unwrap();
        c.algorithm = Algorithm::Md5Sess;
        let ha1 = realm_hash("Mufasa", "http-auth@example.org", "Circle of Life");
        let sess = md5_hex(&format!("{ha1}:{}:{}", c.nonce, c.cnonce));
        let ha2 = md5_hex("GET:/dir/index.html");
        let want = md5_hex(&format!(
            "{sess}:{}:00000001:{}:auth:{ha2}",
            c.nonce, c.cnonce
        ));
        assert_eq!(expected_response(&ha1, &c, "GET"), want);
        assert_ne!(want, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn md5_of_the_empty_string_is_the_known_value() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn quoted_strings_unescape_and_tokens_end_at_commas() {
        let c = parse(
            r#"username="a\"b", realm="r", nonce=n, uri="/x?a=1,2", response=ABC, qop="auth", nc=0000000a, cnonce="c", algorithm="MD5-sess""#,
        )
        .unwrap();
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.uri, "/x?a=1,2");
        assert_eq!(c.response, "abc");
        assert_eq!(c.nc, 10);
        assert_eq!(c.algorithm, Algorithm::Md5Sess);
    }

    #[test]
    fn what_cannot_be_verified_is_refused_with_a_reason() {
        let base = r#"username="u", realm="r", nonce="n", uri="/", response="x", cnonce="c""#;
        assert_eq!(parse(base), Err(DigestError::Missing("qop")));
        assert_eq!(
            parse(&format!("{base}, qop=auth-int, nc=00000001")),
            Err(DigestError::Qop("auth-int".into()))
        );
        assert_eq!(
            parse(&format!("{base}, qop=auth, nc=1")),
            Err(DigestError::NonceCount("1".into()))
        );
        assert_eq!(
            parse(&format!("{base}, qop=auth, nc=+0000001")),
            Err(DigestError::NonceCount("+0000001".into()))
        );
        assert_eq!(
            parse(&format!("{base}, qop=auth, nc=00000001, algorithm=SHA-256")),
            Err(DigestError::Algorithm("SHA-256".into()))
        );
        assert_eq!(
            parse(&format!("{base}, qop=auth, nc=00000001, userhash=true")),
            Err(DigestError::UserHash)
        );
        assert_eq!(
            parse(r#"username="unterminated"#),
            Err(DigestError::Malformed)
        );
        assert_eq!(parse("username"), Err(DigestError::Malformed));
        assert_eq!(parse(r#"a="x" b="y""#), Err(DigestError::Malformed));
    }

    #[test]
    fn challenge_carries_realm_qop_algorithm_nonce_and_stale() {
        assert_eq!(
            challenge("r", "N", false),
            "Digest realm=\"r\", qop=\"auth\", algorithm=MD5, nonce=\"N\""
        );
        assert!(challenge("r", "N", true).ends_with(", stale=true"));
    }
}
