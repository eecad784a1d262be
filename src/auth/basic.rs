//! HTTP Basic credentials (RFC 7617).

use base64::Engine;

/// A user name and password from an `Authorization: Basic …` header.
#[derive(PartialEq, Eq)]
pub struct BasicCredentials {
    pub user: String,
    pub password: String,
}

// Never print the password, even in a debug dump.
impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The credentials of a `Basic` header value (`token68` after the scheme),
/// `None` when it is not valid base64 or has no `:`. The text is UTF-8 (the
/// challenge says `charset="UTF-8"`); bytes that are not UTF-8 are taken as
/// Latin-1, which is what older clients send.
pub fn parse(token: &str) -> Option<BasicCredentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = match String::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    };
    let (user, password) = text.split_once(':')?;
    Some(BasicCredentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// The challenge sent with a 401.
pub fn challenge(realm: &str) -> String {
    format!("Basic realm=\"{}\", charset=\"UTF-8\"", super::quote(realm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7617_example_decodes() {
        // RFC 7617 §2: "Aladdin" / "open sesame".
        let c = parse("QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("Aladdin", "open sesame")
        );
    }

    #[test]
    fn the_password_may_hold_colons_and_the_user_may_be_empty() {
        let token = base64::engine::general_purpose::STANDARD.encode(":a:b");
        let c = parse(&token).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("", "a:b"));
    }

    #[test]
    fn utf8_and_latin1_user_names_decode() {
        let utf8 = base64::engine::general_purpose::STANDARD.encode("test:123\u{a3}");
        assert_eq!(parse(&utf8).unwrap().password, "123\u{a3}");
        let latin1 = base64::engine::general_purpose::STANDARD.encode(b"caf\xe9:x");
        assert_eq!(parse(&latin1).unwrap().user, "caf\u{e9}");
    }

    #[test]
    fn garbage_is_no_credentials() {
        assert!(parse("not base64!").is_none());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert!(parse(&no_colon).is_none());
    }

    #[test]
    fn the_debug_form_hides_the_password() {
        let c = parse("QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap();
        assert!(!format!("{c:?}").contains("sesame"));
    }

    #[test]
    fn challenge_names_the_realm_and_charset() {
        assert_eq!(
            challenge("my \"site\""),
            "Basic realm=\"my \\\"site\\\"\", charset=\"UTF-8\""
        );
    }
}
